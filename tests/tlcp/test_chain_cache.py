"""`VerifiedChains`: a chain verified once skips path building later, but every check still holds.

The cache may only remember what does not depend on the time: each test first makes sure the chain
is cached, then shows that the validity period, the trust anchors, the role and the host name are
still enforced, through the cache and through a whole handshake.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from certs import (
    CertificateExpired,
    CertificateNotYetValid,
    HostnameMismatch,
    KeyUsageMismatch,
    Role,
    UnknownCA,
)
from tls.tlcp import ClientAuth, TLCPConfiguration, TLCPConnection
from tls.tlcp import handshake as handshake_module
from tls.tlcp.events import AlertSent, HandshakeComplete
from tls.tlcp.handshake import VerifiedChains

from .recordings import REPLAY_TIME, all_recordings

RECORDING = next(r for r in all_recordings() if r.name == "ECDHE-SM2-SM4-GCM-SM3-clientauth")
OTHER = next(r for r in all_recordings() if r.name == "TLS_ECC_SM4_CBC_SM3-clientauth")
CLIENT = RECORDING.client_certificate_set
SERVER = RECORDING.server_certificate_set
TRUST = RECORDING.trust_store


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Role]:
    """Roles of the full verifications run (the cache's misses)."""
    seen: list[Role] = []
    original = handshake_module.verify_sm2_chain

    def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["role"])
        return original(*args, **kwargs)

    monkeypatch.setattr(handshake_module, "verify_sm2_chain", counting)
    return seen


def test_second_verification_is_a_cache_hit(calls: list[Role]) -> None:
    chains = VerifiedChains()
    for _ in range(3):
        chains.verify(CLIENT.sign_cert, CLIENT.chain, TRUST, Role.CLIENT_SIGN, REPLAY_TIME)
    assert calls == [Role.CLIENT_SIGN]
    assert len(chains) == 1


def test_validity_is_checked_on_every_hit() -> None:
    chains = VerifiedChains()
    chains.verify(CLIENT.sign_cert, CLIENT.chain, TRUST, Role.CLIENT_SIGN, REPLAY_TIME)
    after = CLIENT.sign_cert.not_after + timedelta(seconds=1)
    with pytest.raises(CertificateExpired):
        chains.verify(CLIENT.sign_cert, CLIENT.chain, TRUST, Role.CLIENT_SIGN, after)
    before = CLIENT.sign_cert.not_before - timedelta(seconds=1)
    with pytest.raises(CertificateNotYetValid):
        chains.verify(CLIENT.sign_cert, CLIENT.chain, TRUST, Role.CLIENT_SIGN, before)
    chains.verify(CLIENT.sign_cert, CLIENT.chain, TRUST, Role.CLIENT_SIGN, CLIENT.sign_cert.not_after)


def test_other_anchors_role_or_host_name_verify_again(calls: list[Role]) -> None:
    chains = VerifiedChains()
    chains.verify(SERVER.sign_cert, SERVER.chain, TRUST, Role.SERVER_SIGN, REPLAY_TIME, "localhost")
    with pytest.raises(UnknownCA):
        chains.verify(SERVER.sign_cert, SERVER.chain, OTHER.trust_store, Role.SERVER_SIGN, REPLAY_TIME)
    with pytest.raises(KeyUsageMismatch):
        chains.verify(SERVER.sign_cert, SERVER.chain, TRUST, Role.SERVER_ENC, REPLAY_TIME, "localhost")
    with pytest.raises(HostnameMismatch):
        chains.verify(SERVER.sign_cert, SERVER.chain, TRUST, Role.SERVER_SIGN, REPLAY_TIME, "example.com")
    assert calls == [Role.SERVER_SIGN, Role.SERVER_SIGN, Role.SERVER_ENC, Role.SERVER_SIGN]


def test_bounded() -> None:
    chains = VerifiedChains(max_size=2)
    chains.verify(CLIENT.sign_cert, CLIENT.chain, TRUST, Role.CLIENT_SIGN, REPLAY_TIME)
    chains.verify(CLIENT.enc_cert, CLIENT.chain, TRUST, Role.CLIENT_ENC, REPLAY_TIME)
    chains.verify(SERVER.sign_cert, SERVER.chain, TRUST, Role.SERVER_SIGN, REPLAY_TIME)
    assert len(chains) == 2


def _handshake(now: Callable[[], Any]) -> list[object]:
    server = TLCPConnection(
        TLCPConfiguration(
            is_client=False,
            certificate_set=SERVER,
            trust_store=TRUST,
            client_auth=ClientAuth.REQUIRED,
            now=now,
        )
    )
    client = TLCPConnection(
        TLCPConfiguration(
            is_client=True,
            certificate_set=CLIENT,
            trust_store=TRUST,
            server_name="localhost",
            now=lambda: REPLAY_TIME,
        )
    )
    client.start_handshake()
    server_events: list[object] = []
    for _ in range(10):
        to_server, to_client = client.data_to_send(), server.data_to_send()
        if not to_server and not to_client:
            break
        server_events += server.receive_data(to_server) if to_server else []
        if to_client:
            client.receive_data(to_client)
    return server_events


def test_server_rejects_a_client_chain_it_accepted_before_once_it_expired() -> None:
    assert any(isinstance(e, HandshakeComplete) for e in _handshake(lambda: REPLAY_TIME))
    expired = CLIENT.sign_cert.not_after + timedelta(days=1)
    events = _handshake(lambda: expired)
    assert [e.name for e in events if isinstance(e, AlertSent)] == ["certificate_expired"]
