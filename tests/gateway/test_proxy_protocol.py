"""PROXY protocol v1/v2: the sans-I/O parser and encoder, then a real listener behind a "balancer"."""

from __future__ import annotations

import asyncio
import io
import json
import struct

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from gateway.echo import EchoService
from gateway.logs.rate_limit import configure_peer_error_log
from gateway.logs.setup import configure_logging, get_logger
from gateway.proxy_protocol import (
    V2_SIGNATURE,
    Command,
    NeedData,
    ProxyHeader,
    ProxyProtocolError,
    TlvType,
    encode_v1,
    encode_v2,
    parse_header,
)
from tests.gateway.helpers import HttpClient, RecordingAudit, base_doc, client_context, running

# -- parser ----------------------------------------------------------------------------------------


def test_v1_tcp4_and_tcp6():
    line = b"PROXY TCP4 198.51.100.7 192.0.2.1 51234 443\r\n"
    header = parse_header(line + b"\x16\x01\x01")
    assert isinstance(header, ProxyHeader)
    assert (header.version, header.command, header.length) == (1, Command.PROXY, len(line))
    assert header.source == ("198.51.100.7", 51234) and header.destination == ("192.0.2.1", 443)
    header6 = parse_header(b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n")
    assert isinstance(header6, ProxyHeader) and header6.source == ("2001:db8::7", 1)


def test_v1_unknown_keeps_the_socket_peer():
    header = parse_header(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
    assert isinstance(header, ProxyHeader) and header.source is None and header.command is Command.LOCAL


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"PROXY TCP4 198.51.100.7 192.0.2.1 51234\r\n", "5 fields"),
        (b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "port"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 080 2\r\n", "port"),
        (b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", "5 fields"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "bare CR or LF"),
        (b"PROXY " + b"A" * 110, "longer than 107"),
        (b"GET / HTTP/1.1\r\n", "not a PROXY protocol"),
        (b"\x16\x01\x01\x00\x10", "not a PROXY protocol"),
    ],
)
def test_v1_malformed(line, message):
    with pytest.raises(ProxyProtocolError, match=message):
        parse_header(line)


def test_partial_input_asks_for_more_and_rejects_early():
    line = b"PROXY TCP4 198.51.100.7 192.0.2.1 51234 443\r\n"
    for cut in range(len(line)):
        assert isinstance(parse_header(line[:cut]), NeedData)
    block = encode_v2(("10.0.0.1", 1000), ("10.0.0.2", 443))
    for cut in range(len(block)):
        result = parse_header(block[:cut])
        assert isinstance(result, NeedData) and result.minimum > cut
    with pytest.raises(ProxyProtocolError):
        parse_header(b"PRO\x00")  # wrong as soon as a byte differs from both signatures


def test_v2_inet_inet6_local_and_tlvs():
    tlvs = ((TlvType.AUTHORITY, b"api.example"), (TlvType.UNIQUE_ID, b"\x01\x02"))
    block = encode_v2(("198.51.100.7", 51234), ("192.0.2.1", 443), tlvs)
    header = parse_header(block + b"tail")
    assert isinstance(header, ProxyHeader) and header.length == len(block)
    assert header.source == ("198.51.100.7", 51234) and header.tlv(TlvType.AUTHORITY) == b"api.example"
    header6 = parse_header(encode_v2(("2001:db8::7", 7), ("2001:db8::1", 443)))
    assert isinstance(header6, ProxyHeader) and header6.destination == ("2001:db8::1", 443)
    local = parse_header(encode_v2(None, None))
    assert isinstance(local, ProxyHeader) and local.command is Command.LOCAL and local.source is None


def _v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", ver_cmd, fam, len(body) if length is None else length) + body


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (_v2(0x11, 0x11, bytes(12)), "version nibble"),
        (_v2(0x22, 0x11, bytes(12)), "unknown command"),
        (_v2(0x21, 0x41, bytes(12)), "unknown command or family"),
        (_v2(0x21, 0x11, bytes(8)), "needs 12 address bytes"),
        (_v2(0x21, 0x11, bytes(12) + b"\x01\x00"), "truncated TLV"),
        (_v2(0x21, 0x11, bytes(12) + b"\x01\x00\x09abc"), "overruns"),
        (_v2(0x21, 0x11, b"", length=60000), "exceeds the limit"),
    ],
)
def test_v2_malformed(block, message):
    with pytest.raises(ProxyProtocolError, match=message):
        parse_header(block)


def test_versions_can_be_restricted():
    with pytest.raises(ProxyProtocolError, match="v2 header"):
        parse_header(b"PROXY UNKNOWN\r\n", versions=frozenset({2}))
    with pytest.raises(ProxyProtocolError, match="v1 header"):
        parse_header(encode_v2(None, None), versions=frozenset({1}))


