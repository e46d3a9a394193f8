"""The sans-I/O engine end to end in memory: negotiation, resumption, KeyUpdate, closing, and precise alerts."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from tls.tlcp.buffer import Buffer
from tls.tls13 import (
    AlertReceived,
    AlertSent,
    ApplicationData,
    CipherSuite,
    ClientAuth,
    ConnectionClosed,
    HandshakeComplete,
    KeyUpdated,
    LocalProtocolError,
    SessionTicketKeys,
    SessionTicketReceived,
    TLS13Connection,
)
from tls.tls13 import client as client_module
from tls.tls13 import connection as connection_module
from tls.tls13.messages import (
    ClientHello,
    ExtensionType,
    KeyShareEntry,
    pull_client_hello,
    push_client_hello,
    push_client_key_shares,
    push_uint16_list,
)
from tls.tls13.suites import NamedGroup

from .conftest import client_config, client_credential, pump, server_config


def handshake(client_settings: dict[str, Any] | None = None, server_settings: dict[str, Any] | None = None):
    server = TLS13Connection(server_config(**(server_settings or {})))
    client = TLS13Connection(client_config(**(client_settings or {})))
    client.start_handshake()
    client_events, server_events = pump(client, server)
    return client, server, client_events, server_events


def of_type(events: list[Any], kind: type) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


def sent_alert(events: list[Any]) -> str | None:
    alerts = of_type(events, AlertSent)
    return alerts[0].name if alerts else None


@pytest.mark.parametrize("suite", list(CipherSuite))
def test_full_handshake_data_both_ways_and_close(suite: CipherSuite) -> None:
    client, server, client_events, server_events = handshake(
        {"cipher_suites": (suite,)}, {"cipher_suites": (suite,)}
    )
    (done,) = of_type(client_events, HandshakeComplete)
    assert done.cipher_suite == suite and done.group == NamedGroup.curveSM2 and not done.session_resumed
    assert of_type(server_events, HandshakeComplete)[0].peer_certificates == ()
    assert of_type(client_events, SessionTicketReceived)
    client.send_application_data(b"ping" * 10_000)
    server.send_application_data(b"pong")
    client_events, server_events = pump(client, server)
    assert b"".join(event.data for event in of_type(server_events, ApplicationData)) == b"ping" * 10_000
    assert of_type(client_events, ApplicationData)[0].data == b"pong"
    client.close()
    client_events, server_events = pump(client, server)
    assert of_type(server_events, ConnectionClosed) and of_type(client_events, ConnectionClosed)
    assert client.closed and server.closed


def test_resumption_with_client_auth_keeps_the_client_identity() -> None:
    keys = SessionTicketKeys()
    server_settings = {"client_auth": ClientAuth.REQUIRED, "ticket_keys": keys}
    client, _, _, server_events = handshake({"credential": client_credential()}, server_settings)
    first = of_type(server_events, HandshakeComplete)[0]
    assert first.peer_certificate is not None and first.signature_scheme is not None
    _, _, client_events, server_events = handshake({"session": client.session}, server_settings)
    resumed = of_type(server_events, HandshakeComplete)[0]
    assert resumed.session_resumed and resumed.peer_certificate == first.peer_certificate
    assert of_type(client_events, HandshakeComplete)[0].session_resumed


def test_unknown_ticket_falls_back_to_a_full_handshake() -> None:
    client, _, _, _ = handshake()
    _, _, client_events, _ = handshake({"session": client.session}, {"ticket_keys": SessionTicketKeys()})
    assert not of_type(client_events, HandshakeComplete)[0].session_resumed


def test_no_ticket_for_a_client_without_psk_dhe_ke(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 8446 4.2.9: a ticket the client's psk_key_exchange_modes cannot use is not sent."""
    monkeypatch.setattr(client_module, "PskKeyExchangeMode", SimpleNamespace(psk_dhe_ke=0))  # psk_ke only
    client, _, client_events, server_events = handshake()
    assert of_type(server_events, HandshakeComplete) and of_type(client_events, HandshakeComplete)
    assert not of_type(client_events, SessionTicketReceived) and client.session is None


def test_hello_retry_request_then_resumption() -> None:
    keys = SessionTicketKeys()
    client, _, client_events, _ = handshake({"offer_key_share": False}, {"ticket_keys": keys})
    assert of_type(client_events, HandshakeComplete)
    _, _, client_events, _ = handshake(
        {"offer_key_share": False, "session": client.session}, {"ticket_keys": keys}
    )
    assert of_type(client_events, HandshakeComplete)[0].session_resumed


def test_key_update_both_ways() -> None:
    client, server, _, _ = handshake()
    client.update_keys(request_peer_update=True)
    client.send_application_data(b"after")
    client_events, server_events = pump(client, server)
    assert of_type(server_events, KeyUpdated)[0].update_requested
    assert of_type(client_events, KeyUpdated) and of_type(server_events, ApplicationData)[0].data == b"after"
    server.send_application_data(b"back")
    client_events, _ = pump(client, server)
    assert of_type(client_events, ApplicationData)[0].data == b"back"


def test_automatic_key_update_after_many_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "KEY_UPDATE_AFTER_RECORDS", 3)
    client, server, _, _ = handshake()
    for index in range(7):
        client.send_application_data(b"%d" % index)
    _, server_events = pump(client, server)
    assert len(of_type(server_events, KeyUpdated)) == 2
    assert b"".join(event.data for event in of_type(server_events, ApplicationData)) == b"0123456"


def test_alpn_negotiation_and_mismatch() -> None:
    _, _, client_events, _ = handshake({"alpn_protocols": ("http/1.1", "h2")}, {"alpn_protocols": ("h2",)})
    assert of_type(client_events, HandshakeComplete)[0].alpn_protocol == "h2"
    _, _, client_events, server_events = handshake({"alpn_protocols": ("x",)}, {"alpn_protocols": ("h2",)})
    assert sent_alert(server_events) == "no_application_protocol"
    assert of_type(client_events, AlertReceived)[0].name == "no_application_protocol"
    _, _, client_events, server_events = handshake(
        {"alpn_protocols": ("x",)}, {"alpn_protocols": ("h2",), "alpn_required": False}
    )
    assert of_type(server_events, HandshakeComplete)[0].alpn_protocol is None
    assert of_type(client_events, HandshakeComplete)[0].alpn_protocol is None


def test_sni_selects_the_credential_and_unknown_names_are_refused() -> None:
    def selector(name: str | None) -> Any:
        if name != "localhost":
            raise LookupError(name)
        return server_config().credential

    _, _, _, server_events = handshake({}, {"credential_selector": selector, "credential": None})
    assert of_type(server_events, HandshakeComplete)[0].server_name == "localhost"
    _, _, _, server_events = handshake(
        {"server_name": "other.example", "verify_peer": False}, {"credential_selector": selector}
    )
    assert sent_alert(server_events) == "unrecognized_name"


def test_client_certificate_required() -> None:
    _, _, _, server_events = handshake({}, {"client_auth": ClientAuth.REQUIRED})
    assert sent_alert(server_events) == "certificate_required"
    _, _, _, server_events = handshake({}, {"client_auth": ClientAuth.OPTIONAL})
    assert of_type(server_events, HandshakeComplete)[0].peer_certificates == ()


def test_client_rejects_wrong_host_and_unknown_ca(smgate_pki: Any) -> None:
    _, _, client_events, _ = handshake({"server_name": "wrong.example"})
    assert sent_alert(client_events) == "bad_certificate"
    _, _, client_events, _ = handshake({"trust_store": smgate_pki.trust_store})
    assert sent_alert(client_events) == "unknown_ca"


def test_misuse_raises_local_protocol_error() -> None:
    client = TLS13Connection(client_config())
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"x")
    client.start_handshake()
    with pytest.raises(LocalProtocolError):
        client.start_handshake()
    with pytest.raises(LocalProtocolError):
        client.send_application_data(b"x")
    with pytest.raises(LocalProtocolError):
        TLS13Connection(server_config()).start_handshake()


# ClientHello surgery: each broken hello gets its precise alert from the server


def client_hello(**changes: Any) -> ClientHello:
    client = TLS13Connection(client_config(middlebox_compatibility=False))
    client.start_handshake()
    record = client.data_to_send()
    hello = pull_client_hello(Buffer(record[5:]))
    for name, value in changes.items():
        setattr(hello, name, value)
    return hello


def with_extension(hello: ClientHello, extension_type: int, data: bytes | None) -> ClientHello:
    extensions = [(kind, body) for kind, body in hello.extensions if kind != extension_type]
    if data is not None:
        extensions.append((extension_type, data))
    hello.extensions = extensions
    return hello


def server_answer(hello: ClientHello | bytes) -> str | None:
    if isinstance(hello, ClientHello):
        buf = Buffer()
        push_client_hello(buf, hello)
        body = buf.data
    else:
        body = hello
    server = TLS13Connection(server_config())
    return sent_alert(server.receive_data(b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body))


def _encoded(hello: ClientHello) -> bytes:
    buf = Buffer()
    push_client_hello(buf, hello)
    return buf.data


def _reframed(body: bytes) -> bytes:
    """A ClientHello header whose length matches a (damaged) body."""
    return b"\x01" + len(body).to_bytes(3, "big") + body


def _psk_not_last() -> ClientHello:
    hello = with_extension(
        client_hello(),
        ExtensionType.PRE_SHARED_KEY,
        b"\x00\x07\x00\x01x\x00\x00\x00\x00\x00\x21\x20" + bytes(32),
    )
    hello.extensions.append((0x7777, b""))
    return hello


