"""Certificate material and smgate `TLCPConfiguration`s for loopback and interop tests.

Two PKIs: Tongsuo's (``shared/tlcp/tongsuo/certs``, made with Tongsuo's ``openssl``) and, when the
certs package provides it, smgate's own demo PKI.  Loading SM2 keys is not free, so each set is
loaded once per process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

from certs import Certificate, SM2CertificateSet, TrustStore, load_sm2_certificate_set
from certs.demo import CertKeyPaths, ensure_demo_pki
from tests.conftest import SHARED
from tests.interop.babassl import NTLSCertFiles
from tls.tlcp.config import ClientAuth, PeerProfile, SessionCache, TLCPConfiguration, TLCPSession
from tls.tlcp.suites import CipherSuite

TONGSUO_CERTS = SHARED / "tlcp" / "tongsuo" / "certs"


@dataclass(frozen=True)
class PKI:
    """One CA with a server and a client double certificate, as files and as loaded objects.

    ``ca_file`` holds the trust anchors; ``chain_file`` the intermediates each side sends after its
    two leaves.  BabaSSL completes its own chain from its CA file, so `babassl_ca_file` bundles both.
    """

    name: str
    ca_file: Path
    server_files: NTLSCertFiles
    client_files: NTLSCertFiles
    chain_file: Path | None = None
    babassl_ca_file: Path | None = None

    @functools.cached_property
    def trust_store(self) -> TrustStore:
        return TrustStore.from_pem_file(self.ca_file)

    @functools.cached_property
    def server_set(self) -> SM2CertificateSet:
        return self._load(self.server_files)

    @functools.cached_property
    def client_set(self) -> SM2CertificateSet:
        return self._load(self.client_files)

    @property
    def peer_ca_file(self) -> Path:
        """The CA file to give a BabaSSL peer."""
        return self.babassl_ca_file or self.ca_file

    def _load(self, files: NTLSCertFiles) -> SM2CertificateSet:
        return load_sm2_certificate_set(
            files.sign_cert, files.sign_key, files.enc_cert, files.enc_key, chain=self.chain_file
        )


TONGSUO_PKI = PKI(
    name="tongsuo",
    ca_file=TONGSUO_CERTS / "ca.crt",
    server_files=NTLSCertFiles.from_directory(TONGSUO_CERTS, "server"),
    client_files=NTLSCertFiles.from_directory(TONGSUO_CERTS, "client"),
)


def smgate_demo_pki(state_dir: Path) -> PKI:
    """smgate's own demo PKI (root -> intermediate -> leaves), issued under ``state_dir``."""
    demo = ensure_demo_pki(state_dir).sm2

    def files(sign: CertKeyPaths, enc: CertKeyPaths) -> NTLSCertFiles:
        return NTLSCertFiles(sign.cert, sign.key, enc.cert, enc.key)

    bundle = state_dir / "babassl_ca.pem"
    bundle.write_bytes(demo.ca_bundle.read_bytes() + demo.chain.read_bytes())
    return PKI(
        name="smgate",
        ca_file=demo.ca_bundle,
        server_files=files(demo.server_sign, demo.server_enc),
        client_files=files(demo.client_sign, demo.client_enc),
        chain_file=demo.chain,
        babassl_ca_file=bundle,
    )


ALL_SUITES = tuple(CipherSuite)


def is_ecdhe(suite: CipherSuite) -> bool:
    return suite in (CipherSuite.ECDHE_SM4_CBC_SM3, CipherSuite.ECDHE_SM4_GCM_SM3)


#: (suite, client auth) cells: ECDHE needs the client's encryption key, so it always has client auth.
SUITE_AUTH_MATRIX = [
    pytest.param(suite, client_auth, id=f"{suite.name}-{'clientauth' if client_auth else 'noauth'}")
    for suite in ALL_SUITES
    for client_auth in (False, True)
    if client_auth or not is_ecdhe(suite)
]


def server_configuration(
    pki: PKI,
    *,
    suites: tuple[CipherSuite, ...] = ALL_SUITES,
    client_auth: bool = False,
    session_cache: SessionCache | None = None,
    profile: PeerProfile = PeerProfile.STANDARD,
) -> TLCPConfiguration:
    return TLCPConfiguration(
        is_client=False,
        cipher_suites=suites,
        certificate_set=pki.server_set,
        client_auth=ClientAuth.REQUIRED if client_auth else ClientAuth.NONE,
        trust_store=pki.trust_store,
        session_cache=session_cache if session_cache is not None else SessionCache(),
        profile=profile,
    )


def client_configuration(
    pki: PKI,
    *,
    suites: tuple[CipherSuite, ...] = ALL_SUITES,
    client_cert: bool = False,
    session: TLCPSession | None = None,
    server_name: str | None = "localhost",
    profile: PeerProfile = PeerProfile.STANDARD,
) -> TLCPConfiguration:
    return TLCPConfiguration(
        is_client=True,
        cipher_suites=suites,
        certificate_set=pki.client_set if client_cert else None,
        trust_store=pki.trust_store,
        server_name=server_name,
        session=session,
        profile=profile,
    )


def openssl_oneline(certificate: Certificate) -> str:
    """The subject as OpenSSL's X509_NAME_oneline prints it (for comparing BabaSSL reports)."""
    return "/" + "/".join(reversed(certificate.subject.split(",")))
