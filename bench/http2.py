"""HTTP/2 and gRPC through smgate, side by side with nginx in the same run (a benchmark, not a test).

Proxies run pinned to CPU 0 (``taskset -c 0``); h2load and the upstream share CPU 1. Each scenario runs
h2load for ``--seconds`` against each proxy and reports requests/s and the proxy's CPU per request
(utime + stime from /proc of its process tree, before and after). Scenarios:

- ``h2c``: HTTP/2 with prior knowledge on a plain listener, ``-c 16 -m 10`` (16 connections, 10 streams
  each), proxied to an HTTP/1.1 nginx upstream (keep-alive);
- ``h2-tls``: the same over TLS 1.3 with ALPN h2;
- ``h1``: HTTP/1.1 keep-alive (``h2load --h1 -c 16``) through smgate, the figure the issue's target
  compares HTTP/2 against (HTTP/2 per-request CPU at most 2x smgate's own HTTP/1.1).

Then a grpcio unary benchmark at the same offered load on every path: an open-loop asyncio client
(``--grpc-rate`` calls/s for ``--grpc-seconds``, a rate no path saturates) calls a grpcio server
straight, through smgate and through nginx (``grpc_pass``; h2c both sides), rounds interleaved; client
and server on CPU 1. It reports p50/p99 latency (pooled, and each round's p99), their ratios with the
load average beside them (other processes on these CPUs show up in the tails), and each proxy's and
the server's CPU per call. nginx is in the table because a proxied call's tail on this VM is mostly
not the proxy's: both proxies see the same bursts of late calls.

``--profile DIR`` then records smgate with py-spy under h2c, HTTP/1.1 and gRPC load (separate runs)
and prints the hottest functions.

nginx comes from Debian (``nginx-light``; ``http2`` on the listener), h2load from ``nghttp2-client``.

    .venv/bin/python bench/http2.py [--seconds 8] [--rounds 3] [--grpc-rate 400] [--profile DIR [--native]]
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
    upstream grpc_upstream {{ server 127.0.0.1:{grpc_upstream}; keepalive 16; keepalive_requests 1000000; }}
    server {{ listen 127.0.0.1:{grpc} http2; location / {{ grpc_pass grpc://grpc_upstream; }} }}
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


@dataclass
class GrpcRun:
    """One fixed-rate run: per-call latencies, how many calls were due, the wall time it took."""

    latencies: list[float]
    due: int
    seconds: float
    #: CPU of the processes the calls went through (smgate; the gRPC server), seconds.
    proxy_cpu: float = 0.0
    server_cpu: float = 0.0


async def grpc_fixed_rate(target: str, rate: float, seconds: float) -> GrpcRun:
    """Open-loop unary calls at ``rate`` per second for ``seconds``: call ``i`` starts at ``i / rate``
    whether or not earlier calls are done (a late path shows as latency, not as a lower rate)."""
    import grpc

    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary("/bench.Echo/Unary")
        for _ in range(50):
            await call(b"warm-up")

        async def one() -> None:
            started = time.perf_counter()
            await call(b"x" * 100)
            latencies.append(time.perf_counter() - started)

        due = int(rate * seconds)
        tasks = []
        begun = loop.time()
        for index in range(due):
            delay = begun + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - begun
    return GrpcRun(latencies, due, elapsed)


def measure_grpc(target: str, rate: float, seconds: float, proxy: Server | None, server: Server) -> GrpcRun:
    proxy_before = tree_cpu_seconds(proxy.pid) if proxy is not None else 0.0
    server_before = tree_cpu_seconds(server.pid)
    run = asyncio.run(grpc_fixed_rate(target, rate, seconds))
    run.server_cpu = tree_cpu_seconds(server.pid) - server_before
    if proxy is not None:
        run.proxy_cpu = tree_cpu_seconds(proxy.pid) - proxy_before
    return run


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def grpc_row(name: str, runs: list[GrpcRun]) -> tuple[str, float]:
    """A table row over the pooled calls of all rounds (and each round's p99), and the pooled p99 in ms."""
    rounds_p99 = " / ".join(f"{percentile(sorted(run.latencies), 0.99) * 1e3:.2f}" for run in runs)
    ordered = sorted(latency for run in runs for latency in run.latencies)
    calls = len(ordered)
    seconds = sum(run.seconds for run in runs)
    p50, p99 = percentile(ordered, 0.50) * 1e3, percentile(ordered, 0.99) * 1e3
    proxy_cpu = sum(run.proxy_cpu for run in runs) * 1e6 / calls
    server_cpu = sum(run.server_cpu for run in runs) * 1e6 / calls
    proxy = f"{proxy_cpu:.1f}" if proxy_cpu else "-"
    return (
        f"| {name} | {calls / seconds:,.0f} | {p50:.2f} | {p99:.2f} | {rounds_p99} | {proxy} | {server_cpu:.1f} |",
        p99,
    )


# -- profile ---------------------------------------------------------------------------------------


def profile(
    args: argparse.Namespace, smgate: Server, ports: dict[str, int], grpc_target: str, grpc_server: Server
) -> None:
    """Record smgate with py-spy under each load (runs of their own: sampling costs CPU) and print the
    hottest functions."""
    from bench.tlcp import profiled, summarize_profile

    seconds = max(args.seconds, 4.0)
    recorded = []
    for scenario in SCENARIOS:
        if scenario.name == "h2-tls":
            continue
        url = f"{scenario.scheme}://127.0.0.1:{ports[scenario.port_key]}/"
        with profiled(smgate.pid, args.profile, scenario.name, seconds, native=args.native):
            run_h2load(url, scenario.h2load_args, seconds)
        recorded.append((scenario.name, args.profile / f"{scenario.name}.txt"))
    with profiled(smgate.pid, args.profile, "grpc", seconds, native=args.native):
        asyncio.run(grpc_fixed_rate(grpc_target, args.grpc_rate, seconds))
    recorded.append((f"grpc at {args.grpc_rate:g} calls/s", args.profile / "grpc.txt"))
    for title, path in recorded:
        print(f"\nprofile: {title} ({path})")
        print("\n".join(summarize_profile(path, top=30)))


# -- the run -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grpc-seconds", type=float, default=5.0)
    parser.add_argument(
        "--grpc-rate",
        type=float,
        default=400.0,
        help="unary calls per second offered to both gRPC paths (below what either saturates at)",
    )
    parser.add_argument(
        "--profile", type=Path, help="afterwards, py-spy smgate under h2c, HTTP/1.1 and gRPC load into DIR"
    )
    parser.add_argument("--native", action="store_true", help="with --profile: C frames too")
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
        nginx_ports = {key: free_port(taken) for key in ("h2c", "tls", "h1", "grpc")}
        workdir_nginx = fleet.workdir / "nginx"
        conf = _NGINX.format(
            workdir=workdir_nginx,
            upstream=upstream,
            location=_LOCATION,
            tls_conf=f"ssl_certificate {pki.tls_cert()}; ssl_certificate_key {pki.tls_key()}; ssl_protocols TLSv1.3;",
            grpc_upstream=smgate_ports["grpc"],
            **nginx_ports,
        )
        peers["nginx"] = (
            start_nginx(fleet, "nginx", conf, cpu=PROXY_CPU, ports=list(nginx_ports.values())),
            nginx_ports,
        )
    else:
        print("nginx not installed (Debian nginx-light): smgate only")
    print(
        f"h2load -D {args.seconds:g} s, medians of {args.rounds} rounds; proxy on CPU {PROXY_CPU}, load+upstream on CPU {LOAD_CPU};"
        f" load average {os.getloadavg()[0]:.1f}"
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
    smgate = peers["smgate"][0]
    paths = {
        "direct": (f"127.0.0.1:{smgate_ports['grpc']}", None),
        "through smgate (h2c)": (f"127.0.0.1:{smgate_ports['h2c']}", smgate),
    }
    if "nginx" in peers:  # what a user would otherwise put in the path: nginx grpc_pass, same load
        nginx, nginx_ports = peers["nginx"]
        paths["through nginx (h2c, grpc_pass)"] = (f"127.0.0.1:{nginx_ports['grpc']}", nginx)
    runs: dict[str, list[GrpcRun]] = {name: [] for name in paths}
    for _ in range(args.rounds):  # interleaved, so both paths see the same machine
        for name, (target, proxy) in paths.items():
            runs[name].append(measure_grpc(target, args.grpc_rate, args.grpc_seconds, proxy, grpc_server))
    print()
    print(
        f"grpcio unary, open loop at {args.grpc_rate:g} calls/s (the same offered load on both paths), "
        f"{args.grpc_seconds:g} s x {args.rounds} rounds, 100-byte messages; client and server on CPU {LOAD_CPU}"
    )
    print(
        "| path | calls/s | p50 ms | p99 ms | p99 ms per round | proxy CPU µs/call | gRPC server CPU µs/call |"
    )
    print("|---|---|---|---|---|---|---|")
    p99s = {}
    for name, name_runs in runs.items():
        row, p99s[name] = grpc_row(name, name_runs)
        print(row)
    print(
        f"p99 through/direct: {p99s['through smgate (h2c)'] / p99s['direct']:.2f}x at {args.grpc_rate:g} calls/s"
        f" (load average {os.getloadavg()[0]:.1f}: other processes on these CPUs show up in the tails)"
    )
    nginx_path = "through nginx (h2c, grpc_pass)"
    if nginx_path in p99s:
        print(
            f"p99 through nginx/direct: {p99s[nginx_path] / p99s['direct']:.2f}x;"
            f" smgate/nginx p99: {p99s['through smgate (h2c)'] / p99s[nginx_path]:.2f}x"
        )
    if args.profile:
        profile(args, smgate, peers["smgate"][1], paths["through smgate (h2c)"][0], grpc_server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
