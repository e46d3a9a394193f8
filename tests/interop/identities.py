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

from certs import SM2CertificateSet, TrustStore, load_sm2_certificate_set
from tests.conftest import SHARED
from tests.interop.babassl import NTLSCertFiles
from tls.tlcp.config import ClientAuth, PeerProfile, SessionCache, TLCPConfiguration, TLCPSession
from tls.tlcp.suites import CipherSuite

TONGSUO_CERTS = SHARED / "tlcp" / "tongsuo" / "certs"


@dataclass(frozen=True)
class PKI:
    """One CA with a server and a client double certificate, as files and as loaded objects."""

    name: str
    ca_file: Path
    server_files: NTLSCertFiles
    client_files: NTLSCertFiles

    @functools.cached_property
    def trust_store(self) -> TrustStore:
        return TrustStore.from_pem_file(self.ca_file)

    @functools.cached_property
    def server_set(self) -> SM2CertificateSet:
        return _load(self.server_files)

    @functools.cached_property
    def client_set(self) -> SM2CertificateSet:
        return _load(self.client_files)


def _load(files: NTLSCertFiles) -> SM2CertificateSet:
    return load_sm2_certificate_set(files.sign_cert, files.sign_key, files.enc_cert, files.enc_key)


TONGSUO_PKI = PKI(
    name="tongsuo",
    ca_file=TONGSUO_CERTS / "ca.crt",
    server_files=NTLSCertFiles.from_directory(TONGSUO_CERTS, "server"),
    client_files=NTLSCertFiles.from_directory(TONGSUO_CERTS, "client"),
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