def _duplicate_extension() -> ClientHello:
    hello = client_hello()
    hello.extensions.append(hello.extensions[0])
    return hello


CLIENT_HELLO_CASES: list[tuple[str, Callable[[], ClientHello | bytes], str]] = [
    (
        "no supported_versions",
        lambda: with_extension(client_hello(), ExtensionType.SUPPORTED_VERSIONS, None),
        "protocol_version",
    ),
    (
        "TLS 1.2 only",
        lambda: with_extension(client_hello(), ExtensionType.SUPPORTED_VERSIONS, b"\x02\x03\x03"),
        "protocol_version",
    ),
    ("no SM suite", lambda: client_hello(cipher_suites=[0x1301]), "handshake_failure"),
    ("compression", lambda: client_hello(legacy_compression_methods=b"\x01\x00"), "illegal_parameter"),
    (
        "no signature_algorithms",
        lambda: with_extension(client_hello(), ExtensionType.SIGNATURE_ALGORITHMS, None),
        "missing_extension",
    ),
    (
        "no sm2sig_sm3",
        lambda: with_extension(
            client_hello(), ExtensionType.SIGNATURE_ALGORITHMS, push_uint16_list([0x0403], 2)
        ),
        "handshake_failure",
    ),
    (
        "no curveSM2",
        lambda: with_extension(
            with_extension(client_hello(), ExtensionType.SUPPORTED_GROUPS, push_uint16_list([0x001D], 2)),
            ExtensionType.KEY_SHARE,
            push_client_key_shares([]),
        ),
        "handshake_failure",
    ),
    (
        "no key_share",
        lambda: with_extension(client_hello(), ExtensionType.KEY_SHARE, None),
        "missing_extension",
    ),
    (
        "share outside groups",
        lambda: with_extension(
            client_hello(),
            ExtensionType.KEY_SHARE,
            push_client_key_shares([KeyShareEntry(0x001D, bytes(32))]),
        ),
        "illegal_parameter",
    ),
    (
        "point off the curve",
        lambda: with_extension(
            client_hello(),
            ExtensionType.KEY_SHARE,
            push_client_key_shares([KeyShareEntry(NamedGroup.curveSM2, b"\x04" + bytes(64))]),
        ),
        "illegal_parameter",
    ),
    (
        "short point",
        lambda: with_extension(
            client_hello(),
            ExtensionType.KEY_SHARE,
            push_client_key_shares([KeyShareEntry(NamedGroup.curveSM2, b"\x04\x01")]),
        ),
        "illegal_parameter",
    ),
    ("psk not last", _psk_not_last, "illegal_parameter"),
    (
        "psk without modes",
        lambda: with_extension(
            with_extension(client_hello(), ExtensionType.PSK_KEY_EXCHANGE_MODES, None),
            ExtensionType.PRE_SHARED_KEY,
            b"\x00\x07\x00\x01x\x00\x00\x00\x00\x00\x21\x20" + bytes(32),
        ),
        "missing_extension",
    ),
    ("duplicate extension", lambda: _duplicate_extension(), "illegal_parameter"),
    ("truncated body", lambda: _reframed(_encoded(client_hello())[4:-3]), "decode_error"),
    ("trailing bytes", lambda: _reframed(_encoded(client_hello())[4:] + b"\x00"), "decode_error"),
]


@pytest.mark.parametrize(
    ("case", "build", "alert"), CLIENT_HELLO_CASES, ids=[case[0] for case in CLIENT_HELLO_CASES]
)
def test_bad_client_hello_gets_a_precise_alert(
    case: str, build: Callable[[], ClientHello | bytes], alert: str
) -> None:
    assert server_answer(build()) == alert


def test_bad_psk_binder_is_decrypt_error() -> None:
    keys = SessionTicketKeys()
    client, _, _, _ = handshake({}, {"ticket_keys": keys})
    resuming = TLS13Connection(client_config(session=client.session, middlebox_compatibility=False))
    resuming.start_handshake()
    record = bytearray(resuming.data_to_send())
    record[-1] ^= 1  # the binder is the last byte of the ClientHello
    server = TLS13Connection(server_config(ticket_keys=keys))
    assert sent_alert(server.receive_data(bytes(record))) == "decrypt_error"


def test_retried_hello_must_carry_the_requested_share() -> None:
    server = TLS13Connection(server_config())
    client = TLS13Connection(client_config(offer_key_share=False, middlebox_compatibility=False))
    client.start_handshake()
    first = client.data_to_send()
    server.receive_data(first)
    assert server.data_to_send()[5 + 6 : 5 + 38] == bytes.fromhex(
        "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
    )  # HelloRetryRequest
    assert (
        sent_alert(server.receive_data(first)) == "illegal_parameter"
    )  # the same hello again, still no share


