"""Issue 10 in the TLS 1.3 engine: a peer identity exists only for a chain validated against trust anchors.

`HandshakeComplete.peer_verified` says whether the peer chain was validated against the configured
anchors; a resumed session carries the verification of its original handshake, re-checked against the
anchors configured now, and a server that requires client certificates resumes only verified clients.
"""

from __future__ import annotations

from typing import Any

from tls.tls13 import ClientAuth, HandshakeComplete, SessionTicketKeys, TLS13Connection, TLS13Session

from .conftest import client_config, client_credential, pump, server_config
from .test_connection import of_type, sent_alert


def run(client_settings: dict[str, Any], server_settings: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(client HandshakeComplete or None, server HandshakeComplete or None, client, server events)."""
    server = TLS13Connection(server_config(**server_settings))
    client = TLS13Connection(client_config(**client_settings))
    client.start_handshake()
    client_events, server_events = pump(client, server)
    client_done = of_type(client_events, HandshakeComplete)
    server_done = of_type(server_events, HandshakeComplete)
    client_result = (client_done[0] if client_done else None, client.session)
    return client_result, server_done[0] if server_done else None, client_events, server_events


def test_verified_client_chain_is_an_identity_in_full_and_resumed_handshakes() -> None:
    keys = SessionTicketKeys()
    server_settings = {"client_auth": ClientAuth.OPTIONAL, "ticket_keys": keys}
    (client_done, session), server_done, _, _ = run({"credential": client_credential()}, server_settings)
    assert server_done.peer_certificate is not None and server_done.peer_verified
    assert client_done.peer_verified and session.peer_verified
    (client_done, _), server_done, _, _ = run({"session": session}, server_settings)
    assert server_done.session_resumed and server_done.peer_verified
    assert server_done.peer_certificate is not None
    assert client_done.session_resumed and client_done.peer_verified


def test_unverified_client_chain_is_reported_but_never_verified() -> None:
    """A server that does not verify (verify_peer=False) still sees what was presented, as a claim."""
    keys = SessionTicketKeys()
    server_settings = {
        "client_auth": ClientAuth.OPTIONAL,
        "verify_peer": False,
        "trust_store": None,
        "ticket_keys": keys,
    }
    (_, session), server_done, _, _ = run({"credential": client_credential()}, server_settings)
    assert server_done.peer_certificate is not None and not server_done.peer_verified
    _, server_done, _, _ = run({"session": session}, server_settings)
    assert server_done.session_resumed and not server_done.peer_verified
    assert server_done.peer_certificate is not None


def test_required_client_auth_does_not_resume_an_unverified_client() -> None:
    keys = SessionTicketKeys()
    unverifying = {"client_auth": ClientAuth.OPTIONAL, "verify_peer": False, "trust_store": None}
    (_, session), _, _, _ = run({"credential": client_credential()}, {**unverifying, "ticket_keys": keys})
    required = {"client_auth": ClientAuth.REQUIRED, "ticket_keys": keys}
    # the same ticket keys, but this server requires a verified client: a full handshake re-authenticates
    _, server_done, _, _ = run({"session": session, "credential": client_credential()}, required)
    assert not server_done.session_resumed and server_done.peer_verified
    _, server_done, _, server_events = run({"session": session}, required)
    assert server_done is None and sent_alert(server_events) == "certificate_required"


def test_resumption_rechecks_the_client_chain_against_the_anchors_configured_now(smgate_pki: Any) -> None:
    """A reload that drops the client's trust anchor: its tickets no longer carry a verified identity."""
    keys = SessionTicketKeys()
    (_, session), server_done, _, _ = run(
        {"credential": client_credential()}, {"client_auth": ClientAuth.OPTIONAL, "ticket_keys": keys}
    )
    assert server_done.peer_verified
    reloaded = {"trust_store": smgate_pki.trust_store, "ticket_keys": keys}
    _, server_done, _, _ = run({"session": session}, {**reloaded, "client_auth": ClientAuth.OPTIONAL})
    assert server_done.session_resumed and not server_done.peer_verified
    _, server_done, _, server_events = run(
        {"session": session, "credential": client_credential()},
        {**reloaded, "client_auth": ClientAuth.REQUIRED},
    )
    assert server_done is None and sent_alert(server_events) == "unknown_ca"


def test_client_without_verification_reports_an_unverified_server() -> None:
    server = {"ticket_keys": SessionTicketKeys()}
    unverifying = {"verify_peer": False, "trust_store": None}
    (client_done, session), _, _, _ = run(unverifying, server)
    assert client_done.peer_certificate is not None and not client_done.peer_verified
    assert isinstance(session, TLS13Session) and not session.peer_verified
    (client_done, _), _, _, _ = run({**unverifying, "session": session}, server)
    assert client_done.session_resumed and not client_done.peer_verified
    # a verifying client does not resume a session whose server was never verified
    (client_done, _), _, _, _ = run({"session": session}, server)
    assert not client_done.session_resumed and client_done.peer_verified


def test_client_offers_a_session_only_while_its_server_still_verifies(smgate_pki: Any) -> None:
    server = {"ticket_keys": SessionTicketKeys()}
    (_, session), _, _, _ = run({}, server)
    assert session.peer_verified
    (client_done, _), _, _, _ = run({"session": session}, server)
    assert client_done.session_resumed and client_done.peer_verified
    # other anchors: the session is not offered, so the full handshake meets the unknown CA
    _, _, client_events, _ = run({"session": session, "trust_store": smgate_pki.trust_store}, server)
    assert sent_alert(client_events) == "unknown_ca"
