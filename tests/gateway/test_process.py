"""Real `smgate serve` processes: standard clients (curl, openssl s_client), SIGHUP reload under traffic
with zero failed requests, bad config rejected while the old keeps serving, SIGTERM drain."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import h11
import pytest

from gateway.echo import EchoService
from tests.gateway.conftest import write_config
from tests.gateway.helpers import HttpClient, base_doc, client_context
from tests.gateway.process import DEFAULT_LOOP, serve
from tests.ports import free_port

CURL = "/usr/bin/curl"


@pytest.fixture
async def upstreams():
    a, b = await EchoService(name="a").start(), await EchoService(name="b").start()
    yield a, b
    await a.close()
    await b.close()


async def test_curl_and_openssl_against_a_served_gateway(pki, tmp_path, upstreams):
    a, _ = upstreams
    gw = await asyncio.to_thread(serve, write_config(tmp_path / "gw.yaml", base_doc(pki, a.port)))
    try:
        assert f"loop={DEFAULT_LOOP}" in gw.output()  # the default when uvloop is installed
        port = gw.port("main")
        for version in ("--tlsv1.3", "--tls-max 1.2"):
            out = await asyncio.to_thread(
                subprocess.run,
                [
                    CURL,
                    "-sS",
                    "--cacert",
                    str(pki.ca),
                    *version.split(),
                    "-w",
                    "\\n%{http_code} %{ssl_verify_result}",
                    f"https://localhost:{port}/curl",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert out.stdout.rstrip().endswith("200 0"), out.stderr
            assert '"path": "/curl"' in out.stdout
        for flag, expected in (("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")):
            out = await asyncio.to_thread(
                subprocess.run,
                [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{port}",
                    "-servername",
                    "localhost",
                    "-CAfile",
                    str(pki.ca),
                    flag,
                    "-brief",
                ],
                input="",
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert f"Protocol version: {expected}" in out.stderr + out.stdout
            assert "Verification: OK" in out.stderr + out.stdout
        out = await asyncio.to_thread(
            subprocess.run,
            [CURL, "-sS", f"http://127.0.0.1:{port}/plain"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert '"x-forwarded-proto": "http"' in out.stdout
    finally:
        assert gw.stop() == 0


async def _traffic(port: int, stop: asyncio.Event, results: list[tuple[int, str]], pki) -> None:
    """Keep-alive clients as browsers and pools are: a connection the gateway closed (a reload retires
    it when idle, or answers its request in flight with ``Connection: close``) is replaced, and a
    request that found it closed before any answer is sent again on the new one."""
    while not stop.is_set():
        client = await HttpClient.open(port, client_context(pki))
        for _ in range(5):
            try:
                status, headers, _ = await client.request("GET", "/load")
            except (ConnectionError, h11.RemoteProtocolError):
                break  # closed while idle: no answer came, so retrying is safe
            results.append((status, headers.get("x-upstream", "")))
            if headers.get("connection") == "close":
                break
        await client.close()


async def test_sighup_reload_under_traffic_and_bad_config(pki, tmp_path, upstreams):
    a, b = upstreams
    path = write_config(tmp_path / "gw.yaml", base_doc(pki, a.port))
    gw = await asyncio.to_thread(serve, path)
    try:
        port = gw.port("main")
        stop = asyncio.Event()
        results: list[tuple[int, str]] = []
        workers = [asyncio.create_task(_traffic(port, stop, results, pki)) for _ in range(4)]
        await asyncio.sleep(0.5)
        write_config(path, base_doc(pki, b.port))
        gw.signal(signal.SIGHUP)
        for _ in range(100):
            await asyncio.sleep(0.1)
            if results and results[-1][1] == "b":
                break
        bad = base_doc(pki, b.port)
        bad["listeners"][0]["tls"]["certificates"][0]["tls_certificates"][0]["private_key"] = "gone.key"
        write_config(path, bad)
        gw.signal(signal.SIGHUP)
        assert await asyncio.to_thread(gw.wait_for_output, "reload rejected")
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
        assert results and all(status == 200 for status, _ in results)
        assert results[0][1] == "a" and results[-1][1] == "b"
        assert "tls_certificates[0].private_key: file not found" in gw.output()
    finally:
        assert gw.stop() == 0


async def test_sigterm_drains_in_flight_requests(pki, tmp_path, upstreams):
    a, _ = upstreams
    gw = await asyncio.to_thread(serve, write_config(tmp_path / "gw.yaml", base_doc(pki, a.port)))
    port = gw.port("main")
    clients = [await HttpClient.open(port) for _ in range(3)]
    in_flight = [asyncio.create_task(c.request("GET", "/delay/800")) for c in clients]
    await asyncio.sleep(0.2)
    gw.signal(signal.SIGTERM)
    statuses = [r[0] for r in await asyncio.gather(*in_flight)]
    assert statuses == [200, 200, 200]
    assert await asyncio.to_thread(gw.proc.wait, 20) == 0
    for c in clients:
        await c.close()


async def test_workers_share_the_port(pki, tmp_path, upstreams):
    a, _ = upstreams
    port = free_port()
    doc = base_doc(pki, a.port, listener_port=port)
    doc["clusters"][0]["endpoints"] = [{"address": "localhost", "port": a.port}]  # a DNS name
    gw = await asyncio.to_thread(serve, write_config(tmp_path / "gw.yaml", doc), "--workers", "2")
    try:
        assert await asyncio.to_thread(gw.wait_for_output, "smgate supervisor ready"), gw.output()
        assert await asyncio.to_thread(gw.wait_for_count, f"listeners: main={port}\n", 2), gw.output()
        assert gw.output().count(f"listeners: main={port}\n") == 2, gw.output()
        for _ in range(10):
            client = await HttpClient.open(port)
            assert (await client.request("GET", "/w"))[0] == 200
            await client.close()
    finally:
        assert gw.stop() == 0
