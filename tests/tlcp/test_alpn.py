"""ALPN (RFC 7301) in the TLCP hellos, sans-I/O: negotiation, the server's policy without a common
protocol, resumption, strict parsing both ways, and configuration checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tls.tlcp import AlertDescription, SessionCache, TLCPConfiguration, TLCPConnection
from tls.tlcp.buffer import Buffer
from tls.tlcp.messages import (
    ClientHello,
    ExtensionType,
    pull_alpn_extension,
    pull_client_hello,
    pull_server_hello,
    push_alpn_extension,
    push_client_hello,
    push_server_hello,
)

from .recordings import Record, parse_records
from .test_connection import Pair, alerts_received, alerts_sent, client_config, completed, server_config

ALPN = int(ExtensionType.APPLICATION_LAYER_PROTOCOL_NEGOTIATION)


def alpn_data(*names: bytes) -> bytes:
    body = b"".join(bytes((len(name),)) + name for name in names)
    return len(body).to_bytes(2, "big") + body


def hello_extensions(record: Record) -> dict[int, bytes]:
    return dict(pull_client_hello(Buffer(record.fragment)).extensions or ())


def server_hello_extensions(pair: Pair) -> dict[int, bytes]:
    """Start the handshake and return the extensions of the server's ServerHello (its flight is
    delivered to the client)."""
    pair.client.start_handshake()
    pair.server_events += pair.server.receive_data(pair.client.data_to_send())
    flight = pair.server.data_to_send()
    pair.client_events += pair.client.receive_data(flight)
    server_hello = parse_records(flight)[0]
    return dict(pull_server_hello(Buffer(server_hello.fragment)).extensions or ())


# codec


def test_protocol_name_list_round_trips() -> None:
    names = ["h2", "http/1.1", "x" * 255, "\xe9t\xe9"]  # latin-1: one character per byte
    data = push_alpn_extension(names)
    assert data[:2] == (len(data) - 2).to_bytes(2, "big")
    assert pull_alpn_extension(data) == names


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "read out of bounds"),
        (b"\x00\x00", "empty ALPN protocol list"),
        (b"\x00\x01\x00", "empty ALPN protocol name"),
        (b"\x00\x04\x02h2\x05", "read out of bounds"),
        (b"\x00\x05\x02h2", "vector longer than its container"),
        (b"\x00\x03\x02h2!", "trailing bytes after the ALPN protocol list"),
        (b"\x00\x03\x03h2", "read out of bounds"),
    ],
)
def test_protocol_name_list_is_parsed_strictly(data: bytes, reason: str) -> None:
    with pytest.raises(Exception, match=reason):
        pull_alpn_extension(data)


# negotiation


def test_server_preference_decides_and_both_ends_report_it() -> None:
    pair = Pair(
        client_config(alpn_protocols=("http/1.1", "h2")), server_config(alpn_protocols=("h2", "http/1.1"))
    )
    client_done, server_done = pair.handshake()
    assert client_done.alpn_protocol == server_done.alpn_protocol == "h2"


def test_offer_is_sent_after_server_name_and_only_when_configured() -> None:
    offering = TLCPConnection(client_config(alpn_protocols=("h2", "http/1.1")))
    offering.start_handshake()
    hello = parse_records(offering.data_to_send())[0]
    assert list(hello_extensions(hello)) == [int(ExtensionType.SERVER_NAME), ALPN]
    assert hello_extensions(hello)[ALPN] == alpn_data(b"h2", b"http/1.1")

    plain = TLCPConnection(client_config(server_name=None))
    plain.start_handshake()
    assert pull_client_hello(Buffer(parse_records(plain.data_to_send())[0].fragment)).extensions is None


@pytest.mark.parametrize(
    ("client", "server"),
    [
        ((), ("h2",)),  # the client offers nothing
        (("h2",), ()),  # the server has no ALPN configured
        (("h2",), ("http/1.1",)),  # nothing in common, and the server does not require ALPN
    ],
    ids=["no-offer", "server-without-alpn", "no-overlap"],
)
def test_without_a_protocol_the_handshake_completes_without_alpn(
    client: tuple[str, ...], server: tuple[str, ...]
) -> None:
    pair = Pair(client_config(alpn_protocols=client), server_config(alpn_protocols=server))
    assert ALPN not in server_hello_extensions(pair)
    pair.pump()
    assert completed(pair.client_events).alpn_protocol is None
    assert completed(pair.server_events).alpn_protocol is None


def test_required_alpn_without_overlap_is_no_application_protocol() -> None:
    pair = Pair(
        client_config(alpn_protocols=("h2",)), server_config(alpn_protocols=("http/1.1",), alpn_required=True)
    )
    pair.client.start_handshake()
    pair.pump()
    assert alerts_sent(pair.server_events) == ["no_application_protocol"]
    assert alerts_received(pair.client_events) == ["no_application_protocol"]
    assert pair.client.closed and pair.server.closed


def test_required_alpn_does_not_refuse_a_client_that_offers_none() -> None:
    pair = Pair(client_config(), server_config(alpn_protocols=("h2",), alpn_required=True))
    client_done, server_done = pair.handshake()
    assert client_done.alpn_protocol is server_done.alpn_protocol is None


def test_selector_sees_the_offer_and_the_server_name() -> None:
    calls: list[tuple[tuple[str, ...], str | None]] = []

    def select(offered: tuple[str, ...], server_name: str | None) -> str | None:
        calls.append((offered, server_name))
        return offered[-1]

    pair = Pair(client_config(alpn_protocols=("h2", "http/1.1")), server_config(alpn_selector=select))
    client_done, server_done = pair.handshake()
    assert calls == [(("h2", "http/1.1"), "localhost")]
    assert client_done.alpn_protocol == server_done.alpn_protocol == "http/1.1"


@pytest.mark.parametrize(
    ("choice", "required", "alert"),
    [
        (None, False, None),
        (None, True, "no_application_protocol"),
        ("spdy/3", False, "internal_error"),  # not offered: a bug in the selector, never sent
    ],
)
def test_selector_outcomes(choice: str | None, required: bool, alert: str | None) -> None:
    pair = Pair(
        client_config(alpn_protocols=("h2",)),
        server_config(alpn_selector=lambda offered, name: choice, alpn_required=required),
    )
    pair.client.start_handshake()
    pair.pump()
    if alert is None:
        assert completed(pair.server_events).alpn_protocol is None
    else:
        assert alerts_sent(pair.server_events) == [alert]


def test_failing_selector_is_internal_error() -> None:
    def select(offered: tuple[str, ...], server_name: str | None) -> str | None:
        raise RuntimeError("selector bug")

    pair = Pair(client_config(alpn_protocols=("h2",)), server_config(alpn_selector=select))
    pair.client.start_handshake()
    pair.pump()
    assert alerts_sent(pair.server_events) == ["internal_error"]


def test_resumed_session_negotiates_alpn_afresh() -> None:
    server = server_config(alpn_protocols=("h2", "http/1.1"), session_cache=SessionCache())
    first = Pair(client_config(alpn_protocols=("h2",)), server)
    client_done, _ = first.handshake()
    assert client_done.alpn_protocol == "h2" and first.client.session is not None
    for offer, expected in ((("http/1.1",), "http/1.1"), ((), None), (("h2", "http/1.1"), "h2")):
        pair = Pair(client_config(alpn_protocols=offer, session=first.client.session), server)
        client_done, server_done = pair.handshake()
        assert client_done.session_resumed and server_done.session_resumed
        assert client_done.alpn_protocol == server_done.alpn_protocol == expected


# strict parsing: the server


def client_hello_with(extensions: list[tuple[int, bytes]]) -> bytes:
    buf = Buffer()
    push_client_hello(buf, ClientHello(0x0101, bytes(32), b"", [0xE013], [0], extensions))
    return Record(22, buf.data).wire


@pytest.mark.parametrize(
    ("extensions", "alert"),
    [
        ([(ALPN, b"\x00\x00")], "decode_error"),  # empty list
        ([(ALPN, b"\x00\x01\x00")], "decode_error"),  # empty name
        ([(ALPN, b"")], "decode_error"),  # no list at all
        ([(ALPN, b"\x00\x04\x05h2")], "decode_error"),  # a name running past the list
        ([(ALPN, alpn_data(b"h2") + b"\x00")], "decode_error"),  # trailing bytes
        ([(ALPN, alpn_data(b"h2")), (ALPN, alpn_data(b"h2"))], "illegal_parameter"),  # duplicate
    ],
    ids=["empty-list", "empty-name", "no-list", "overlong-name", "trailing", "duplicate"],
)
@pytest.mark.parametrize("server_alpn", [(), ("h2",)], ids=["server-without-alpn", "server-with-alpn"])
def test_server_rejects_malformed_offers(
    extensions: list[tuple[int, bytes]], alert: str, server_alpn: tuple[str, ...]
) -> None:
    server = TLCPConnection(server_config(alpn_protocols=server_alpn))
    events = server.receive_data(client_hello_with(extensions))
    assert alerts_sent(events) == [alert]
    assert parse_records(server.data_to_send())[-1] == Record(21, bytes((2, AlertDescription[alert])))


@settings(max_examples=200, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=64),
        st.lists(st.binary(max_size=4), max_size=5).map(lambda names: alpn_data(*names)),
    )
)
def test_any_offer_is_selected_from_or_refused_with_decode_error(data: bytes) -> None:
    """Arbitrary extension bodies: a well-formed list gets h2 exactly when it names h2; anything else
    is a decode_error, never another alert."""
    server = TLCPConnection(server_config(alpn_protocols=("h2",)))
    events = server.receive_data(client_hello_with([(ALPN, data)]))
    try:
        offered = pull_alpn_extension(data)
    except Exception:
        assert alerts_sent(events) == ["decode_error"]
        return
    assert alerts_sent(events) == []
    server_hello = parse_records(server.data_to_send())[0]
    extensions = dict(pull_server_hello(Buffer(server_hello.fragment)).extensions or ())
    assert extensions.get(ALPN) == (alpn_data(b"h2") if "h2" in offered else None)


def test_server_accepts_any_byte_in_a_name() -> None:
    server = TLCPConnection(server_config(alpn_protocols=("\xff\x00",)))
    server.receive_data(client_hello_with([(ALPN, alpn_data(b"h2", b"\xff\x00"))]))
    server_hello = parse_records(server.data_to_send())[0]
    extensions = dict(pull_server_hello(Buffer(server_hello.fragment)).extensions or ())
    assert extensions[ALPN] == alpn_data(b"\xff\x00")


# strict parsing: the client


def client_after_server_hello(
    extensions: list[tuple[int, bytes]] | None, offer: tuple[str, ...] = ("h2", "http/1.1")
) -> tuple[TLCPConnection, list[Any]]:
    """A client offering ``offer`` fed the server's ServerHello with ``extensions`` instead of its own."""
    pair = Pair(client_config(alpn_protocols=offer), server_config())
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    hello = pull_server_hello(Buffer(parse_records(pair.server.data_to_send())[0].fragment))
    hello.extensions = extensions
    buf = Buffer()
    push_server_hello(buf, hello)
    return pair.client, pair.client.receive_data(Record(22, buf.data).wire)


