"""Access control rules on the client certificate (gateway.access)."""

from __future__ import annotations

from gateway.access import is_allowed
from gateway.config import AccessControl
from gateway.identity import PeerCertificate, PeerIdentity

CERT = PeerCertificate(
    der=b"",
    subject="CN=alice,OU=payments,O=Bank",
    issuer="CN=Bank Client CA,O=Bank",
    san_dns=("alice.bank.example",),
    san_ip=("10.1.2.3",),
    fingerprint_sha256="a" * 64,
    fingerprint_sm3="b" * 64,
    serial=7,
)
ALICE = PeerIdentity(protocol="tlcp", version="TLCPv1.1", peer_chain=(CERT,))
ANONYMOUS = PeerIdentity(protocol="tls1.3", version="TLSv1.3")


def access(**rules) -> AccessControl:
    return AccessControl.model_validate(rules)


def test_allow_by_subject_san_issuer_and_fingerprints():
    assert is_allowed(access(allow=[{"subject": "OU=payments"}]), ALICE)
    assert is_allowed(access(allow=[{"san": r".*\.bank\.example"}]), ALICE)
    assert is_allowed(access(allow=[{"san": r"10\.1\.2\.3"}]), ALICE)
    assert is_allowed(access(allow=[{"issuer": "CN=Bank Client CA"}]), ALICE)
    assert is_allowed(access(allow=[{"fingerprint": "B" * 64}]), ALICE)  # SM3, case-insensitive
    assert is_allowed(access(allow=[{"fingerprint": ":".join(["aa"] * 32)}]), ALICE)  # SHA-256 with colons
    assert not is_allowed(access(allow=[{"subject": "OU=ops"}]), ALICE)
    assert not is_allowed(access(allow=[{"san": "bank"}]), ALICE)  # SAN patterns match whole names


def test_every_field_of_a_rule_must_match():
    assert not is_allowed(access(allow=[{"subject": "CN=alice", "issuer": "CN=Other CA"}]), ALICE)


def test_deny_wins_and_anonymous_clients():
    assert not is_allowed(access(allow=[{"subject": "CN=alice"}], deny=[{"san": "10\\.1\\..*"}]), ALICE)
    assert not is_allowed(access(allow=[{"subject": ".*"}]), ANONYMOUS)
    assert is_allowed(access(deny=[{"subject": "CN=mallory"}]), ANONYMOUS)
    assert is_allowed(access(allow=[{"authenticated": False}]), ANONYMOUS)
    assert not is_allowed(access(allow=[{"authenticated": True}]), ANONYMOUS)
    assert is_allowed(None, ANONYMOUS)
