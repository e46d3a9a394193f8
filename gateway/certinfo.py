"""Inventory of the certificate files a config references: subjects, expiry, change detection."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.config import CertificateSet, GatewayConfig


@dataclass(frozen=True)
class CertificateInfo:
    file: str
    role: str
    subject: str
    issuer: str
    not_after: dt.datetime
    serial: str
    der: bytes

    def audit_fields(self) -> dict[str, str]:
        """The audit schema's ``cert`` object."""
        from tls.crypto import sm3

        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "fingerprint_sm3": sm3(self.der).hex(),
            "not_after": self.not_after.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def _set_files(where: str, s: CertificateSet) -> list[tuple[str, Path]]:
    files = [
        (f"{where}.sign_cert", s.sign_cert),
        (f"{where}.enc_cert", s.enc_cert),
        (f"{where}.chain", s.chain),
    ]
    files += [(f"{where}.tls_certificates[{k}]", c.cert_chain) for k, c in enumerate(s.tls_certificates)]
    return [(role, path) for role, path in files if path is not None]


def certificate_files(config: GatewayConfig) -> list[tuple[str, Path]]:
    """(role, path) of every certificate file: listener sets and trust anchors, upstream transports."""
    out: list[tuple[str, Path]] = []
    for i, listener in enumerate(config.listeners):
        for j, s in enumerate(listener.tls.certificates):
            out += _set_files(f"listeners[{i}].tls.certificates[{j}]({s.name})", s)
        for key in ("trust_anchors", "sm2_trust_anchors"):
            path = getattr(listener.tls, key)
            if path is not None:
                out.append((f"listeners[{i}].tls.{key}", path))
    for c in config.clusters:
        t = c.transport_socket
        for key in ("trust_anchors", "client_cert_chain", "sign_cert", "enc_cert"):
            path = getattr(t, key)
            if path is not None:
                out.append((f"clusters[{c.name}].transport_socket.{key}", path))
    return out


def watched_files(config: GatewayConfig) -> list[Path]:
    """Every certificate and key file (a changed key must reload too)."""
    paths = [p for _, p in certificate_files(config)]
    for listener in config.listeners:
        for s in listener.tls.certificates:
            paths += [p for p in (s.sign_key, s.enc_key) if p is not None]
            paths += [c.private_key for c in s.tls_certificates]
    for c in config.clusters:
        paths += [
            p
            for p in (
                c.transport_socket.client_private_key,
                c.transport_socket.sign_key,
                c.transport_socket.enc_key,
                c.transport_socket.chain,
            )
            if p is not None
        ]
    return paths


def fingerprint_files(paths: list[Path]) -> dict[Path, tuple[int, int]]:
    out: dict[Path, tuple[int, int]] = {}
    for path in paths:
        try:
            st = os.stat(path)
            out[path] = (st.st_mtime_ns, st.st_size)
        except OSError:
            out[path] = (0, 0)
    return out


def inventory(config: GatewayConfig) -> list[CertificateInfo]:
    """Every certificate of :func:`certificate_files`, plus the audit checkpoint signing certificate."""
    infos: list[CertificateInfo] = []
    files = certificate_files(config)
    if config.audit is not None and config.audit.signing_cert is not None:
        files.append(("audit.signing_cert", Path(config.audit.signing_cert)))
    for role, path in files:
        try:
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            continue
        for cert in certs:
            infos.append(
                CertificateInfo(
                    file=str(path),
                    role=role,
                    subject=cert.subject.rfc4514_string(),
                    issuer=cert.issuer.rfc4514_string(),
                    not_after=cert.not_valid_after_utc,
                    serial=format(cert.serial_number, "x"),
                    der=cert.public_bytes(Encoding.DER),
                )
            )
    return infos
