"""Human-readable certificate summaries, as printed by ``smgate pki show``."""

from __future__ import annotations

from datetime import datetime

from certs.certificate import Certificate


def _colon_hex(hex_digest: str) -> str:
    return ":".join(hex_digest[index : index + 2] for index in range(0, len(hex_digest), 2)).upper()


def _status(certificate: Certificate, now: datetime) -> str:
    if now < certificate.not_before:
        return "not yet valid"
    if now > certificate.not_after:
        return "expired"
    remaining = (certificate.not_after - now).days
    return f"valid, {remaining} days left"


def describe_certificate(certificate: Certificate, now: datetime) -> str:
    """A multi-line summary: names, SANs, validity, key, usages and SM3/SHA-256 fingerprints."""
    if certificate.is_ca:
        constraint = "unlimited" if certificate.path_len is None else str(certificate.path_len)
        ca = f"yes (pathLen {constraint})"
    else:
        ca = "no"
    san = [f"DNS:{name}" for name in certificate.san_dns] + [
        f"IP:{address}" for address in certificate.san_ip
    ]
    rows = [
        ("Subject", certificate.subject),
        ("Issuer", certificate.issuer),
        ("Serial", f"{certificate.serial:#x}"),
        ("Not before", certificate.not_before.strftime("%Y-%m-%d %H:%M:%S UTC")),
        (
            "Not after",
            f"{certificate.not_after.strftime('%Y-%m-%d %H:%M:%S UTC')} ({_status(certificate, now)})",
        ),
        ("Key type", certificate.key_type),
        ("Signature", certificate.signature_algorithm),
        ("CA", ca),
        ("Key usage", ", ".join(sorted(certificate.key_usage)) if certificate.has_key_usage else "(none)"),
        (
            "Ext key usage",
            ", ".join(sorted(certificate.ext_key_usage)) if certificate.has_ext_key_usage else "(none)",
        ),
        ("SAN", ", ".join(san) if san else "(none)"),
        ("SM3", _colon_hex(certificate.fingerprint_sm3())),
        ("SHA-256", _colon_hex(certificate.fingerprint_sha256())),
    ]
    width = max(len(label) for label, _ in rows) + 1
    return "\n".join(f"{label + ':':<{width}} {value}" for label, value in rows)