@pytest.mark.parametrize(
    ("extensions", "alert"),
    [
        ([(ALPN, alpn_data(b"spdy/3"))], "illegal_parameter"),  # not offered
        ([(ALPN, alpn_data(b"h2", b"http/1.1"))], "decode_error"),  # more than one
        ([(ALPN, b"\x00\x00")], "decode_error"),
        ([(ALPN, b"\x00\x01\x00")], "decode_error"),
        ([(ALPN, alpn_data(b"h2")), (ALPN, alpn_data(b"h2"))], "illegal_parameter"),  # duplicate
    ],
    ids=["not-offered", "two-names", "empty-list", "empty-name", "duplicate"],
)
def test_client_rejects_a_bad_selection(extensions: list[tuple[int, bytes]], alert: str) -> None:
    client, events = client_after_server_hello(extensions)
    assert alerts_sent(events) == [alert] and client.closed


def test_client_that_offered_nothing_rejects_a_selection() -> None:
    client, events = client_after_server_hello([(ALPN, alpn_data(b"h2"))], offer=())
    assert alerts_sent(events) == ["unsupported_extension"] and client.closed


def test_client_accepts_a_server_that_ignores_its_offer() -> None:
    client, events = client_after_server_hello([(int(ExtensionType.SERVER_NAME), b"")])
    assert alerts_sent(events) == [] and not client.closed


