"""A CertificateRequest inside a resumed (PSK) handshake, as GmSSL 3.3's tls13_server sends one.

RFC 8446 4.3.2 forbids it; the client refuses it with unexpected_message unless
``accept_certificate_request_in_psk`` is set, and then answers as GmSSL expects: Certificate and
CertificateVerify (or an empty Certificate without a credential) before Finished.

The GmSSL-shaped server flight is our own server engine with one message put back in: on a
resumption, the CertificateRequest right after EncryptedExtensions (where GmSSL's
``tls13_do_server_handshake`` sends it), and the server then expects the client's certificate, so
the client's answer is checked by real certificate and signature verification.
"""

from __future__ import annotations

from typing import Any

from tls.tls13 import AlertSent, ClientAuth, HandshakeComplete, SessionTicketKeys, TLS13Connection
from tls.tls13.messages import HandshakeType
from tls.tls13.server import ServerHandshake, ServerState

from .conftest import client_config, client_credential, pump, server_config


def gmssl_shaped_server(**settings: Any) -> TLS13Connection:
    """A server whose resumed flight carries a CertificateRequest after EncryptedExtensions."""
    server = TLS13Connection(server_config(**settings))
    handshake = server._handshake
    assert isinstance(handshake, ServerHandshake)
    send_flight = handshake._send_server_flight
    send_encoded = handshake.send_encoded

    def send_with_request(data: bytes) -> None:
        send_encoded(data)
        if data[0] == HandshakeType.ENCRYPTED_EXTENSIONS:
            send_encoded(handshake._certificate_request())

    def flight() -> None:
        if handshake.resumed_state is None:
            send_flight()
            return
        handshake.send_encoded = send_with_request  # type: ignore[method-assign]
        try:
            send_flight()
        finally:
            handshake.send_encoded = send_encoded  # type: ignore[method-assign]
        handshake.state = ServerState.EXPECT_CLIENT_CERTIFICATE

    handshake._send_server_flight = flight  # type: ignore[method-assign]
    return server


def run(client_settings: dict[str, Any], server_settings: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    client = TLS13Connection(client_config(**client_settings))
    server = gmssl_shaped_server(**server_settings)
    client.start_handshake()
    return pump(client, server)


def first_session(server_settings: dict[str, Any]) -> Any:
    client = TLS13Connection(client_config(credential=client_credential()))
    server = TLS13Connection(server_config(**server_settings))
    client.start_handshake()
    pump(client, server)
    assert client.session is not None
    return client.session


def done(events: list[Any]) -> HandshakeComplete | None:
    completed = [event for event in events if isinstance(event, HandshakeComplete)]
    return completed[0] if completed else None


def alert(events: list[Any]) -> str | None:
    sent = [event for event in events if isinstance(event, AlertSent)]
    return sent[0].name if sent else None


def server_settings(client_auth: ClientAuth) -> dict[str, Any]:
    return {"client_auth": client_auth, "ticket_keys": SessionTicketKeys()}


def test_refused_by_default_as_rfc_8446_says() -> None:
    settings = server_settings(ClientAuth.REQUIRED)
    session = first_session(settings)
    client_events, _ = run({"credential": client_credential(), "session": session}, settings)
    assert done(client_events) is None
    assert alert(client_events) == "unexpected_message"


def test_tolerated_request_is_answered_with_certificate_and_signature() -> None:
    settings = server_settings(ClientAuth.REQUIRED)
    session = first_session(settings)
    client_events, server_events = run(
        {"credential": client_credential(), "session": session, "accept_certificate_request_in_psk": True},
        settings,
    )
    client_done, server_done = done(client_events), done(server_events)
    assert client_done is not None and client_done.session_resumed
    assert client_done.certificate_requested  # what the gateway logs the tolerance by
    assert server_done is not None and server_done.session_resumed
    assert server_done.signature_scheme is not None  # the server verified our CertificateVerify
    assert server_done.peer_certificate is not None
    assert server_done.peer_certificate.der == client_credential().certificate.der


def test_tolerated_request_without_a_credential_gets_an_empty_certificate() -> None:
    settings = server_settings(ClientAuth.OPTIONAL)
    session = first_session(settings)
    client_events, server_events = run(
        {"session": session, "accept_certificate_request_in_psk": True}, settings
    )
    assert done(client_events) is not None
    server_done = done(server_events)
    assert server_done is not None and server_done.session_resumed and server_done.signature_scheme is None


def test_a_server_requiring_the_certificate_refuses_the_empty_answer() -> None:
    settings = server_settings(ClientAuth.REQUIRED)
    session = first_session(settings)
    _, server_events = run({"session": session, "accept_certificate_request_in_psk": True}, settings)
    assert done(server_events) is None
    assert alert(server_events) == "certificate_required"


def test_tolerance_changes_nothing_when_no_request_comes() -> None:
    settings = server_settings(ClientAuth.NONE)
    session = first_session(settings)
    client = TLS13Connection(
        client_config(session=session, accept_certificate_request_in_psk=True, credential=client_credential())
    )
    server = TLS13Connection(server_config(**settings))
    client.start_handshake()
    client_events, server_events = pump(client, server)
    client_done, server_done = done(client_events), done(server_events)
    assert client_done is not None and client_done.session_resumed
    assert not client_done.certificate_requested
    assert server_done is not None and server_done.signature_scheme is None
