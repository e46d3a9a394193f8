"""PROXY protocol towards upstream clusters: real upstreams read the header the gateway sends.

The upstream here is a small threaded server that reads exactly the PROXY header from each accepted
socket with :func:`gateway.proxy_protocol.parse_header` (asking for the bytes it says it needs, never
more), then optionally completes a TLS handshake on the same socket, then answers every HTTP/1.1
request (keep-alive) or, in TCP mode, writes one line, with JSON naming its connection and the header.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config
from gateway.echo import EchoService
from gateway.proxy_protocol import NeedData, ProxyHeader, encode_v1, parse_header
from tests.gateway.helpers import HttpClient, base_doc, running
from tests.gateway.test_tlcp import gateway_doc, tlcp_listener
from tests.ports import free_port


class ProxiedUpstream:
    """An upstream behind the gateway; ``headers[i]`` is the PROXY header of its connection ``i``."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, mode: str = "http") -> None:
        self.tls, self.mode = tls, mode
        self.headers: list[ProxyHeader] = []
        self.server = socket.create_server(("127.0.0.1", free_port()))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(5)
        self.server.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.server.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        with raw:
            header = _read_header(raw)
            index = len(self.headers)
            self.headers.append(header)
            sock = self.tls.wrap_socket(raw, server_side=True) if self.tls else raw
            reply = json.dumps(
                {"connection": index, "source": header.source, "destination": header.destination}
            )
            if self.mode == "tcp":
                sock.sendall(reply.encode() + b"\n")
                return
            buffered = b""
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffered:
                    try:
                        chunk = sock.recv(4096)
                    except (TimeoutError, OSError):
                        return
                    if not chunk:
                        return
                    buffered += chunk
                _, buffered = buffered.split(b"\r\n\r\n", 1)
                body = reply.encode()
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )


def _read_header(sock: socket.socket) -> ProxyHeader:
    data = b""
    while True:
        result = parse_header(data)
        if isinstance(result, ProxyHeader):
            assert result.length == len(data)  # nothing after the header was read
            return result
        assert isinstance(result, NeedData)
        chunk = sock.recv(result.minimum - len(data))
        assert chunk, "connection closed before the PROXY header ended"
        data += chunk


@pytest.fixture
def upstreams():
    started: list[ProxiedUpstream] = []

    def start(**kwargs) -> ProxiedUpstream:
        started.append(ProxiedUpstream(**kwargs))
        return started[-1]

    yield start
    for upstream in started:
        upstream.close()


def _doc(pki, upstream: ProxiedUpstream, version: int, **cluster_extra) -> dict:
    extra = {"proxy_protocol": {"version": version}, **cluster_extra}
    return base_doc(pki, upstream.port, cluster_extra=extra)


async def _requests(client: HttpClient, count: int) -> list[dict]:
    answers = []
    for _ in range(count):
        status, _, body = await client.request("GET", "/who")
        assert status == 200
        answers.append(json.loads(body))
    return answers


@pytest.mark.parametrize("version", [1, 2])
async def test_http_upstream_sees_each_client_on_its_own_connection(pki, upstreams, version):
    upstream = upstreams()
    async with running(_doc(pki, upstream, version)) as gw:
        port = gw.listener_port("main")
        first, second = await HttpClient.open(port), await HttpClient.open(port)
        first_answers = await _requests(first, 2)
        second_answers = await _requests(second, 2)
        first_answers += await _requests(first, 1)
        addresses = [c.writer.get_extra_info("sockname")[:2] for c in (first, second)]
        await first.close()
        await second.close()
    for answers, client in zip((first_answers, second_answers), addresses, strict=True):
        assert {tuple(a["source"]) for a in answers} == {tuple(client)}
        assert {tuple(a["destination"]) for a in answers} == {("127.0.0.1", port)}
    # A client's keep-alive requests share its upstream connection; two clients never share one.
    assert len({a["connection"] for a in first_answers}) == 1
    assert len({a["connection"] for a in second_answers}) == 1
    assert first_answers[0]["connection"] != second_answers[0]["connection"]
    assert [h.version for h in upstream.headers] == [version, version]


