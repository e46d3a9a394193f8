"""HTTP/2 and gRPC through smgate, side by side with nginx in the same run (a benchmark, not a test).

Proxies run pinned to CPU 0 (``taskset -c 0``); h2load and the upstream share CPU 1. Each scenario runs
h2load for ``--seconds`` against each proxy and reports requests/s and the proxy's CPU per request
(utime + stime from /proc of its process tree, before and after). Scenarios:

- ``h2c``: HTTP/2 with prior knowledge on a plain listener, ``-c 16 -m 10`` (16 connections, 10 streams
  each), proxied to an HTTP/1.1 nginx upstream (keep-alive);
- ``h2-tls``: the same over TLS 1.3 with ALPN h2;
- ``h1``: HTTP/1.1 keep-alive (``h2load --h1 -c 16``) through smgate, the figure the issue's target
  compares HTTP/2 against (HTTP/2 per-request CPU at most 2x smgate's own HTTP/1.1).

Then a grpcio unary benchmark (``--grpc-seconds``, 8 concurrent calls from one asyncio client on CPU 1)
straight to a grpcio server on CPU 1 and through smgate (h2c both sides), with p50/p99 latency.

nginx comes from Debian (``nginx-light``; ``http2`` on the listener), h2load from ``nghttp2-client``.

    .venv/bin/python bench/http2.py [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.proxy_peers import (
    LOAD_CPU,
    PROXY_CPU,
    REPO,
    Pki,
    child_env,
    nginx_upstream_conf,
    run_checked,
    smgate_command,
    start_nginx,
)
from bench.proxy_procs import Fleet, Server, StartError, free_port, tree_cpu_seconds

_NGINX = """\
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    upstream upstream {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 1000000; }}
    server {{ listen 127.0.0.1:{h2c} http2; {location} }}
    server {{ listen 127.0.0.1:{tls} ssl http2; {tls_conf} {location} }}
    server {{ listen 127.0.0.1:{h1}; {location} }}
}}
"""
_LOCATION = (
    'location / { proxy_pass http://upstream; proxy_http_version 1.1; proxy_set_header Connection ""; }'
)


@dataclass(frozen=True)
class Scenario:
    name: str
    port_key: str
    h2load_args: tuple[str, ...]
    scheme: str


SCENARIOS = (
    Scenario("h2c", "h2c", ("-c", "16", "-m", "10"), "http"),
    Scenario("h2-tls", "tls", ("-c", "16", "-m", "10"), "https"),
    Scenario("h1", "h1", ("--h1", "-c", "16"), "http"),
)


@dataclass
class Sample:
    requests: int
    rps: float
    cpu_us: float


def run_h2load(url: str, args: tuple[str, ...], seconds: float) -> tuple[int, float]:
    """(succeeded requests, req/s) of one h2load run pinned to the load CPU."""
    argv = ["taskset", "-c", str(LOAD_CPU), "h2load", *args, "-D", f"{seconds:g}", "--warm-up-time", "1", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = done.stdout + done.stderr
    succeeded = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if succeeded is None or rps is None:
        raise StartError(f"h2load output not understood:\n{out[-800:]}")
    if os.environ.get("BENCH_DEBUG"):
        print(out[-1200:])
    return int(succeeded.group(1)), float(rps.group(1))


def measure(server: Server, url: str, scenario: Scenario, seconds: float) -> Sample:
    before = tree_cpu_seconds(server.pid)
    started = time.monotonic()
    requests, rps = run_h2load(url, scenario.h2load_args, seconds)
    cpu = tree_cpu_seconds(server.pid) - before
    elapsed = time.monotonic() - started
    # h2load's -D counts requests in the measured window only; CPU covers warm-up too: scale it.
    measured_share = seconds / elapsed if elapsed > 0 else 1.0
    return Sample(requests, rps, cpu * measured_share * 1e6 / max(requests, 1))


def smgate_h2_config(pki: Pki, ports: dict[str, int], upstream: int) -> dict[str, object]:
    hcm = {"name": "http_connection_manager", "route_config": "bench", "h2c_prior_knowledge": True}
    certificates = [
        {
            "name": "default",
            "tls_certificates": [{"cert_chain": str(pki.tls_cert()), "private_key": str(pki.tls_key())}],
        }
    ]
    return {
        "listeners": [
            {
                "name": "plain",
                "address": "127.0.0.1",
                "port": ports["h2c"],
                "tls": {"protocols": ["plain"]},
                "filter_chains": [{"filters": [hcm]}],
            },
            {
                "name": "tls",
                "address": "127.0.0.1",
                "port": ports["tls"],
                "tls": {"protocols": ["tls1.3"], "certificates": certificates, "alpn": ["h2", "http/1.1"]},
                "filter_chains": [{"filters": [hcm]}],
            },
            {
                "name": "h1",
                "address": "127.0.0.1",
                "port": ports["h1"],
                "tls": {"protocols": ["plain"]},
                "filter_chains": [{"filters": [hcm]}],
            },
        ],
        "route_configs": [
            {
                "name": "bench",
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [
                            {"name": "grpc", "match": {"prefix": "/bench."}, "route": {"cluster": "grpc"}},
                            {"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "upstream"}},
                        ],
                    }
                ],
            }
        ],
        "clusters": [
            {
                "name": "upstream",
                "endpoints": [{"address": "127.0.0.1", "port": upstream}],
                # 160 streams in flight need as many keep-alive HTTP/1.1 connections (nginx: keepalive 64+)
                "max_idle_connections": 512,
            },
            {
                "name": "grpc",
                "http2_protocol_options": {},
                "endpoints": [{"address": "127.0.0.1", "port": ports["grpc"]}],
            },
        ],
        "admin": None,
        "drain_timeout": 5,
    }


# -- gRPC --------------------------------------------------------------------------------------------

_GRPC_SERVER = """
import asyncio, sys, grpc
async def unary(request, context):
    return request
