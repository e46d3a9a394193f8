"""RFC 6125 host name matching (certs.hostname)."""

from __future__ import annotations

import pytest

from certs import HostnameMismatch, match_hostname
from certs.hostname import dns_name_matches


@pytest.mark.parametrize(
    ("pattern", "hostname", "expected"),
    [
        ("example.com", "example.com", True),
        ("Example.COM", "example.com.", True),
        ("*.example.com", "www.example.com", True),
        ("*.example.com", "WWW.Example.Com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("www.*.com", "www.example.com", False),
        ("w*.example.com", "www.example.com", False),
        ("*.com", "example.com", False),
        ("*", "localhost", False),
        ("", "", False),
        ("example.com", "example.org", False),
    ],
)
def test_dns_name_matches(pattern: str, hostname: str, expected: bool) -> None:
    assert dns_name_matches(pattern, hostname) is expected


def test_ip_literal_matches_only_ip_entries() -> None:
    match_hostname("127.0.0.1", [], ["127.0.0.1"])
    match_hostname("[::1]", [], ["0:0::1"])
    with pytest.raises(HostnameMismatch, match="IP address"):
        match_hostname("127.0.0.1", ["127.0.0.1"], [])


def test_name_does_not_match_ip_entries() -> None:
    with pytest.raises(HostnameMismatch, match="host name 'localhost'"):
        match_hostname("localhost", [], ["127.0.0.1"], subject="CN=localhost")