# configuration


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"is_client": True, "alpn_protocols": ("",)}, "1..255 bytes"),
        ({"is_client": True, "alpn_protocols": ("x" * 256,)}, "1..255 bytes"),
        ({"is_client": True, "alpn_protocols": ("h\u20ac",)}, "not latin-1"),
        ({"is_client": True, "alpn_protocols": ("h2", "h2")}, "duplicates"),
        ({"is_client": True, "alpn_protocols": "h2"}, "not one string"),
        ({"is_client": True, "alpn_protocols": [f"p{i:0250}" for i in range(262)]}, "65535"),
        ({"is_client": True, "alpn_required": True}, "server settings"),
        ({"is_client": True, "alpn_selector": lambda offered, name: None}, "server settings"),
        (
            {"is_client": False, "alpn_protocols": ("h2",), "alpn_selector": lambda offered, name: None},
            "not both",
        ),
    ],
    ids=[
        "empty-name",
        "long-name",
        "not-latin-1",
        "duplicates",
        "string",
        "too-long-list",
        "client-required",
        "client-selector",
        "list-and-selector",
    ],
)
def test_configuration_is_checked(options: dict[str, Any], message: str) -> None:
    make = client_config if options.pop("is_client") else server_config
    with pytest.raises(ValueError, match=message):
        make(**options)


def test_configured_names_become_a_tuple() -> None:
    configuration: TLCPConfiguration = client_config(alpn_protocols=["h2", "http/1.1"])
    assert configuration.alpn_protocols == ("h2", "http/1.1")
