"""Matching an expected server identity against a certificate's subjectAltName (RFC 6125).

Rules kept here, shared by the SM2 and the standard (OpenSSL) verification paths:

- An IP address literal matches only ``iPAddress`` entries (compared as addresses, so ``::1`` and
  ``0:0::1`` agree); it never matches a DNS entry.
- A host name matches ``dNSName`` entries case-insensitively, ignoring one trailing dot.
- A wildcard is allowed only as the whole left-most label (``*.example.com``), matches exactly one
  non-empty label, and needs at least two labels after it (so ``*.com`` matches nothing).
- The subject CN is never consulted (RFC 6125 section 6.4.4 deprecates it; Go and browsers ignore it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from certs.errors import HostnameMismatch


def _normalise(name: str) -> str:
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") else name


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address when ``value`` is an IP literal (IPv6 may be in brackets), else None."""
    literal = value.strip()
    if literal.startswith("[") and literal.endswith("]"):
        literal = literal[1:-1]
    try:
        return ipaddress.ip_address(literal)
    except ValueError:
        return None


def dns_name_matches(pattern: str, hostname: str) -> bool:
    """True when one SAN dNSName ``pattern`` covers ``hostname`` under the rules in the module docstring."""
    pattern = _normalise(pattern)
    hostname = _normalise(hostname)
    if not pattern or not hostname:
        return False
    if "*" not in pattern:
        return pattern == hostname
    pattern_labels = pattern.split(".")
    host_labels = hostname.split(".")
    if pattern_labels[0] != "*" or any("*" in label for label in pattern_labels[1:]):
        return False
    if len(pattern_labels) < 3 or len(host_labels) != len(pattern_labels):
        return False
    if not host_labels[0] or any(not label for label in pattern_labels[1:]):
        return False
    return host_labels[1:] == pattern_labels[1:]


def match_hostname(
    hostname: str, san_dns: Iterable[str], san_ip: Iterable[str], *, subject: str = ""
) -> None:
    """Raise HostnameMismatch unless ``hostname`` (a name or an IP literal) is covered by the SANs."""
    address = parse_ip(hostname)
    if address is not None:
        for entry in san_ip:
            candidate = parse_ip(entry)
            if candidate is not None and candidate == address:
                return
        raise HostnameMismatch(f"IP address {address} is not in the subjectAltName of {subject!r}")
    if any(dns_name_matches(pattern, hostname) for pattern in san_dns):
        return
    raise HostnameMismatch(f"host name {hostname!r} is not in the subjectAltName of {subject!r}")
