"""Server names: which certificate set answers a ClientHello's SNI, for every secure transport alike.

The set without ``server_names`` is the default; a set whose ``server_names`` match the SNI (exact, or
``*.suffix`` for exactly one more label) is chosen instead. Filter chains match SNI the same way.
"""

from __future__ import annotations

from gateway.config import CertificateSet


def name_matches(pattern: str, name: str) -> bool:
    pattern, name = pattern.lower(), name.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and name.count(".") == pattern.count(".")
    return pattern == name


def select_certificate_set(
    sets: tuple[CertificateSet, ...], sni: str | None, want: str
) -> CertificateSet | None:
    """The set for ``sni`` having ``want`` ("sm2" or "tls") certificates, else the default such set."""
    usable = [s for s in sets if (s.has_sm2 if want == "sm2" else bool(s.tls_certificates))]
    if sni:
        for cert_set in usable:
            if any(name_matches(p, sni) for p in cert_set.server_names):
                return cert_set
    return next((s for s in usable if not s.server_names), usable[0] if usable else None)
