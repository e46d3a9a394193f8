"""Standard-TLS test PKI for gateway tests (RSA/ECDSA CA, server and client certificates), via cryptography."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smgate test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@dataclass
class TestPKI:
    dir: Path
    ca: Path
    server_rsa: Path
    server_rsa_key: Path
    server_ecdsa: Path
    server_ecdsa_key: Path
    other: Path
    other_key: Path
    client: Path
    client_key: Path
    rogue_client: Path
    rogue_client_key: Path
    client_fingerprint: str


def _issue(issuer_key, issuer_name, subject_cn, key, *, ca=False, sans=(), client=False, days=30):
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(issuer_name or _name(subject_cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        entries: list[x509.GeneralName] = []
        for s in sans:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                entries.append(x509.DNSName(s))
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    if not ca:
        eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_test_pki(directory: Path) -> TestPKI:
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = rsa.generate_private_key(65537, 2048)
    ca = _issue(ca_key, None, "smgate test CA", ca_key, ca=True)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_ca = _issue(rogue_key, None, "rogue CA", rogue_key, ca=True)
    out: dict[str, Path] = {"ca": directory / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(pem))
    specs: list[tuple] = [
        ("server_rsa", rsa.generate_private_key(65537, 2048), ("localhost", "127.0.0.1"), False, ca_key, ca),
        (
            "server_ecdsa",
            ec.generate_private_key(ec.SECP256R1()),
            ("localhost", "127.0.0.1"),
            False,
            ca_key,
            ca,
        ),
        ("other", ec.generate_private_key(ec.SECP256R1()), ("other.test",), False, ca_key, ca),
        ("client", ec.generate_private_key(ec.SECP256R1()), ("client.test",), True, ca_key, ca),
        ("rogue_client", ec.generate_private_key(ec.SECP256R1()), ("rogue.test",), True, rogue_key, rogue_ca),
    ]
    fingerprint = ""
    for name, key, sans, client, issuer_key, issuer in specs:
        cert = _issue(issuer_key, issuer.subject, f"{name}.test", key, sans=sans, client=client)
        out[name] = directory / f"{name}.pem"
        out[name].write_bytes(cert.public_bytes(pem) + issuer.public_bytes(pem))
        out[f"{name}_key"] = directory / f"{name}.key"
        _write_key(out[f"{name}_key"], key)
        if name == "client":
            fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    return TestPKI(dir=directory, client_fingerprint=fingerprint, **out)
