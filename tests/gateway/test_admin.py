"""Admin endpoint, reload (API and certificate watch) and in-process drain."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from pathlib import Path

from gateway.config import load_config
from gateway.echo import EchoService
from gateway.server import Gateway
from tests.gateway.conftest import write_config
from tests.gateway.helpers import HttpClient, base_doc, client_context


async def admin_get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read(-1)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def _start(doc, tmp_path) -> tuple[Gateway, Path]:
    path = write_config(tmp_path / "gw.yaml", doc)
    gateway = Gateway(load_config(path), config_path=path)
    await gateway.start()
    return gateway, path


async def test_admin_endpoints(pki, tmp_path):
    echo = await EchoService().start()
    doc = base_doc(pki, echo.port)
    doc["admin"] = {"port": 0, "cert_expiry_warning_days": 60}
    gateway, _ = await _start(doc, tmp_path)
    assert gateway.admin is not None
    admin = gateway.admin.port
    try:
        client = await HttpClient.open(gateway.listener_port("main"), client_context(pki))
        assert (await client.request("GET", "/x"))[0] == 200
        await client.close()
        assert await admin_get(admin, "/ready") == (200, b"ready\n")
        status, body = await admin_get(admin, "/metrics")
        text = body.decode()
        assert status == 200
        assert (
            'smgate_handshakes_total{cipher_suite="TLS_AES_256_GCM_SHA384",listener="main",protocol="tls1.3",'
            'result="success"} 1.0' in text
        )
        assert "smgate_handshake_seconds_bucket" in text
        assert 'smgate_requests_total{route="all",status="200"} 1.0' in text
        assert "smgate_audit_queue_depth" in text and "smgate_upstream_endpoint_healthy" in text
        stats = json.loads((await admin_get(admin, "/stats"))[1])
        assert stats["metrics"]["smgate_requests_total{route=all,status=200}"] == 1
        config = json.loads((await admin_get(admin, "/config"))[1])
        key = config["listeners"][0]["tls"]["certificates"][0]["tls_certificates"][0]["private_key"]
        assert key == "[redacted]"
        certs = json.loads((await admin_get(admin, "/certs"))[1])
        subjects = {c["subject"] for c in certs["certificates"]}
        assert "CN=server_rsa.test,O=smgate test" in subjects
        assert certs["expiring"]  # test certificates live 30 days, the warning window is 60
        assert (await admin_get(admin, "/reload"))[0] == 405
        assert (await admin_get(admin, "/nope"))[0] == 404
    finally:
        await gateway.stop()
        await echo.close()


async def test_reload_applies_to_every_next_request_and_rejects_bad_config(pki, tmp_path):
    a, b = await EchoService(name="a").start(), await EchoService(name="b").start()
    gateway, path = await _start(base_doc(pki, a.port), tmp_path)
    assert gateway.admin is not None
    admin = gateway.admin.port
    try:
        old = await HttpClient.open(gateway.listener_port("main"))
        assert (await old.request("GET", "/"))[1]["x-upstream"] == "a"
        write_config(path, base_doc(pki, b.port))
        status, body = await admin_get(admin, "/reload", "POST")
        assert status == 200 and json.loads(body)["reloaded"] is True
        new = await HttpClient.open(gateway.listener_port("main"))
        assert (await new.request("GET", "/"))[1]["x-upstream"] == "b"
        # the established connection, idle, was retired by the reload: closed, so no request of its
        # meets the old cluster any more
        assert await asyncio.wait_for(old.reader.read(), 5) == b""
        bad = base_doc(pki, b.port, routes=[{"name": "x", "route": {"cluster": "missing"}}])
        write_config(path, bad)
        status, body = await admin_get(admin, "/reload", "POST")
        assert status == 400
        assert json.loads(body)["errors"] == [
            "route_configs[0].virtual_hosts[0].routes[0].route.cluster: unknown cluster 'missing'"
        ]
        assert (await new.request("GET", "/"))[1]["x-upstream"] == "b"
        fresh = await HttpClient.open(gateway.listener_port("main"))
        assert (await fresh.request("GET", "/"))[1]["x-upstream"] == "b"
        for c in (old, new, fresh):
            await c.close()
    finally:
        await gateway.stop()
        await a.close()
        await b.close()


async def test_certificate_files_are_watched(pki, tmp_path):
    echo = await EchoService().start()
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(pki.server_ecdsa, cert)
    shutil.copy(pki.server_ecdsa_key, key)
    doc = base_doc(pki, echo.port)
    doc["listeners"][0]["tls"]["certificates"] = [
        {"name": "default", "tls_certificates": [{"cert_chain": str(cert), "private_key": str(key)}]}
    ]
    doc["admin"] = {"port": 0, "cert_watch_interval": 0.1}
    gateway, _ = await _start(doc, tmp_path)

    async def served_cn() -> str:
        c = await HttpClient.open(gateway.listener_port("main"), client_context(pki))
        peer = c.writer.get_extra_info("ssl_object").getpeercert()
        await c.close()
        return dict(x[0] for x in peer["subject"])["commonName"]

    try:
        assert await served_cn() == "server_ecdsa.test"
        shutil.copy(pki.other_key, key)  # a key that does not match: rejected, old certificate stays
        await asyncio.sleep(0.4)
        assert await served_cn() == "server_ecdsa.test"
        shutil.copy(pki.server_rsa, cert)
        shutil.copy(pki.server_rsa_key, key)
        for _ in range(30):
            await asyncio.sleep(0.1)
            if await served_cn() == "server_rsa.test":
                break
        assert await served_cn() == "server_rsa.test"
        reloads = {
            k: v for k, v in gateway.stats.as_json().items() if k.startswith("smgate_config_reloads_total")
        }
        assert reloads["smgate_config_reloads_total{result=success}"] >= 1
        assert reloads["smgate_config_reloads_total{result=rejected}"] >= 1
    finally:
        await gateway.stop()
        await echo.close()


async def test_drain_finishes_in_flight_requests(pki, tmp_path):
    echo = await EchoService().start()
    gateway, _ = await _start(base_doc(pki, echo.port), tmp_path)
    port = gateway.listener_port("main")
    busy = await HttpClient.open(port)
    idle = await HttpClient.open(port)
    assert (await idle.request("GET", "/"))[0] == 200
    in_flight = asyncio.create_task(busy.request("GET", "/delay/500"))
    await asyncio.sleep(0.1)
    stop = asyncio.create_task(gateway.stop())
    status, headers, _ = await in_flight
    assert status == 200 and headers["connection"] == "close"
    await stop
    assert await idle.reader.read(10) == b""  # idle keep-alive connection closed by the drain
    try:
        await asyncio.open_connection("127.0.0.1", port)
        refused = False
    except OSError:
        refused = True
    assert refused
    await echo.close()
    for c in (busy, idle):
        await c.close()


async def test_mtls_refusal_is_counted_in_handshakes(pki, tmp_path):
    echo = await EchoService().start()
    gateway, _ = await _start(base_doc(pki, echo.port, client_auth="required"), tmp_path)
    try:
        try:
            c = await HttpClient.open(gateway.listener_port("main"), client_context(pki, version="1.2"))
            await c.request("GET", "/")
        except (ssl.SSLError, ConnectionError):
            pass
        failures = {k: v for k, v in gateway.stats.as_json().items() if "result=failure" in k}
        assert sum(failures.values()) == 1
    finally:
        await gateway.stop()
        await echo.close()


def test_metrics_are_plain_counters_collected_at_scrape():
    from gateway.stats import GatewayStats

    class Live:
        def __init__(self) -> None:
            self.rx = 0

        def counts(self):
            return [(("main", "downstream_rx"), float(self.rx))]

    stats = GatewayStats()
    live = Live()
    stats.bytes.track(live)
    live.rx = 100
    assert stats.as_json()["smgate_bytes_total{direction=downstream_rx,listener=main}"] == 100
    stats.bytes.untrack(live)  # folded in when the source ends
    live.rx = 999
    assert stats.as_json()["smgate_bytes_total{direction=downstream_rx,listener=main}"] == 100
    route = stats.route("api")
    route.record(200, 0.002)
    route.record(503, 0.2)
    flat = stats.as_json()
    assert flat["smgate_requests_total{route=api,status=200}"] == 1
    assert flat["smgate_requests_total{route=api,status=503}"] == 1
    assert flat["smgate_request_seconds_count{route=api}"] == 2
    assert flat["smgate_request_seconds_bucket{le=0.0025,route=api}"] == 1
    assert b"smgate_requests_total" in stats.prometheus_text()
