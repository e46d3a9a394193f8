"""Gateway benchmark: what the gateway costs against talking to the upstream directly, same run.

Usage: ``.venv/bin/python bench/gateway.py [--duration 3] [--concurrency 8] [--bulk-mb 64] [--no-uvloop]``

Three processes: the upstreams (HTTP echo, a TCP byte source, and "direct" TLS 1.3, TLCP and TLS 1.3-SM
servers answering one small HTTP request), ``smgate serve`` (one listener speaking TLCP + TLS +
TLS 1.3-SM + plain, HTTP routed to the echo; one TCP-proxy listener in front of the byte source) and
this load generator. It measures, through the gateway and directly:

* handshakes/s, full and resumed, TLCP (ECC_SM4_GCM_SM3), TLS 1.3 and TLS 1.3-SM (RFC 8998,
  TLS_SM4_GCM_SM3; direct = the same engine without the gateway) — each connection also carries one
  small HTTP request, so the resumed case can collect the session ticket the same way on both paths;
* requests/s and p50/p99 latency of small keep-alive HTTP requests (plaintext, ``--concurrency``);
* MB/s of one bulk TCP download.

It prints a table with the ratio gateway/direct. On a shared 2-core machine the absolute figures move
run to run; the ratios are the point. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certs.demo import DemoPKI, ensure_demo_pki  # noqa: E402
from gateway.echo import EchoService  # noqa: E402
from tls.tlcp import CipherSuite, SessionCache, TLCPConfiguration  # noqa: E402
from tls.tlcp.aio import TLCPStream, start_tlcp_server, tlcp_connect  # noqa: E402
from tls.tls13 import CipherSuite as Tls13Suite  # noqa: E402
from tls.tls13 import SessionTicketKeys, SM2Credential, TLS13Configuration  # noqa: E402
from tls.tls13.aio import TLS13Stream, start_tls13_server, tls13_connect  # noqa: E402

REQUEST = b"GET /bench HTTP/1.1\r\nHost: localhost\r\n\r\n"
SMALL_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"


# -- upstream process ---------------------------------------------------------------------------


def _upstreams(state: str, bulk_bytes: int, ports: multiprocessing.Queue) -> None:
    demo = DemoPKI.at(Path(state))

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        block = b"s" * 65536
        sent = 0
        while sent < bulk_bytes:
            writer.write(block)
            sent += len(block)
            await writer.drain()
        writer.close()

    async def tlcp_handler(stream: TLCPStream | TLS13Stream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.read(4096)
            if not chunk:
                return
            data += chunk
        stream.write(SMALL_RESPONSE)
        await stream.drain()

    async def main() -> None:
        echo = await EchoService(name="bench").start()
        src = await asyncio.start_server(source, "127.0.0.1", 0)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(demo.rsa.server.cert, demo.rsa.server.key)
        direct_tls = await EchoService(name="direct-tls").start(ssl=ctx)
        server_set = demo.server_certificate_set()
        cache = SessionCache(4096)
        tlcp = await start_tlcp_server(
            "127.0.0.1",
            0,
            lambda: TLCPConfiguration(
                is_client=False, certificate_set=server_set, session_cache=cache, verify_peer=False
            ),
            tlcp_handler,
        )
        sm_configuration = TLS13Configuration(
            is_client=False,
            credential=SM2Credential.from_certificate_set(server_set),
            ticket_keys=SessionTicketKeys(),
            verify_peer=False,
        )
        tls13_sm = await start_tls13_server("127.0.0.1", 0, lambda: sm_configuration, tlcp_handler)
        ports.put(
            {
                "echo": echo.port,
                "source": src.sockets[0].getsockname()[1],
                "direct_tls": direct_tls.port,
                "direct_tlcp": tlcp.sockets[0].getsockname()[1],
                "direct_tls13_sm": tls13_sm.sockets[0].getsockname()[1],
            }
        )
        await asyncio.Event().wait()

    asyncio.run(main())


# -- gateway process ----------------------------------------------------------------------------


def gateway_config(demo: DemoPKI, ports: dict[str, int]) -> dict[str, object]:
    sm2 = demo.sm2
    return {
        "listeners": [
            {
                "name": "edge",
                "address": "127.0.0.1",
                "port": 0,
                "tls": {
                    "protocols": ["tlcp", "tls1.3", "tls1.2", "tls1.3-sm", "plain"],
                    "certificates": [
                        {
                            "name": "default",
                            "sign_cert": str(sm2.server_sign.cert),
                            "sign_key": str(sm2.server_sign.key),
                            "enc_cert": str(sm2.server_enc.cert),
                            "enc_key": str(sm2.server_enc.key),
                            "chain": str(sm2.chain),
                            "tls_certificates": [
                                {
                                    "cert_chain": str(demo.rsa.server.cert),
                                    "private_key": str(demo.rsa.server.key),
                                }
                            ],
                        }
                    ],
                },
                "filter_chains": [
                    {"filters": [{"name": "http_connection_manager", "route_config": "bench"}]}
                ],
            },
            {
                "name": "tcp",
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"protocols": ["plain"]},
                "filter_chains": [{"filters": [{"name": "tcp_proxy", "cluster": "source"}]}],
            },
        ],
        "route_configs": [
            {
                "name": "bench",
                "virtual_hosts": [
                    {
                        "name": "all",
                        "routes": [{"name": "echo", "match": {"prefix": "/"}, "route": {"cluster": "echo"}}],
                    }
                ],
            }
        ],
        "clusters": [
            {"name": "echo", "endpoints": [{"address": "127.0.0.1", "port": ports["echo"]}]},
            {"name": "source", "endpoints": [{"address": "127.0.0.1", "port": ports["source"]}]},
        ],
        "admin": None,
    }


def start_gateway(config_path: Path, uvloop: bool) -> tuple[subprocess.Popen[str], dict[str, int], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            str(config_path),
            "--uvloop" if uvloop else "--no-uvloop",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ports = {name: int(port) for name, port in re.findall(r"(\w+)=(\d+)", line) if name in ("edge", "tcp")}
    loop = re.search(r"loop=(\w+)", line)
    if len(ports) != 2 or loop is None:
        proc.kill()
        raise SystemExit(f"gateway did not start: {line!r}")
    return proc, ports, loop.group(1)


# -- measurements -------------------------------------------------------------------------------


def read_response(sock: ssl.SSLSocket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return
        data += chunk


def tls13_handshakes(port: int, ca: Path, duration: float, resume: bool) -> float:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    session = None
    count, deadline = 0, time.monotonic() + duration
    while time.monotonic() < deadline:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost", session=session if resume else None) as sock,
        ):
            sock.sendall(REQUEST)
            read_response(sock)
            if resume and session is None:
                session = sock.session
        count += 1
    return count / duration


async def tlcp_handshakes(port: int, demo: DemoPKI, duration: float, resume: bool) -> float:
    base = TLCPConfiguration(
        is_client=True,
        cipher_suites=(CipherSuite.ECC_SM4_GCM_SM3,),
        trust_store=demo.sm2_trust_store(),
        server_name="localhost",
    )
    session = None
    count, deadline = 0, time.monotonic() + duration
    while time.monotonic() < deadline:
        config = TLCPConfiguration(**{**base.__dict__, "session": session if resume else None})
        stream = await tlcp_connect("127.0.0.1", port, config)
        stream.write(REQUEST)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.read(4096)
            if not chunk:
                break
            data += chunk
        if resume and session is None:
            session = stream.session
        stream.close()
        count += 1
    return count / duration


async def tls13_sm_handshakes(port: int, demo: DemoPKI, duration: float, resume: bool) -> float:
    base = TLS13Configuration(
        is_client=True,
        cipher_suites=(Tls13Suite.TLS_SM4_GCM_SM3,),
        trust_store=demo.sm2_trust_store(),
        server_name="localhost",
    )
    session = None
    count, deadline = 0, time.monotonic() + duration
    while time.monotonic() < deadline:
        config = TLS13Configuration(**{**base.__dict__, "session": session if resume else None})
        stream = await tls13_connect("127.0.0.1", port, config)
        stream.write(REQUEST)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.read(4096)
            if not chunk:
                break
            data += chunk
        if resume and session is None:
            session = await stream.wait_for_session(1.0)
        stream.close()
        count += 1
    return count / duration


async def http_load(port: int, duration: float, concurrency: int) -> tuple[float, float, float]:
    latencies: list[float] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            started = time.perf_counter()
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"content-length: (\d+)", head, re.I)
            assert match is not None
            length = int(match.group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    quantiles = statistics.quantiles(latencies, n=100)
    return len(latencies) / duration, quantiles[49] * 1000, quantiles[98] * 1000


async def bulk(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    started, total = time.perf_counter(), 0
    while chunk := await reader.read(1 << 20):
        total += len(chunk)
    writer.close()
    return total / (time.perf_counter() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--bulk-mb", type=int, default=64)
    parser.add_argument(
        "--uvloop", action=argparse.BooleanOptionalAction, default=True, help="gateway on uvloop (default)"
    )
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="smgate-bench-"))
    demo = ensure_demo_pki(state)
    spawn = multiprocessing.get_context("spawn")
    ports_queue: multiprocessing.Queue = spawn.Queue()
    upstream = spawn.Process(
        target=_upstreams, args=(str(state), args.bulk_mb * 1024 * 1024, ports_queue), daemon=True
    )
    upstream.start()
    ports = ports_queue.get(timeout=60)
    config_path = state / "bench.yaml"
    config_path.write_text(yaml.safe_dump(gateway_config(demo, ports)))
    gateway, gw_ports, loop = start_gateway(config_path, args.uvloop)
    rows: list[tuple[str, float, float, str]] = []
    try:
        d = args.duration
        for resume in (False, True):
            label = "resumed" if resume else "full"
            direct = tls13_handshakes(ports["direct_tls"], demo.rsa.ca.cert, d, resume)
            via = tls13_handshakes(gw_ports["edge"], demo.rsa.ca.cert, d, resume)
            rows.append((f"TLS 1.3 handshakes/s ({label}, +1 request)", direct, via, "conn/s"))
            direct = asyncio.run(tlcp_handshakes(ports["direct_tlcp"], demo, d, resume))
            via = asyncio.run(tlcp_handshakes(gw_ports["edge"], demo, d, resume))
            rows.append((f"TLCP handshakes/s ({label}, +1 request)", direct, via, "conn/s"))
            direct = asyncio.run(tls13_sm_handshakes(ports["direct_tls13_sm"], demo, d, resume))
            via = asyncio.run(tls13_sm_handshakes(gw_ports["edge"], demo, d, resume))
            rows.append((f"TLS 1.3-SM handshakes/s ({label}, +1 request)", direct, via, "conn/s"))
        direct_rps, direct_p50, direct_p99 = asyncio.run(http_load(ports["echo"], d, args.concurrency))
        via_rps, via_p50, via_p99 = asyncio.run(http_load(gw_ports["edge"], d, args.concurrency))
        rows.append((f"HTTP requests/s (plain, c={args.concurrency})", direct_rps, via_rps, "req/s"))
        rows.append(("HTTP p50 latency", direct_p50, via_p50, "ms"))
        rows.append(("HTTP p99 latency", direct_p99, via_p99, "ms"))
        rows.append(
            (
                f"bulk TCP download ({args.bulk_mb} MB)",
                asyncio.run(bulk(ports["source"])),
                asyncio.run(bulk(gw_ports["tcp"])),
                "MB/s",
            )
        )
    finally:
        gateway.terminate()
        gateway.wait(30)
        upstream.terminate()
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'direct':>10}  {'gateway':>10}  {'gateway/direct':>14}  unit")
    for name, direct, via, unit in rows:
        print(
            f"{name:<{width}}  {direct:>10.1f}  {via:>10.1f}  {via / direct if direct else 0:>14.2f}  {unit}"
        )
    print(
        f"(gateway loop: {loop}, cpus: {os.cpu_count()}, duration {args.duration}s per measurement; "
        "latency ratios >1 mean slower)"
    )


if __name__ == "__main__":
    main()
