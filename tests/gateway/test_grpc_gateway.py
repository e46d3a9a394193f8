"""gRPC through a running gateway: a grpcio client and a grpcio server, HTTP/2 on both sides (h2c and TLS
with client certificates downstream, an ``http2_protocol_options`` cluster upstream).

The service speaks raw bytes (no generated stubs): unary, server streaming, client streaming, bidi, a
method that fails with trailers of its own, and one that outlives its deadline.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gateway.echo import EchoService
from tests.gateway.helpers import RecordingAudit, base_doc, running
from tests.ports import free_port

SERVICE = "test.Echo"


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.send_initial_metadata((("x-initial", "yes"),))
    context.set_trailing_metadata((("x-trailer", "kept"),))
    return b"echo:" + request


async def _server_stream(request: bytes, context: grpc.aio.ServicerContext):
    for i in range(int(request)):
        yield f"part-{i}".encode() * 100


async def _client_stream(requests, context: grpc.aio.ServicerContext) -> bytes:
    return b"|".join([r async for r in requests])


async def _bidi(requests, context: grpc.aio.ServicerContext):
    async for request in requests:
        yield request[::-1]


async def _fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    return b""


async def _guarded(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"secret"


async def _slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(float(request))
    return b"late"


@pytest.fixture
async def grpc_upstream():
    server = grpc.aio.server()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(_fail),
        "Slow": grpc.unary_unary_rpc_method_handler(_slow),
        "Guarded": grpc.unary_unary_rpc_method_handler(_guarded),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    yield port
    await server.stop(None)


@pytest.fixture
async def echo():
    service = await EchoService(name="h1").start()
    yield service
    await service.close()


def grpc_doc(pki, grpc_port: int, h1_port: int, client_auth: str = "optional") -> dict:
    routes = [
        {
            "name": "guarded",
            "match": {"prefix": f"/{SERVICE}/Guarded"},
            "access": {"allow": [{"subject": "CN=client.test"}]},
            "route": {"cluster": "grpc"},
        },
        {"name": "h1-only", "match": {"prefix": "/test.H1/"}, "route": {"cluster": "echo"}},
        {"name": "down", "match": {"prefix": "/test.Down/"}, "route": {"cluster": "dead"}},
        {"name": "slow", "match": {"prefix": f"/{SERVICE}/Slow"}, "route": {"cluster": "grpc", "timeout": 1}},
        {"name": "grpc", "match": {"prefix": f"/{SERVICE}/"}, "route": {"cluster": "grpc"}},
    ]
    doc = base_doc(pki, h1_port, routes=routes, client_auth=client_auth, listener_port=free_port())
    doc["listeners"][0]["tls"]["alpn"] = ["h2", "http/1.1"]
    doc["listeners"][0]["filter_chains"][0]["filters"][0]["h2c_prior_knowledge"] = True
    doc["clusters"] += [
        {
            "name": "grpc",
            "http2_protocol_options": {},
            "endpoints": [{"address": "127.0.0.1", "port": grpc_port}],
        },
        {
            "name": "dead",
            "http2_protocol_options": {},
            "connect_timeout": 0.5,
            "outlier_detection": None,
            "endpoints": [{"address": "127.0.0.1", "port": free_port()}],
        },
    ]
    return doc


def _method(channel: grpc.aio.Channel, kind: str, name: str, service: str = SERVICE):
    return getattr(channel, kind)(f"/{service}/{name}")


async def _exercise(channel: grpc.aio.Channel) -> None:
    call = _method(channel, "unary_unary", "Unary")(b"hi")
    assert await call == b"echo:hi"
    assert ("x-initial", "yes") in tuple(await call.initial_metadata())
    assert ("x-trailer", "kept") in tuple(await call.trailing_metadata())

    parts = [m async for m in _method(channel, "unary_stream", "ServerStream")(b"50")]
    assert parts == [f"part-{i}".encode() * 100 for i in range(50)]

    async def requests():
        for i in range(20):
            yield f"r{i}".encode()

    joined = await _method(channel, "stream_unary", "ClientStream")(requests())
    assert joined == b"|".join(f"r{i}".encode() for i in range(20))

    bidi = _method(channel, "stream_stream", "Bidi")()
    for word in (b"abc", b"hello", b"x" * 100_000):
        await bidi.write(word)
        assert await bidi.read() == word[::-1]
    await bidi.done_writing()
    assert await bidi.read() == grpc.aio.EOF

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await _method(channel, "unary_unary", "Fail")(b"")
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND and failed.value.details() == "no such thing"


async def test_unary_and_streaming_over_h2c(pki, grpc_upstream, echo):
    audit = RecordingAudit()
    async with running(grpc_doc(pki, grpc_upstream, echo.port), audit=audit) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.listener_port('main')}") as channel:
            await _exercise(channel)
    records = [r for r in audit.of("http.request") if r["path"].startswith(f"/{SERVICE}/")]
    assert len(records) == 5
    assert all(r["http_version"] == "HTTP/2" and r["cluster"] == "grpc" for r in records)
    assert all(r["status"] == 200 for r in records)


async def test_gateway_made_errors_are_grpc_statuses(pki, grpc_upstream, echo):
    async with running(grpc_doc(pki, grpc_upstream, echo.port)) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.listener_port('main')}") as channel:
            cases = [
                ("test.Nothing", "Call", grpc.StatusCode.UNIMPLEMENTED),
                ("test.H1", "Call", grpc.StatusCode.UNAVAILABLE),  # HTTP/1.1-only cluster
                ("test.Down", "Call", grpc.StatusCode.UNAVAILABLE),
                (SERVICE, "Guarded", grpc.StatusCode.PERMISSION_DENIED),  # no client certificate
            ]
            for service, name, code in cases:
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await _method(channel, "unary_unary", name, service)(b"")
                assert failed.value.code() == code, (service, failed.value)


async def test_deadline_and_cancellation(pki, grpc_upstream, echo):
    async with running(grpc_doc(pki, grpc_upstream, echo.port)) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.listener_port('main')}") as channel:
            slow = _method(channel, "unary_unary", "Slow")
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await slow(b"5", timeout=0.3)  # grpc-timeout shorter than the route's 1 s
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await slow(b"5")  # no client deadline: the route timeout answers
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            call = slow(b"5")
            await asyncio.sleep(0.2)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await _method(channel, "unary_unary", "Unary")(b"after") == b"echo:after"
            await asyncio.sleep(0.2)
            assert all(not h.active_requests for c in gw.generation.clusters.values() for h in c.hosts)


async def test_tls_with_client_certificate_access_control(pki, grpc_upstream, echo):
    doc = grpc_doc(pki, grpc_upstream, echo.port)
    async with running(doc) as gw:
        target = f"127.0.0.1:{gw.listener_port('main')}"
        options = (("grpc.ssl_target_name_override", "localhost"),)
        ca = pki.ca.read_bytes()
        with_cert = grpc.ssl_channel_credentials(ca, pki.client_key.read_bytes(), pki.client.read_bytes())
        async with grpc.aio.secure_channel(target, with_cert, options) as channel:
            await _exercise(channel)
            assert await _method(channel, "unary_unary", "Guarded")(b"") == b"secret"
        async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca), options) as channel:
            assert await _method(channel, "unary_unary", "Unary")(b"anon") == b"echo:anon"
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await _method(channel, "unary_unary", "Guarded")(b"")
            assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_grpc_health_check_follows_the_serving_status(pki, echo):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer

    server = grpc.aio.server()
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health.set("test.Echo", health_pb2.HealthCheckResponse.SERVING)
    doc = grpc_doc(pki, port, echo.port)
    doc["clusters"][1]["health_checks"] = {
        "type": "grpc",
        "service_name": "test.Echo",
        "interval": 0.1,
        "timeout": 0.5,
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
    }
    try:
        async with running(doc) as gw:
            (host,) = gw.generation.clusters["grpc"].hosts

            async def settles(healthy: bool) -> None:
                async with asyncio.timeout(5):
                    while host.healthy is not healthy:
                        await asyncio.sleep(0.05)

            await asyncio.sleep(0.3)
            assert host.healthy
            await health.set("test.Echo", health_pb2.HealthCheckResponse.NOT_SERVING)
            await settles(False)
            await health.set("test.Echo", health_pb2.HealthCheckResponse.SERVING)
            await settles(True)
            await server.stop(None)
            await settles(False)
    finally:
        await server.stop(None)


async def test_one_served_listener_for_grpc_curl_h2load_and_websocket(pki, grpc_upstream, echo, tmp_path):
    """The issue's "done when", over TLS: a real `smgate serve` process with the audit trail on; a grpcio
    client with a client certificate (unary and streaming), curl --http2, h2load and a WebSocket client
    on the same listener; one audit record per call."""
    import json

    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve as ws_serve

    from audit.keys import write_audit_key
    from tests.gateway.conftest import write_config
    from tests.gateway.helpers import client_context
    from tests.gateway.process import serve

    async def ws_echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    ws_port = free_port()
    async with ws_serve(ws_echo, "127.0.0.1", ws_port):
        doc = grpc_doc(pki, grpc_upstream, echo.port)
        routes = doc["route_configs"][0]["virtual_hosts"][0]["routes"]
        routes.insert(0, {"name": "ws", "match": {"prefix": "/chat"}, "route": {"cluster": "ws"}})
        doc["clusters"].append({"name": "ws", "endpoints": [{"address": "127.0.0.1", "port": ws_port}]})
        doc["listeners"][0]["tls"]["protocols"] = ["tls1.3", "tls1.2"]
        write_audit_key(tmp_path / "chain.key")
        doc["audit"] = {
            "key_file": str(tmp_path / "chain.key"),
            "pipeline": "thread",
            "sinks": [{"type": "file", "directory": str(tmp_path / "log")}],
        }
        gw = await asyncio.to_thread(serve, write_config(tmp_path / "gw.yaml", doc))
        try:
            port = gw.port("main")
            target = f"127.0.0.1:{port}"
            options = (("grpc.ssl_target_name_override", "localhost"),)
            creds = grpc.ssl_channel_credentials(
                pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client.read_bytes()
            )
            async with grpc.aio.secure_channel(target, creds, options) as channel:
                await _exercise(channel)
                assert await _method(channel, "unary_unary", "Guarded")(b"") == b"secret"
            code, out = await asyncio.to_thread(
                _run,
                "curl",
                "-sS",
                "--http2",
                "--cacert",
                str(pki.ca),
                "-w",
                "\n%{http_version}",
                f"https://localhost:{port}/test.H1/curl",
            )
            assert code == 0 and out.endswith("\n2"), out
            code, out = await asyncio.to_thread(
                _run, "h2load", "-n", "100", "-c", "2", "-m", "10", f"https://127.0.0.1:{port}/test.H1/x"
            )
            assert "100 succeeded" in out and "Application protocol: h2" in out, out
            async with connect(f"wss://localhost:{port}/chat", ssl=client_context(pki)) as ws:
                await ws.send("through smgate serve")
                assert await ws.recv() == "through smgate serve"
        finally:
            assert gw.stop() == 0
    records = [
        json.loads(line)
        for path in sorted((tmp_path / "log").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    calls = [r for r in records if r["event"] == "http.request" and r["path"].startswith(f"/{SERVICE}/")]
    assert len(calls) == 6, calls
    assert all(
        r["http_version"] == "HTTP/2" and r["client_cert"]["subject"].startswith("CN=client.test")
        for r in calls
    )
    (ws_record,) = [r for r in records if r["event"] == "http.request" and r["path"] == "/chat"]
    assert ws_record["status"] == 101 and ws_record["http_version"] == "HTTP/1.1"


def _run(*args: str) -> tuple[int, str]:
    import subprocess

    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr
