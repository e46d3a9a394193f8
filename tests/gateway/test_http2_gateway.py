"""Downstream HTTP/2 through a running gateway: curl (ALPN h2 over TLS, h2c with prior knowledge), h2load
for concurrency and flow control, and the flood defences against raw sockets sending crafted frames."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import h2.config
import h2.connection
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
)

from gateway.echo import EchoService
from gateway.http2.flood import PREFACE
from tests.gateway.helpers import RecordingAudit, base_doc, running
from tests.ports import free_port

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("h2load")), reason="curl and h2load (nghttp2-client) needed"
)


@pytest.fixture
async def echo():
    service = await EchoService(name="a").start()
    yield service
    await service.close()


def h2_doc(pki, upstream_port: int, **hcm: object) -> dict:
    doc = base_doc(pki, upstream_port, listener_port=free_port())
    # Streams in flight become HTTP/1.1 connections to the in-process echo (backlog 100): room for them.
    doc["clusters"][0].update({"max_idle_connections": 512, "connect_timeout": 5})
    doc["listeners"][0]["tls"]["alpn"] = ["h2", "http/1.1"]
    doc["listeners"][0]["filter_chains"][0]["filters"][0].update({"h2c_prior_knowledge": True, **hcm})
    return doc


async def run_tool(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def curl(*args: str) -> tuple[str, int, bytes]:
    """(HTTP version, status, body) of one curl request."""
    code, out = await run_tool("curl", "-sS", "-w", "\n%{http_version} %{http_code}", *args)
    assert code == 0, out
    body, _, summary = out.rpartition("\n")
    version, status = summary.split()
    return version, int(status), body.encode()


async def test_curl_over_tls_negotiates_h2_and_is_routed(pki, echo):
    audit = RecordingAudit()
    async with running(h2_doc(pki, echo.port), audit=audit) as gw:
        url = f"https://localhost:{gw.listener_port('main')}"
        version, status, body = await curl("--http2", "--cacert", str(pki.ca), f"{url}/items?q=1")
        assert (version, status) == ("2", 200)
        seen = json.loads(body)
        assert seen["path"] == "/items?q=1" and seen["headers"]["x-forwarded-proto"] == "https"
        assert seen["headers"]["host"] == f"localhost:{gw.listener_port('main')}"
        version, status, body = await curl("--http2", "--cacert", str(pki.ca), "-d", "hello", f"{url}/post")
        assert (version, status, json.loads(body)["body_bytes"]) == ("2", 200, 5)
        version, status, _ = await curl("--http1.1", "--cacert", str(pki.ca), f"{url}/h1")
        assert (version, status) == ("1.1", 200)
    records = audit.of("http.request")
    h2_records = [r for r in records if r.get("http_version") == "HTTP/2"]
    assert [r["path"] for r in h2_records] == ["/items?q=1", "/post"]
    assert all(r["stream_id"] == 1 and r["protocol"] == "TLSv1.3" and r["status"] == 200 for r in h2_records)
    assert [r["path"] for r in records if r["http_version"] == "HTTP/1.1"] == ["/h1"]
    assert all(("stream_id" in r) is (r["http_version"] == "HTTP/2") for r in records)


async def test_h2c_prior_knowledge_beside_http1_on_a_plain_port(pki, echo):
    async with running(h2_doc(pki, echo.port)) as gw:
        url = f"http://127.0.0.1:{gw.listener_port('main')}"
        version, status, body = await curl("--http2-prior-knowledge", f"{url}/p")
        assert (version, status) == ("2", 200) and json.loads(body)["headers"]["x-forwarded-proto"] == "http"
        assert (await curl(f"{url}/h1"))[:2] == ("1.1", 200)
        assert (await curl("--http2-prior-knowledge", f"{url}/nothing-here/../status/503"))[1] == 503


async def test_h2c_is_off_unless_configured(pki, echo):
    doc = h2_doc(pki, echo.port, h2c_prior_knowledge=False)
    async with running(doc) as gw:
        code, _ = await run_tool(
            "curl", "-sS", "--http2-prior-knowledge", f"http://127.0.0.1:{gw.listener_port('main')}/"
        )
        assert code != 0  # the preface is a malformed HTTP/1.1 request: 400 and close


async def test_local_replies_over_h2(pki, echo):
    routes = [
        {"name": "direct", "match": {"prefix": "/direct"}, "direct_response": {"status": 201, "body": "d\n"}},
        {"name": "all", "match": {"prefix": "/api"}, "route": {"cluster": "echo"}},
    ]
    doc = h2_doc(pki, echo.port)
    doc["route_configs"][0]["virtual_hosts"][0]["routes"] = routes
    async with running(doc) as gw:
        url = f"http://127.0.0.1:{gw.listener_port('main')}"
        assert await curl("--http2-prior-knowledge", f"{url}/direct") == ("2", 201, b"d\n")
        assert await curl("--http2-prior-knowledge", f"{url}/none") == ("2", 404, b"no route\n")


async def test_h2load_many_streams_on_few_connections(pki, echo):
    async with running(h2_doc(pki, echo.port)) as gw:
        port = gw.listener_port("main")
        code, out = await run_tool("h2load", "-n", "400", "-c", "4", "-m", "16", f"http://127.0.0.1:{port}/")
        assert code == 0 and "400 succeeded, 0 failed, 0 errored" in out, out
        code, out = await run_tool(
            "h2load", "-n", "40", "-c", "2", "-m", "8", "-d", "/etc/services", f"http://127.0.0.1:{port}/post"
        )
        assert code == 0 and "40 succeeded" in out, out


async def test_flow_control_with_a_small_client_window(pki, echo):
    """A 1 MB response through 16 KB windows: the gateway queues per stream and sends as windows open."""
    async with running(h2_doc(pki, echo.port)) as gw:
        url = f"http://127.0.0.1:{gw.listener_port('main')}/bytes/1000000"
        code, out = await run_tool("h2load", "-n", "8", "-c", "2", "-m", "4", "-w", "14", "-W", "14", url)
        assert code == 0 and "8 succeeded" in out, out
        assert "8000000" in out.replace(",", "")  # every byte of every body arrived


# -- flood defences against a running gateway -------------------------------------------------------


def _client() -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    return conn


REQUEST = [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")]


def rapid_reset() -> bytes:
    attacker = _client()
    for i in range(300):
        attacker.send_headers(1 + 2 * i, REQUEST, end_stream=True)
        attacker.reset_stream(1 + 2 * i)
    return attacker.data_to_send()


def continuation_flood() -> bytes:
    data = PREFACE + SettingsFrame(0).serialize()
    headers = HeadersFrame(1)
    headers.data = b"\x00"
    data += headers.serialize()
    for _ in range(200):
        continuation = ContinuationFrame(1)
        continuation.data = b"\x00"
        data += continuation.serialize()
    return data


def ping_flood() -> bytes:
    return PREFACE + SettingsFrame(0).serialize() + PingFrame(0).serialize() * 500


def settings_flood() -> bytes:
    return PREFACE + SettingsFrame(0).serialize() * 500


async def goaway_of(port: int, attack: bytes) -> int | None:
    """Send ``attack`` on a fresh connection; the GOAWAY error code the gateway answers with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(attack)
    received = bytearray()
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                received += chunk
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    view = bytes(received)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(view[:9]))
        if frame.type == 0x7:
            return int.from_bytes(view[9 + 4 : 9 + 8], "big")
        view = view[9 + length :]
    return None


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        (rapid_reset, "rapid_reset"),
        (continuation_flood, "continuation_flood"),
        (ping_flood, "ping_flood"),
        (settings_flood, "settings_flood"),
    ],
)
async def test_floods_get_goaway_and_other_connections_keep_working(pki, echo, attack, reason):
    async with running(h2_doc(pki, echo.port)) as gw:
        port = gw.listener_port("main")
        url = f"http://127.0.0.1:{port}/"
        bystander = asyncio.create_task(run_tool("h2load", "-n", "200", "-c", "2", "-m", "4", url))
        assert await goaway_of(port, attack()) == ErrorCodes.ENHANCE_YOUR_CALM
        code, out = await bystander
        assert code == 0 and "200 succeeded, 0 failed" in out, out
        assert gw.generation.stats.http2_connection_errors.value(("main", reason)) == 1
        assert (await curl("--http2-prior-knowledge", url))[:2] == ("2", 200)