RECORD_CASES = [
    ("oversized plaintext record", b"\x16\x03\x03\x40\x01" + bytes(0x4001), "record_overflow"),
    ("unknown content type", b"\x18\x03\x03\x00\x01\x00", "unexpected_message"),
    ("not TLS", b"\x16\x01\x01\x00\x01\x00", "protocol_version"),
    ("application data first", b"\x17\x03\x03\x00\x01\x00", "unexpected_message"),
    ("empty handshake record", b"\x16\x03\x03\x00\x00", "unexpected_message"),
    ("change_cipher_spec first", b"\x14\x03\x03\x00\x01\x01", "unexpected_message"),
    ("server message to a server", b"\x16\x03\x03\x00\x04\x02\x00\x00\x00", "unexpected_message"),
    ("oversized handshake message", b"\x16\x03\x03\x00\x04\x01\x01\x00\x01", "decode_error"),
    ("bad alert length", b"\x15\x03\x03\x00\x03\x02\x28\x00", "decode_error"),
]


@pytest.mark.parametrize(("case", "data", "alert"), RECORD_CASES, ids=[case[0] for case in RECORD_CASES])
def test_bad_records_get_a_precise_alert(case: str, data: bytes, alert: str) -> None:
    server = TLS13Connection(server_config())
    assert sent_alert(server.receive_data(data)) == alert
    assert server.closed and server.receive_data(b"\x16\x03\x03\x00\x01\x01") == []


def test_post_handshake_violations() -> None:
    client, server, _, _ = handshake()
    tampered = bytearray(_app_record(client, b"data"))
    tampered[-1] ^= 1
    assert sent_alert(server.receive_data(bytes(tampered))) == "bad_record_mac"

    client, server, _, _ = handshake()
    client._writer.write(22, b"\x18\x00\x00\x01\x02")  # KeyUpdate with request_update = 2
    assert sent_alert(server.receive_data(client.data_to_send())) == "illegal_parameter"

    client, server, _, _ = handshake()
    client._writer.write(22, b"\x01\x00\x00\x00")  # a ClientHello after the handshake
    assert sent_alert(server.receive_data(client.data_to_send())) == "unexpected_message"

    client, server, _, _ = handshake()
    client._writer.write(22, b"\x18\x00\x00\x01\x00\x17")  # KeyUpdate not ending its record
    assert sent_alert(server.receive_data(client.data_to_send())) == "unexpected_message"

    client, server, _, _ = handshake()
    assert sent_alert(server.receive_data(b"\x14\x03\x03\x00\x01\x01")) == "unexpected_message"


def _app_record(client: TLS13Connection, data: bytes) -> bytes:
    client.send_application_data(data)
    return client.data_to_send()


def test_early_data_is_refused_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that offers 0-RTT gets a 1-RTT handshake; its early records are skipped (RFC 8446 4.2.10)."""
    original = client_module.push_client_hello

    def with_early_data(buf: Buffer, hello: ClientHello) -> None:
        hello.extensions.append((int(ExtensionType.EARLY_DATA), b""))
        original(buf, hello)

    monkeypatch.setattr(client_module, "push_client_hello", with_early_data)
    server = TLS13Connection(server_config())
    client = TLS13Connection(client_config())
    client.start_handshake()
    early = b"\x17\x03\x03\x00\x40" + bytes(range(64))  # 0-RTT data the server cannot decrypt
    server.receive_data(client.data_to_send() + early + early)
    client_events = client.receive_data(server.data_to_send())
    assert of_type(client_events, HandshakeComplete)
    server_events = server.receive_data(client.data_to_send())
    assert of_type(server_events, HandshakeComplete) and not of_type(server_events, AlertSent)


def test_half_close_keeps_our_write_side_open() -> None:
    client, server, _, _ = handshake({}, {"half_close": True})
    client.close()
    _, server_events = pump(client, server)
    assert of_type(server_events, ConnectionClosed) and not server.closed
    server.send_application_data(b"late")
    server.close()
    client_events, _ = pump(client, server)
    assert of_type(client_events, ApplicationData)[0].data == b"late" and client.closed and server.closed


def test_fatal_alert_from_the_peer_closes() -> None:
    client, server, _, _ = handshake()
    server._send_alert(2, 40)
    events = client.receive_data(server.data_to_send())
    assert of_type(events, AlertReceived)[0].name == "handshake_failure" and client.closed


def test_user_canceled_is_not_fatal() -> None:
    client, server, _, _ = handshake()
    server._send_alert(1, 90)
    server.send_application_data(b"still here")
    events = client.receive_data(server.data_to_send())
    assert of_type(events, ApplicationData)[0].data == b"still here" and not client.closed
