"""The demo PKI behind ``make run`` / ``smgate pki demo``: every certificate the gateway's demo uses.

Layout under ``<state>/pki/``::

    sm2/    root.{pem,key}  intermediate.{pem,key}  ca_bundle.pem (root)  chain.pem (intermediate)
            server_sign.{pem,key}  server_enc.{pem,key}   (CN/SAN localhost, 127.0.0.1)
            client_sign.{pem,key}  client_enc.{pem,key}
    rsa/    ca.{pem,key}  server.{pem,key}  client.{pem,key}      (RSA-2048)
    ecdsa/  ca.{pem,key}  server.{pem,key}  client.{pem,key}      (ECDSA P-256)
    audit/  audit_sign.{pem,key}   (SM2 signing certificate from the SM2 intermediate)

:func:`ensure_demo_pki` is idempotent: a group whose files all exist, load, and stay valid for at
least another day is kept; otherwise the group (and anything issued from it) is issued afresh.
An exclusive lock file serialises concurrent callers.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certs.certificate import Certificate, load_pem_certificates
from certs.certset import SM2CertificateSet, load_sm2_certificate_set
from certs.errors import CertificateError
from certs.pki import (
    IssuedSM2,
    IssuedStandard,
    create_sm2_intermediate_ca,
    create_sm2_root_ca,
    create_standard_ca,
    issue_sm2_signing_certificate,
    issue_standard_certificate,
    issue_tlcp_pair,
    load_issued,
    load_sm2_issuer,
    save_issued,
    write_public_file,
)
from certs.profile import Subject
from certs.trust import TrustStore
from tls.crypto import CryptoError

ORGANIZATION = "smgate demo"
SERVER_DNS = ("localhost",)
SERVER_IPS = ("127.0.0.1",)
#: A certificate this close to expiry is re-issued rather than kept.
RENEW_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class CertKeyPaths:
    """A certificate PEM and its private key PEM."""

    cert: Path
    key: Path

    @classmethod
    def at(cls, directory: Path, name: str) -> CertKeyPaths:
        return cls(directory / f"{name}.pem", directory / f"{name}.key")


@dataclass(frozen=True)
class SM2DemoPaths:
    """The SM2 (TLCP) half of the demo PKI."""

    root: CertKeyPaths
    intermediate: CertKeyPaths
    server_sign: CertKeyPaths
    server_enc: CertKeyPaths
    client_sign: CertKeyPaths
    client_enc: CertKeyPaths
    ca_bundle: Path
    chain: Path

    @classmethod
    def at(cls, directory: Path) -> SM2DemoPaths:
        return cls(
            root=CertKeyPaths.at(directory, "root"),
            intermediate=CertKeyPaths.at(directory, "intermediate"),
            server_sign=CertKeyPaths.at(directory, "server_sign"),
            server_enc=CertKeyPaths.at(directory, "server_enc"),
            client_sign=CertKeyPaths.at(directory, "client_sign"),
            client_enc=CertKeyPaths.at(directory, "client_enc"),
            ca_bundle=directory / "ca_bundle.pem",
            chain=directory / "chain.pem",
        )

    def pairs(self) -> list[CertKeyPaths]:
        return [
            self.root,
            self.intermediate,
            self.server_sign,
            self.server_enc,
            self.client_sign,
            self.client_enc,
        ]


@dataclass(frozen=True)
class StandardDemoPaths:
    """One standard-TLS half of the demo PKI (RSA or ECDSA): a CA and a server and client certificate."""

    ca: CertKeyPaths
    server: CertKeyPaths
    client: CertKeyPaths

    @classmethod
    def at(cls, directory: Path) -> StandardDemoPaths:
        return cls(
            ca=CertKeyPaths.at(directory, "ca"),
            server=CertKeyPaths.at(directory, "server"),
            client=CertKeyPaths.at(directory, "client"),
        )

    @property
    def ca_bundle(self) -> Path:
        return self.ca.cert

    def pairs(self) -> list[CertKeyPaths]:
        return [self.ca, self.server, self.client]


@dataclass(frozen=True)
class DemoPKI:
    """Paths of every file in the demo PKI (see the module docstring for the layout)."""

    directory: Path
    sm2: SM2DemoPaths
    rsa: StandardDemoPaths
    ecdsa: StandardDemoPaths
    audit: CertKeyPaths

    @classmethod
    def at(cls, state_dir: Path) -> DemoPKI:
        directory = Path(state_dir) / "pki"
        return cls(
            directory=directory,
            sm2=SM2DemoPaths.at(directory / "sm2"),
            rsa=StandardDemoPaths.at(directory / "rsa"),
            ecdsa=StandardDemoPaths.at(directory / "ecdsa"),
            audit=CertKeyPaths.at(directory / "audit", "audit_sign"),
        )

    def server_certificate_set(self) -> SM2CertificateSet:
        """The TLCP server's double certificate with the intermediate as chain."""
        return self._certificate_set(self.sm2.server_sign, self.sm2.server_enc)

    def client_certificate_set(self) -> SM2CertificateSet:
        """The TLCP client's double certificate with the intermediate as chain."""
        return self._certificate_set(self.sm2.client_sign, self.sm2.client_enc)

    def _certificate_set(self, sign: CertKeyPaths, enc: CertKeyPaths) -> SM2CertificateSet:
        return load_sm2_certificate_set(sign.cert, sign.key, enc.cert, enc.key, chain=self.sm2.chain)

    def sm2_trust_store(self) -> TrustStore:
        return TrustStore.from_pem_file(self.sm2.ca_bundle)