# -- upstream HTTP/2: a second gateway (h2 listener, HTTP/1.1 echo behind it) as the HTTP/2 host ---------


@pytest.mark.parametrize("upstream_transport", ["plain", "tls"])
async def test_http1_and_h2_clients_through_an_http2_cluster(pki, echo, upstream_transport):
    async with running(h2_doc(pki, echo.port)) as inner:
        doc = h2_doc(pki, echo.port)
        cluster = doc["clusters"][0]
        cluster["endpoints"][0]["port"] = inner.listener_port("main")
        cluster["http2_protocol_options"] = {"max_concurrent_streams": 50}
        if upstream_transport == "tls":
            cluster["transport_socket"] = {
                "type": "tls",
                "trust_anchors": str(pki.ca),
                "server_name": "localhost",
            }
        async with running(doc) as outer:
            url = f"http://127.0.0.1:{outer.listener_port('main')}"
            version, status, body = await curl("--http1.1", "-d", "abc", f"{url}/h1-in")
            seen = json.loads(body)
            assert (version, status, seen["body_bytes"], seen["path"]) == ("1.1", 200, 3, "/h1-in")
            # The inner gateway saw HTTP/2 from the outer one: its forwarded-proto is the outer hop's.
            expected_proto = "https" if upstream_transport == "tls" else "http"
            assert seen["headers"]["x-forwarded-proto"] == expected_proto
            assert seen["headers"]["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"
            version, status, body = await curl("--http2-prior-knowledge", f"{url}/bytes/300000", "-o", "-")
            assert (version, status, len(body)) == ("2", 200, 300000)
            code, out = await run_tool("h2load", "-n", "300", "-c", "3", "-m", "10", f"{url}/")
            assert code == 0 and "300 succeeded, 0 failed" in out, out
            code, out = await run_tool("h2load", "--h1", "-n", "100", "-c", "4", f"{url}/")
            assert code == 0 and "100 succeeded, 0 failed" in out, out
            hosts = outer.generation.clusters["echo"].hosts
            # Streams shared connections: far fewer upstream connections than requests.
            assert 1 <= len(hosts[0].shared) <= 8 and hosts[0].active_requests == 0


def test_config_refuses_http2_with_a_custom_codec(pki):
    from gateway.config import ConfigError, parse_config

    doc = h2_doc(pki, 1, codec="examples.rpc_codec:RpcCodecFactory")
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    assert "filters[0].codec: HTTP/2 (ALPN h2 or h2c_prior_knowledge) needs the http1 codec" in str(
        refused.value
    )


async def test_clients_dropping_streams_in_flight_are_not_upstream_failures(pki, echo):
    """h2load -D stops with streams in flight: their responses find the client gone. That ends those
    exchanges; it is no fault of the upstream (no upstream.fail, no ejection)."""
    audit = RecordingAudit()
    async with running(h2_doc(pki, echo.port), audit=audit) as gw:
        url = f"http://127.0.0.1:{gw.listener_port('main')}/"
        for _ in range(2):
            code, out = await run_tool("h2load", "-c", "8", "-m", "10", "-D", "1", url)
            assert code == 0 and " 0 failed" in out, out
        await asyncio.sleep(0.3)
        (host,) = gw.generation.clusters["echo"].hosts
        assert host.available(0.0) and host.active_requests == 0
    assert audit.of("upstream.fail") == []


async def test_upstream_goaway_lets_open_streams_finish_and_moves_new_ones(pki):
    """An HTTP/2 host says GOAWAY while answering: the stream it had accepted still completes, the
    connection takes no new stream, and the next request opens a new connection."""
    import h2.events

    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        connections.append(len(connections) + 1)
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamEnded):
                    writer.write(conn.data_to_send())
                    goaway = GoAwayFrame(0)  # before the answer (written by hand: h2 would close)
                    goaway.last_stream_id = event.stream_id
                    writer.write(goaway.serialize())
                    await writer.drain()
                    await asyncio.sleep(0.1)
                    headers = [(":status", "200"), ("content-length", "4")]
                    conn.send_headers(event.stream_id, headers)
                    conn.send_data(event.stream_id, b"done", end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        doc = h2_doc(pki, port)
        doc["clusters"][0]["http2_protocol_options"] = {}
        async with running(doc) as gw:
            url = f"http://127.0.0.1:{gw.listener_port('main')}/"
            assert await curl("--http2-prior-knowledge", url) == ("2", 200, b"done")
            assert await curl("--http1.1", url) == ("1.1", 200, b"done")
            assert connections == [1, 2]
    finally:
        server.close()