@pytest.mark.parametrize("version", [1, 2])
async def test_client_named_by_a_proxy_protocol_listener_is_passed_on(pki, upstreams, version):
    upstream = upstreams()
    doc = _doc(pki, upstream, version)
    doc["listeners"][0]["proxy_protocol"] = {}
    async with running(doc) as gw:
        port = gw.listener_port("main")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_v1(("198.51.100.7", 51234), ("192.0.2.1", 443)))
        client = HttpClient(reader, writer)
        [answer] = await _requests(client, 1)
        await client.close()
    assert answer["source"] == ["198.51.100.7", 51234]
    assert answer["destination"] == ["127.0.0.1", port]


async def test_tls_upstream_handshakes_after_the_header(pki, upstreams):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.server_rsa), str(pki.server_rsa_key))
    upstream = upstreams(tls=ctx)
    tls = {"type": "tls", "server_name": "localhost", "trust_anchors": str(pki.ca)}
    async with running(_doc(pki, upstream, 2, transport_socket=tls)) as gw:
        client = await HttpClient.open(gw.listener_port("main"))
        [answer] = await _requests(client, 1)
        address = client.writer.get_extra_info("sockname")[:2]
        await client.close()
    assert tuple(answer["source"]) == tuple(address)


async def test_tcp_proxy_sends_the_header_per_connection(pki, upstreams):
    upstream = upstreams(mode="tcp")
    doc = _doc(pki, upstream, 1)
    doc["listeners"][0]["filter_chains"] = [
        {"name": "tcp", "filters": [{"name": "tcp_proxy", "cluster": "echo"}]}
    ]
    async with running(doc) as gw:
        answers, addresses = [], []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
            writer.write(b"hello\n")  # the listener's sniffer waits for the client's first bytes
            answers.append(json.loads(await asyncio.wait_for(reader.readline(), 5)))
            addresses.append(writer.get_extra_info("sockname")[:2])
            writer.close()
    assert [tuple(a["source"]) for a in answers] == [tuple(a) for a in addresses]
    assert [a["connection"] for a in answers] == [0, 1]


@pytest.mark.parametrize("value", [{"version": 3}, {}, {"version": 1, "tlvs": []}])
def test_cluster_proxy_protocol_is_validated(pki, value):
    doc = base_doc(pki, 20000, cluster_extra={"proxy_protocol": value})
    with pytest.raises(ConfigError, match="proxy_protocol"):
        parse_config(doc, Path.cwd())


@pytest.mark.parametrize("version", [1, 2])
async def test_health_checks_send_a_header_without_addresses(pki, upstreams, version):
    upstream = upstreams()
    health = {"type": "http", "path": "/who", "interval": 0.1, "timeout": 2.0}
    async with running(_doc(pki, upstream, version, health_checks=health)):
        for _ in range(50):
            if upstream.headers:
                break
            await asyncio.sleep(0.1)
    [header, *_] = upstream.headers
    assert (header.version, header.source, header.destination) == (version, None, None)


async def test_tlcp_hop_to_a_proxy_protocol_listener(demo_pki):
    """client --PROXY v1 + HTTP--> gateway A --PROXY v2, then TLCP--> gateway B (PROXY listener) --> echo:
    B reads A's header before the TLCP handshake and sees the client A was told about."""
    echo = await EchoService(name="echo").start()
    inner = tlcp_listener(demo_pki, protocols=("tlcp",))
    inner["proxy_protocol"] = {"versions": [2]}
    async with running(gateway_doc(demo_pki, echo.port, listener=inner)) as b:
        outer = tlcp_listener(demo_pki, protocols=("tls1.3", "plain"))
        outer["proxy_protocol"] = {"versions": [1]}
        transport = {"type": "tlcp", "server_name": "localhost", "trust_anchors": str(demo_pki.sm2.ca_bundle)}
        doc = gateway_doc(demo_pki, b.listener_port("main"), listener=outer, transport=transport)
        doc["clusters"][0]["proxy_protocol"] = {"version": 2}
        async with running(doc) as a:
            reader, writer = await asyncio.open_connection("127.0.0.1", a.listener_port("main"))
            writer.write(encode_v1(("198.51.100.7", 51234), ("192.0.2.1", 443)))
            client = HttpClient(reader, writer)
            status, _, body = await client.request("GET", "/who")
            await client.close()
    await echo.close()
    assert status == 200
    seen_by_b = json.loads(body)["headers"]["x-forwarded-for"].split(",")[-1].strip()
    assert seen_by_b == "198.51.100.7"