def test_encoder_round_trips_and_mixed_families():
    for encode in (encode_v1, encode_v2):
        header = parse_header(encode(("192.0.2.9", 80), ("192.0.2.1", 8443)))
        assert isinstance(header, ProxyHeader) and header.source == ("192.0.2.9", 80)
    assert encode_v1(("192.0.2.9", 80), ("::1", 1)) == b"PROXY UNKNOWN\r\n"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_other_errors(data):
    try:
        result = parse_header(data)
    except ProxyProtocolError:
        return
    if isinstance(result, NeedData):
        assert result.minimum > len(data) and result.minimum <= 16 + 2048
    else:
        assert result.length <= len(data)


@given(st.binary(max_size=200))
def test_v2_with_arbitrary_body_is_parsed_or_refused(body):
    try:
        result = parse_header(_v2(0x21, 0x11, body))
    except ProxyProtocolError:
        return
    assert isinstance(result, ProxyHeader) and result.length == 16 + len(body)


# -- a real listener behind a balancer ---------------------------------------------------------------


@pytest.fixture
async def echo():
    service = await EchoService(name="a").start()
    yield service
    await service.close()


@pytest.fixture
def log_lines():
    """Log lines as parsed JSON objects (structlog configured to write into a buffer)."""
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    configure_peer_error_log(get_logger("listener"), rate=100.0, burst=100)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    structlog.reset_defaults()


async def _closed_by_gateway(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True  # closed with our bytes unread: the kernel answers with a reset


def _doc(pki, upstream_port: int, **proxy_protocol) -> dict:
    doc = base_doc(pki, upstream_port)
    doc["listeners"][0]["proxy_protocol"] = proxy_protocol
    doc["listeners"][0]["handshake_timeout"] = 1.0
    return doc


async def _forwarded_for(port: int, header: bytes, ssl_ctx=None) -> str:
    """The X-Forwarded-For the upstream saw for one request sent after ``header``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(header)
    await writer.drain()
    if ssl_ctx is not None:
        await writer.start_tls(ssl_ctx, server_hostname="localhost")
    client = HttpClient(reader, writer)
    status, _, body = await client.request("GET", "/who")
    await client.close()
    assert status == 200
    return json.loads(body)["headers"]["x-forwarded-for"]


async def test_v1_and_v2_headers_name_the_client_in_plain_and_tls(pki, echo):
    audit = RecordingAudit()
    async with running(_doc(pki, echo.port), audit=audit) as gw:
        port = gw.listener_port("main")
        v1 = encode_v1(("198.51.100.7", 51234), ("192.0.2.1", 443))
        v2 = encode_v2(("2001:db8::9", 4242), ("2001:db8::1", 443))
        assert await _forwarded_for(port, v1) == "198.51.100.7"
        assert await _forwarded_for(port, v2, client_context(pki)) == "2001:db8::9"
        assert await _forwarded_for(port, encode_v2(None, None)) == "127.0.0.1"  # LOCAL: the socket's peer
    clients = [r["client_addr"] for r in audit.of("conn.open")]
    assert clients[:2] == ["198.51.100.7:51234", "2001:db8::9:4242"]
    assert clients[2].startswith("127.0.0.1:")


async def test_malformed_header_is_logged_and_closed(pki, echo, log_lines):
    async with running(_doc(pki, echo.port), audit=RecordingAudit()) as gw:
        port = gw.listener_port("main")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # a client that bypassed the balancer
        assert await _closed_by_gateway(reader)
        writer.close()
        stats = gw.stats_json()["metrics"]
    assert stats["smgate_handshake_failures_total{listener=main,reason=proxy_protocol}"] == 1.0
    [line] = [x for x in log_lines() if x["event"] == "handshake failed"]
    assert line["reason"] == "proxy_protocol" and line["listener"] == "main"
    assert line["peer"].startswith("127.0.0.1:") and "not a PROXY protocol" in line["detail"]


async def test_untrusted_source_and_slow_header_are_refused(pki, echo, log_lines):
    async with running(_doc(pki, echo.port, trusted_sources=["10.0.0.0/8"]), audit=RecordingAudit()) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        writer.write(encode_v1(("198.51.100.7", 1), ("192.0.2.1", 2)))
        assert await _closed_by_gateway(reader)
        writer.close()
    async with running(_doc(pki, echo.port), audit=RecordingAudit()) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        writer.write(b"PROXY TCP4 1.2.")  # then nothing: the handshake timeout closes it
        assert await _closed_by_gateway(reader)
        writer.close()
    details = [x["detail"] for x in log_lines() if x["event"] == "handshake failed"]
    assert len(details) == 2
    assert "not in proxy_protocol.trusted_sources" in details[0]
    assert "timed out waiting for the PROXY header" in details[1]
