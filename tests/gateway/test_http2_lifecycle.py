"""HTTP/2 stream and connection lifecycle through a running gateway, seen by a raw ``h2`` client: GOAWAY
when the gateway drains, per-stream timeouts, request trailers, WebSocket over HTTP/2 (RFC 8441)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import h11
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import Protocol, Side, State

from gateway.echo import EchoService
from tests.gateway.h2_peers import RawH2Client, RawH2Server
from tests.gateway.helpers import RecordingAudit, base_doc, running
from tests.ports import free_port

MAX_STREAM_ID = 2**31 - 1


@pytest.fixture
async def echo():
    service = await EchoService(name="a").start()
    yield service
    await service.close()


def h2c_doc(pki, upstream_port: int, **hcm: object) -> dict:
    doc = base_doc(pki, upstream_port, listener_port=free_port())
    doc["listeners"][0]["filter_chains"][0]["filters"][0].update({"h2c_prior_knowledge": True, **hcm})
    return doc


# -- drain -----------------------------------------------------------------------------------------


async def test_drain_sends_a_notice_then_the_final_goaway_and_lets_streams_finish(pki, echo):
    audit = RecordingAudit()
    doc = h2c_doc(pki, echo.port, http2_drain_notice=0.3)
    doc["drain_timeout"] = 10
    async with running(doc, audit=audit) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        slow = client.request("/delay/800")
        await asyncio.sleep(0.1)
        stop = asyncio.create_task(gw.stop())
        await client.wait_for(lambda: len(client.goaways) == 1)
        notice = client.goaways[0]
        assert (notice.error_code, notice.last_stream_id) == (ErrorCodes.NO_ERROR, MAX_STREAM_ID)
        racing = client.request("/raced")  # sent before the final GOAWAY: still served
        await client.wait_for(lambda: len(client.goaways) == 2)
        final = client.goaways[1]
        assert (final.error_code, final.last_stream_id) == (ErrorCodes.NO_ERROR, racing)
        late = client.request("/late")  # after the final GOAWAY: refused, safe to retry elsewhere
        await client.wait_for(lambda: client.ended(late) and client.ended(slow) and client.ended(racing))
        assert client.reset_code(late) == ErrorCodes.REFUSED_STREAM
        assert client.status(slow) == 200 and client.status(racing) == 200
        await client.wait_for(lambda: client.closed)  # closed once idle, not at drain_timeout
        await stop
        await client.close()
    paths = sorted(r["path"] for r in audit.of("http.request"))
    assert paths == ["/delay/800", "/raced"]
    assert all(r["status"] == 200 for r in audit.of("http.request"))


async def test_drain_without_notice_and_an_idle_connection(pki, echo):
    doc = h2c_doc(pki, echo.port, http2_drain_notice=None)
    async with running(doc) as gw:
        busy = await RawH2Client.open(gw.listener_port("main"))
        idle = await RawH2Client.open(gw.listener_port("main"))
        done = idle.request("/one")
        await idle.wait_for(lambda: idle.ended(done))
        slow = busy.request("/delay/500")
        await asyncio.sleep(0.1)
        stop = asyncio.create_task(gw.stop())
        await idle.wait_for(lambda: idle.closed)
        assert [(g.error_code, g.last_stream_id) for g in idle.goaways] == [(ErrorCodes.NO_ERROR, done)]
        await busy.wait_for(lambda: busy.goaways != [])
        assert busy.goaways[0].last_stream_id == slow and not busy.ended(slow)
        await busy.wait_for(lambda: busy.closed)
        assert busy.status(slow) == 200
        await stop
        for client in (busy, idle):
            await client.close()


async def test_drain_timeout_aborts_streams_still_in_flight(pki, echo):
    audit = RecordingAudit()
    doc = h2c_doc(pki, echo.port, http2_drain_notice=0.1)
    doc["drain_timeout"] = 0.5
    async with running(doc, audit=audit) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        stuck = client.request("/delay/5000")
        await asyncio.sleep(0.1)
        await gw.stop()
        await client.wait_for(lambda: client.closed)
        assert [g.last_stream_id for g in client.goaways] == [MAX_STREAM_ID, stuck]
        assert client.status(stuck) is None
        await client.close()
    (record,) = audit.of("http.request")
    assert record["path"] == "/delay/5000" and record["status"] != 200


def test_config_refuses_a_drain_notice_longer_than_the_drain_and_allow_connect_on_a_cluster(pki):
    from gateway.config import ConfigError, parse_config

    doc = h2c_doc(pki, 1, http2_drain_notice=30)
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    assert "listeners[0].filter_chains[0].filters[0].http2_drain_notice: 30.0 s leaves no time" in str(
        refused.value
    )
    doc = h2c_doc(pki, 1)
    doc["clusters"][0]["http2_protocol_options"] = {"allow_connect": True}
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    assert "clusters[0]" in str(refused.value) and "allow_connect is for listeners" in str(refused.value)


# -- per-stream timeouts ---------------------------------------------------------------------------


async def test_request_timeout_applies_per_stream(pki, echo):
    """A stream whose request does not end within request_timeout gets 408; its neighbours carry on."""
    audit = RecordingAudit()
    async with running(h2c_doc(pki, echo.port, request_timeout=0.5), audit=audit) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        dripping = client.request("/post", "POST", end_stream=False)
        client.send(dripping, b"part of a body")
        await asyncio.sleep(0.2)
        whole = client.request("/whole")
        await client.wait_for(lambda: client.ended(dripping) and client.ended(whole))
        assert client.status(dripping) == 408 and client.body(dripping) == b"request timeout\n"
        assert client.status(whole) == 200 and not client.closed
        again = client.request("/again")
        await client.wait_for(lambda: client.ended(again))
        assert client.status(again) == 200
        await client.close()
    timed_out = [r for r in audit.of("http.request") if r["path"] == "/post"]
    assert [(r["status"], r["error"]) for r in timed_out] == [(408, "request timeout")]


@pytest.fixture
async def h2_upstream():
    server = await RawH2Server().start(free_port())
    yield server
    await server.close()


def h2_upstream_doc(pki, upstream: RawH2Server, **hcm: object) -> dict:
    assert upstream.server is not None
    doc = h2c_doc(pki, upstream.server.sockets[0].getsockname()[1], **hcm)
    doc["clusters"][0]["http2_protocol_options"] = {}
    doc["route_configs"][0]["virtual_hosts"][0]["routes"] = [
        {"name": "hang", "match": {"prefix": "/hang"}, "route": {"cluster": "echo", "timeout": 0.5}},
        {"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "echo"}},
    ]
    return doc


async def test_route_timeout_per_stream_answers_504_and_cancels_the_upstream_stream(pki, h2_upstream):
    async with running(h2_upstream_doc(pki, h2_upstream)) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        hanging = client.request("/hang")
        answered = client.request("/fine")
        await client.wait_for(lambda: client.ended(hanging) and client.ended(answered))
        assert client.status(hanging) == 504 and client.status(answered) == 200
        await client.close()
        await asyncio.sleep(0.1)
    assert [code for _, code in h2_upstream.resets] == [ErrorCodes.CANCEL]


async def test_grpc_route_timeout_is_deadline_exceeded_and_cancels_the_call_upstream(pki):
    import grpc

    cancelled = asyncio.Event()

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b"late"

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(slow)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Slow", {"Call": handler}),))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        doc = h2c_doc(pki, port)
        doc["clusters"][0]["http2_protocol_options"] = {}
        doc["route_configs"][0]["virtual_hosts"][0]["routes"][0]["route"]["timeout"] = 0.5
        async with running(doc) as gw:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.listener_port('main')}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await channel.unary_unary("/test.Slow/Call")(b"")
                assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            async with asyncio.timeout(5):
                await cancelled.wait()  # the gateway reset the upstream stream (CANCEL)
    finally:
        await server.stop(None)


# -- request trailers ------------------------------------------------------------------------------

TRAILERS = (("x-checksum", "c1"), ("x-client-cert-subject", "CN=forged"))


async def test_request_trailers_reach_an_http2_upstream(pki, h2_upstream):
    async with running(h2_upstream_doc(pki, h2_upstream)) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        stream = client.request("/t", "POST", end_stream=False)
        client.send(stream, b"abc")
        client.send_trailers(stream, TRAILERS)
        await client.wait_for(lambda: client.ended(stream))
        assert client.status(stream) == 200
        seen = json.loads(client.body(stream))
        # Identity headers are the gateway's alone, in trailers as in the head.
        assert seen["body"] == 3 and seen["trailers"] == [["x-checksum", "c1"]]
        await client.close()


async def _h1_reporting_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP/1.1 upstream answering with the framing, body size and trailers it received."""
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                break
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            seen: dict = {"headers": dict((k.decode(), v.decode()) for k, v in event.headers), "body": 0}
        elif isinstance(event, h11.Data):
            seen["body"] += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            seen["trailers"] = [[k.decode(), v.decode()] for k, v in event.headers]
            body = json.dumps(seen).encode()
            response = h11.Response(status_code=200, headers=[("content-length", str(len(body)))])
            writer.write(conn.send(response) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            conn.start_next_cycle()
        else:
            break
    writer.close()


async def test_request_trailers_to_an_http1_upstream_go_in_a_chunked_body_or_are_counted_as_dropped(pki):
    port = free_port()
    upstream = await asyncio.start_server(_h1_reporting_upstream, "127.0.0.1", port)
    try:
        async with running(h2c_doc(pki, port)) as gw:
            client = await RawH2Client.open(gw.listener_port("main"))
            unknown_length = client.request("/chunked", "POST", end_stream=False)
            client.send(unknown_length, b"abc")
            client.send_trailers(unknown_length, TRAILERS)
            declared = client.request("/declared", "POST", (("content-length", "3"),), end_stream=False)
            client.send(declared, b"abc")
            client.send_trailers(declared, TRAILERS)
            plain = client.request("/plain", "POST", end_stream=False)
            client.send(plain, b"abcdef", end_stream=True)
            await client.wait_for(lambda: all(client.ended(s) for s in (unknown_length, declared, plain)))
            chunked, by_length, no_trailers = (
                json.loads(client.body(s)) for s in (unknown_length, declared, plain)
            )
            assert chunked["headers"]["transfer-encoding"] == "chunked" and chunked["body"] == 3
            assert chunked["trailers"] == [["x-checksum", "c1"]]
            assert by_length["headers"]["content-length"] == "3" and by_length["body"] == 3
            assert by_length["trailers"] == []
            assert no_trailers["body"] == 6 and no_trailers["trailers"] == []
            assert gw.generation.stats.request_trailers_dropped.value(("echo",)) == 1
            await client.close()
    finally:
        upstream.close()


# -- WebSocket over HTTP/2 (extended CONNECT, RFC 8441) ----------------------------------------------


class WebSocketOverStream:
    """The client side of WebSocket framing (websockets' sans-I/O protocol) on one HTTP/2 stream."""

    def __init__(self, client: RawH2Client, stream_id: int) -> None:
        self.client = client
        self.stream_id = stream_id
        self.protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
        self._read = 0

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(message)
        await self.client.send_all(self.stream_id, b"".join(self.protocol.data_to_send()))

    async def recv(self) -> Frame:
        while True:
            for event in self.protocol.events_received():
                assert isinstance(event, Frame)
                return event
            await self.client.wait_for(lambda: len(self.client.body(self.stream_id)) > self._read)
            body = self.client.body(self.stream_id)
            self.protocol.receive_data(body[self._read :])
            self._read = len(body)
            replies = b"".join(self.protocol.data_to_send())  # pongs, the answer to a close
            if replies:
                await self.client.send_all(self.stream_id, replies)


CONNECT_WEBSOCKET = ((":protocol", "websocket"), ("sec-websocket-version", "13"))


async def test_websocket_over_http2_extended_connect(pki, ws_upstream):
    audit = RecordingAudit()
    doc = h2c_doc(pki, ws_upstream, http2_protocol_options={"allow_connect": True})
    async with running(doc, audit=audit) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        assert client.remote_settings[SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
        stream = client.request("/chat", "CONNECT", CONNECT_WEBSOCKET, end_stream=False)
        await client.wait_for(lambda: client.status(stream) is not None)
        assert client.status(stream) == 200 and "sec-websocket-accept" not in client.headers(stream)
        ws = WebSocketOverStream(client, stream)
        for message in ("hello", b"\x00\x01binary", os.urandom(300_000)):  # beyond the stream windows
            await ws.send(message)
            frame = await ws.recv()
            assert frame.data == (message.encode() if isinstance(message, str) else message)
        neighbour = client.request("/plain-get")  # the connection carries other streams meanwhile
        await ws.send("close-please")
        close = await ws.recv()
        assert close.opcode == Opcode.CLOSE and Close.parse(close.data).code == 4000
        await client.wait_for(lambda: client.ended(stream) and client.ended(neighbour))
        assert client.reset_code(stream) is None  # the upstream closed: END_STREAM, not a reset
        await client.close()
        await asyncio.sleep(0.1)
    (record,) = [r for r in audit.of("http.request") if r["path"] == "/chat"]
    assert (record["method"], record["status"], record["reason"]) == ("GET", 200, "upgrade")
    assert record["http_version"] == "HTTP/2" and record["stream_id"] == stream
    assert record["bytes_received"] > 300_000 and record["bytes_sent"] > 300_000


async def test_extended_connect_idle_timeout_and_refused_unless_allowed(pki, ws_upstream):
    doc = h2c_doc(pki, ws_upstream, upgrade_idle_timeout=0.3, http2_protocol_options={"allow_connect": True})
    async with running(doc) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        stream = client.request("/idle", "CONNECT", CONNECT_WEBSOCKET, end_stream=False)
        await client.wait_for(lambda: client.ended(stream))  # idle: the tunnel ends with the stream
        assert client.status(stream) == 200 and not client.closed
        await client.close()
    async with running(h2c_doc(pki, ws_upstream)) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        assert client.remote_settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 0
        client.h2.remote_settings[SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1  # as if it had been sent
        stream = client.request("/chat", "CONNECT", CONNECT_WEBSOCKET, end_stream=False)
        await client.wait_for(lambda: client.ended(stream))
        assert client.reset_code(stream) == ErrorCodes.PROTOCOL_ERROR
        await client.close()


async def test_extended_connect_refused_upstream_is_relayed_and_early_bytes_reopen_the_window(pki, echo):
    """The echo answers the Upgrade late, and not with 101: its answer is relayed on the stream. The
    tunnel bytes the client sent meanwhile were held unacknowledged (the stream window bounds them);
    they are released with the stream, else six such streams would exhaust the 4 MB connection window."""
    doc = h2c_doc(pki, echo.port, http2_protocol_options={"allow_connect": True})
    async with running(doc) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        for _ in range(6):
            stream = client.request("/delay/200", "CONNECT", CONNECT_WEBSOCKET, end_stream=False)
            await client.send_all(stream, b"x" * 900_000)
            await client.wait_for(lambda: client.ended(stream))  # noqa: B023
            assert client.status(stream) == 200 and b"upgrade refused" in client.body(stream)
        await client.close()