def _usable(pairs: list[CertKeyPaths], now: datetime, extra: tuple[Path, ...] = ()) -> bool:
    """All files exist, every certificate loads with its matching key and stays valid past the renewal margin."""
    if not all(path.is_file() for path in extra):
        return False
    for pair in pairs:
        try:
            certificate = load_issued(pair.cert, pair.key).certificate
        except (CertificateError, CryptoError, ValueError, OSError):
            return False
        if not certificate.not_before <= now <= certificate.not_after - RENEW_MARGIN:
            return False
    return True


def _issue_sm2(paths: SM2DemoPaths, now: datetime) -> IssuedSM2:
    root = create_sm2_root_ca(Subject("smgate demo SM2 Root CA", ORGANIZATION, country="CN"), now=now)
    intermediate = create_sm2_intermediate_ca(
        Subject("smgate demo SM2 Intermediate CA", ORGANIZATION, country="CN"), root, now=now
    )
    server = issue_tlcp_pair(
        Subject("localhost", ORGANIZATION, "tlcp server", "CN"),
        intermediate,
        role="server",
        dns=SERVER_DNS,
        ips=SERVER_IPS,
        now=now,
    )
    client = issue_tlcp_pair(
        Subject("smgate demo client", ORGANIZATION, "tlcp client", "CN"), intermediate, role="client", now=now
    )
    save_issued(root, paths.root.cert, paths.root.key)
    save_issued(intermediate, paths.intermediate.cert, paths.intermediate.key)
    for pair, issued in (
        (paths.server_sign, server.sign),
        (paths.server_enc, server.enc),
        (paths.client_sign, client.sign),
        (paths.client_enc, client.enc),
    ):
        save_issued(issued, pair.cert, pair.key)
    write_public_file(paths.ca_bundle, root.certificate.to_pem())
    write_public_file(paths.chain, intermediate.certificate.to_pem())
    return intermediate


def _issue_standard(key_type: str, paths: StandardDemoPaths, now: datetime) -> None:
    label = key_type.upper()
    ca = create_standard_ca(key_type, Subject(f"smgate demo {label} CA", ORGANIZATION, country="CN"), now=now)
    server: IssuedStandard = issue_standard_certificate(
        key_type,
        Subject("localhost", ORGANIZATION, f"{key_type} server", "CN"),
        ca,
        role="server",
        dns=SERVER_DNS,
        ips=SERVER_IPS,
        now=now,
    )
    client = issue_standard_certificate(
        key_type,
        Subject("smgate demo client", ORGANIZATION, f"{key_type} client", "CN"),
        ca,
        role="client",
        now=now,
    )
    save_issued(ca, paths.ca.cert, paths.ca.key)
    save_issued(server, paths.server.cert, paths.server.key)
    save_issued(client, paths.client.cert, paths.client.key)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_demo_pki(state_dir: Path, *, now: datetime | None = None) -> DemoPKI:
    """Create (or keep) the demo PKI under ``state_dir/pki`` and return its paths."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    demo = DemoPKI.at(Path(state_dir))
    with _locked(demo.directory):
        sm2_fresh = False
        if not _usable(demo.sm2.pairs(), moment, (demo.sm2.ca_bundle, demo.sm2.chain)):
            _issue_sm2(demo.sm2, moment)
            sm2_fresh = True
        if sm2_fresh or not _usable([demo.audit], moment):
            intermediate = load_sm2_issuer(demo.sm2.intermediate.cert, demo.sm2.intermediate.key)
            audit = issue_sm2_signing_certificate(
                Subject("smgate audit signer", ORGANIZATION, "audit", "CN"), intermediate, now=moment
            )
            save_issued(audit, demo.audit.cert, demo.audit.key)
        for key_type, paths in (("rsa", demo.rsa), ("ecdsa", demo.ecdsa)):
            if not _usable(paths.pairs(), moment):
                _issue_standard(key_type, paths, moment)
    return demo


def demo_certificates(demo: DemoPKI) -> list[tuple[str, Certificate]]:
    """(label, certificate) for every certificate of the demo PKI, for listings."""
    entries: list[tuple[str, Path]] = [(f"sm2/{pair.cert.stem}", pair.cert) for pair in demo.sm2.pairs()]
    for family, paths in (("rsa", demo.rsa), ("ecdsa", demo.ecdsa)):
        entries += [(f"{family}/{pair.cert.stem}", pair.cert) for pair in paths.pairs()]
    entries.append(("audit/audit_sign", demo.audit.cert))
    return [(label, load_pem_certificates(path.read_bytes())[0]) for label, path in entries]