async def main():
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


async def grpc_latencies(target: str, seconds: float, concurrency: int = 8) -> list[float]:
    import grpc

    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary("/bench.Echo/Unary")
        await call(b"warm-up")
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                await call(b"x" * 100)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def grpc_row(name: str, latencies: list[float], seconds: float) -> str:
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2] * 1e3
    p99 = ordered[int(len(ordered) * 0.99)] * 1e3
    return f"| {name} | {len(ordered) / seconds:,.0f} | {p50:.2f} | {p99:.2f} |"


# -- the run -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grpc-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset") or not shutil.which("h2load"):
        print("needs two CPUs, taskset and h2load (Debian nghttp2-client)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {LOAD_CPU})
    with tempfile.TemporaryDirectory(prefix="bench-http2-") as tmp:
        fleet = Fleet(Path(tmp))
        try:
            return run(fleet, Path(tmp), args)
        finally:
            for server in reversed(fleet.servers):
                fleet.stop(server)


def run(fleet: Fleet, workdir: Path, args: argparse.Namespace) -> int:
    pki = Pki.create(workdir / "state")
    taken: set[int] = set()
    upstream = free_port(taken)
    start_nginx(
        fleet,
        "upstream",
        nginx_upstream_conf(fleet.workdir / "upstream", pki, upstream, free_port(taken)),
        cpu=LOAD_CPU,
        ports=[upstream],
    )
    peers: dict[str, tuple[Server, dict[str, int]]] = {}
    smgate_ports = {key: free_port(taken) for key in ("h2c", "tls", "h1", "grpc")}
    config = workdir / "smgate.yaml"
    config.write_text(yaml.safe_dump(smgate_h2_config(pki, smgate_ports, upstream), sort_keys=False))
    run_checked(smgate_command("config", "check", str(config)), "smgate config check")
    peers["smgate"] = (
        fleet.start(
            "smgate",
            smgate_command("serve", str(config)),
            cpu=PROXY_CPU,
            ports=[smgate_ports[k] for k in ("h2c", "tls", "h1")],
            cwd=REPO,
            env=child_env(),
        ),
        smgate_ports,
    )
    if shutil.which("nginx"):
        nginx_ports = {key: free_port(taken) for key in ("h2c", "tls", "h1")}
        workdir_nginx = fleet.workdir / "nginx"
        conf = _NGINX.format(
            workdir=workdir_nginx,
            upstream=upstream,
            location=_LOCATION,
            tls_conf=f"ssl_certificate {pki.tls_cert()}; ssl_certificate_key {pki.tls_key()}; ssl_protocols TLSv1.3;",
            **nginx_ports,
        )
        peers["nginx"] = (
            start_nginx(fleet, "nginx", conf, cpu=PROXY_CPU, ports=list(nginx_ports.values())),
            nginx_ports,
        )
    else:
        print("nginx not installed (Debian nginx-light): smgate only")
    print(
        f"h2load -D {args.seconds:g} s, medians of {args.rounds} rounds; proxy on CPU {PROXY_CPU}, load+upstream on CPU {LOAD_CPU}"
    )
    print("| scenario | proxy | req/s | proxy CPU µs/request |")
    print("|---|---|---|---|")
    medians: dict[tuple[str, str], float] = {}
    for scenario in SCENARIOS:
        for name, (server, ports) in peers.items():
            url = f"{scenario.scheme}://127.0.0.1:{ports[scenario.port_key]}/"
            samples = [measure(server, url, scenario, args.seconds) for _ in range(args.rounds)]
            rps = statistics.median(s.rps for s in samples)
            cpu = statistics.median(s.cpu_us for s in samples)
            medians[(scenario.name, name)] = cpu
            print(f"| {scenario.name} | {name} | {rps:,.0f} | {cpu:.1f} |")
    print()
    for key in ("h2c", "h2-tls"):
        if (key, "nginx") in medians:
            print(
                f"{key}: smgate/nginx CPU per request {medians[(key, 'smgate')] / medians[(key, 'nginx')]:.2f}x"
            )
    print(
        f"h2c vs smgate's own HTTP/1.1: {medians[('h2c', 'smgate')] / medians[('h1', 'smgate')]:.2f}x CPU per request"
    )
    grpc_server = fleet.start(
        "grpc-server",
        [sys.executable, "-c", _GRPC_SERVER, str(smgate_ports["grpc"])],
        cpu=LOAD_CPU,
        ports=[smgate_ports["grpc"]],
    )
    del grpc_server
    print()
    print(f"grpcio unary, 8 concurrent calls, {args.grpc_seconds:g} s each")
    print("| path | calls/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    direct = asyncio.run(grpc_latencies(f"127.0.0.1:{smgate_ports['grpc']}", args.grpc_seconds))
    through = asyncio.run(grpc_latencies(f"127.0.0.1:{smgate_ports['h2c']}", args.grpc_seconds))
    print(grpc_row("direct", direct, args.grpc_seconds))
    print(grpc_row("through smgate (h2c)", through, args.grpc_seconds))
    p99 = sorted(through)[int(len(through) * 0.99)] / sorted(direct)[int(len(direct) * 0.99)]
    print(f"p99 through/direct: {p99:.2f}x (at each path's own saturating load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
