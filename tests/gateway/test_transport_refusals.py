"""How the transports refuse: what the client reads, what stderr gets.

Each refusal reaches the client as what it is, not as a reset: a TLS alert for a handshake the gateway
turns down (written before the connection closes, which closes lingering), a short HTTP 400 for plain
HTTP on a TLS/TLCP-only port, ``unrecognized_name`` for a ClientHello whose SNI is not an ASCII host
name (refused by the sniffer, so CPython never decodes it and prints nothing).
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from gateway.echo import EchoService
from gateway.listener_filters.sniff import host_name, parse_client_hello
from tests.gateway.helpers import HttpClient, base_doc, client_context, running

ALERT = 0x15


@pytest.fixture
async def echo():
    service = await EchoService(name="echo").start()
    yield service
    await service.close()


def client_hello(server_name: str, *, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> bytes:
    """The first flight of a real Python ``ssl`` client (one record holding its ClientHello)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    out = bytearray()
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(4096):
            out += chunk
    return bytes(out)


def test_sniffer_reads_the_sni_of_a_client_hello():
    hello = parse_client_hello(client_hello("api.example.test")[5:])
    assert hello is not None and hello.server_name == b"api.example.test"
    assert 0x1301 in hello.cipher_suites  # TLS_AES_128_GCM_SHA256
    assert parse_client_hello(client_hello("api.example.test")[5:40]) is None  # cut short: no verdict
    assert host_name(b"api.example.test") == "api.example.test"
    assert host_name("café.test".encode()) is None
    assert host_name(b"a b.test") is None
    assert host_name(b"a\x00.test") is None


async def test_non_ascii_sni_gets_unrecognized_name_and_no_traceback(pki, echo, capfd):
    hello = client_hello("aaaaaa.test").replace(b"aaaaaa.test", "é aaa.test".encode())
    assert len(hello) == len(client_hello("aaaaaa.test"))
    async with running(base_doc(pki, echo.port)) as gw:
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
            writer.write(hello)
            answer = await read_until_closed(reader)
            writer.close()
            # One fatal alert record: unrecognized_name (RFC 6066 3).
            assert answer == bytes((ALERT, 3, 3, 0, 2, 2, 112))
        failures = {k: v for k, v in gw.stats.as_json().items() if "handshake_failures_total" in k}
    assert failures == {"smgate_handshake_failures_total{listener=main,reason=invalid_server_name}": 3.0}
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "UnicodeDecodeError" not in captured.err


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_refused_client_certificate_reaches_the_client_as_an_alert(pki, echo, version):
    async with running(base_doc(pki, echo.port, client_auth="required")) as gw:
        port = gw.listener_port("main")
        with pytest.raises(ssl.SSLError) as refused:
            client = await HttpClient.open(port, client_context(pki, version=version))
            # TLS 1.3: the client finishes first; the server's verdict is the first thing it reads.
            await client.request("GET", "/")
        assert "ALERT" in (refused.value.reason or ""), refused.value


async def test_plain_http_on_a_tls_only_port_gets_a_short_400(pki, echo):
    async with running(base_doc(pki, echo.port, protocols=("tls1.3", "tls1.2"))) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = await read_until_closed(reader)
        writer.close()
        failures = {k: v for k, v in gw.stats.as_json().items() if "handshake_failures_total" in k}
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close" in head
    assert b"TLS/TLCP only" in body
    assert failures == {"smgate_handshake_failures_total{listener=main,reason=protocol_not_allowed}": 1.0}
