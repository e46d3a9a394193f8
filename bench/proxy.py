"""Proxy benchmark: smgate beside nginx, HAProxy and BabaSSL, in one run, on the same pinned cores.

Usage: ``.venv/bin/python bench/proxy.py [--rounds 3] [--seconds 8] [--only http,tls,...]
[--peers nginx,smgate,...] [--keep]`` (about 13 minutes with the defaults; every server it starts is
stopped on exit, Ctrl-C included).

Each proxy runs pinned to CPU 0 (``taskset -c 0``); the load generator and the upstream share CPU 1.
The upstream is one Debian nginx worker answering every request with the same 20-byte body. Scenarios
(``--only``):

* ``http``: HTTP/1.1 keep-alive GETs, wrk with 16 connections (``--connections``);
* ``tls``: the same over TLS 1.3 (RSA-2048 certificate);
* ``tls-close``: TLS 1.3 with ``Connection: close``, a new connection per request (wrk re-offers the
  last session, so these are TLS 1.3 resumptions where the server accepts them: the run says which);
* ``tlcp-full`` / ``tlcp-resumed``: TLCP handshakes (ECC-SM2-SM4-GCM-SM3) under BabaSSL client load,
  each connection closed right after its handshake; the peer is BabaSSL's own TLCP server.

Peers (``--peers``): ``direct`` (wrk to the upstream itself, no proxy: the load side's ceiling),
``nginx`` (1 worker), ``haproxy`` (1 thread), ``babassl``, and smgate three ways: ``smgate`` (audit
off), ``smgate-audit`` (file sink, HMAC-SM3 chain, SM2-signed checkpoints; its audit pipeline
process is counted) and ``smgate-2w`` (``--workers 2``, both workers on the proxy core).

For every point it prints req/s (handshakes/s for TLCP), p50/p99 latency (TLCP: of the handshake) and
the proxy's CPU per request: utime + stime from /proc of every process in the proxy's tree, sampled
just before and just after the load. The table holds medians over ``--rounds`` rounds (peers
interleaved within each round) and the ratios smgate/nginx, smgate/HAProxy, audit on/off, 2 workers/1
and smgate/BabaSSL. wrk's latency is closed-loop at saturation (16 connections), so it follows
throughput. Nothing here asserts a speed; a peer that is not installed is skipped and the run says so.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.proxy_load import LoadResult, run_tlcp_load, run_wrk  # noqa: E402
from bench.proxy_peers import (  # noqa: E402
    BODY,
    LOAD_CPU,
    PROXY_CPU,
    TLCP_SUITE,
    Peer,
    Pki,
    SmgateVariant,
    allocate,
    babassl_available,
    babassl_library,
    nginx_proxy_conf,
    nginx_upstream_conf,
    smgate_command,
    start_babassl_server,
    start_haproxy,
    start_nginx,
    start_smgate,
    verify_audit,
)
from bench.proxy_procs import (  # noqa: E402
    Fleet,
    StartError,
    command_line,
    pin_tree,
    tree_cpu_by_process,
    wait_idle,
)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    unit: str  # what one operation is: "req" or "hs"
    port: str  # which of a peer's ports the load goes to
    peers: tuple[str, ...]
    close: bool = False
    resume: bool = False


HTTP_PEERS = ("direct", "nginx", "haproxy", "smgate", "smgate-audit", "smgate-2w")
TLCP_PEERS = ("babassl", "smgate", "smgate-audit", "smgate-2w")
SCENARIOS = (
    Scenario("http", "HTTP/1.1 keep-alive", "req", "http", HTTP_PEERS),
    Scenario("tls", "TLS 1.3 keep-alive", "req", "tls", HTTP_PEERS),
    Scenario("tls-close", "TLS 1.3 new connection per request", "req", "tls", HTTP_PEERS, close=True),
    Scenario("tlcp-full", "TLCP full handshake (ECC)", "hs", "tlcp", TLCP_PEERS),
    Scenario("tlcp-resumed", "TLCP resumed handshake", "hs", "tlcp", TLCP_PEERS, resume=True),
)
LABELS = {
    "direct": "direct to upstream",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "babassl": "BabaSSL",
    "smgate": "smgate",
    "smgate-audit": "smgate audit on",
    "smgate-2w": "smgate 2 workers",
}
SMGATE_VARIANTS = {
    "smgate": SmgateVariant("smgate"),
    "smgate-audit": SmgateVariant("smgate-audit", audit=True),
    "smgate-2w": SmgateVariant("smgate-2w", workers=2),
}


@dataclass
class Sample:
    """One load run against one peer."""

    load: LoadResult
    cpu_seconds: float | None  # of the peer's whole process tree; None for "direct"
    cpu_by_role: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_us_per_op(self) -> float | None:
        if self.cpu_seconds is None or not self.load.operations:
            return None
        return 1e6 * self.cpu_seconds / self.load.operations


# -- the run ----------------------------------------------------------------------------------------------


def process_role(pid: int, root: int) -> str:
    """A readable name for a process in a peer's tree (for the CPU split of multi-process peers)."""
    if pid == root:
        return "main process"
    words = command_line(pid).split()
    if "--worker-index" in words:
        return f"worker {words[words.index('--worker-index') + 1]}"
    text = " ".join(words)
    if "resource_tracker" in text:
        return "multiprocessing resource tracker"
    if "multiprocessing" in text:
        return "spawned child (audit pipeline)"
    return text[:40]


def measure(peer: Peer, scenario: Scenario, args: argparse.Namespace) -> Sample:
    server = peer.server
    if server is not None:
        moved = pin_tree(server.pid, server.cpu)
        if moved:
            peer.notes.append(f"re-pinned {moved} thread(s) that had left CPU {server.cpu}")
        wait_idle(server.pid)
        before = tree_cpu_by_process(server.pid)
    port = peer.ports[scenario.port]
    if scenario.unit == "hs":
        load = run_tlcp_load(
            port,
            suite=TLCP_SUITE[0],
            threads=args.tlcp_threads,
            seconds=args.seconds,
            resume=scenario.resume,
            cpu=LOAD_CPU,
        )
    else:
        scheme = "https" if scenario.port == "tls" else "http"
        load = run_wrk(
            f"{scheme}://127.0.0.1:{port}/",
            connections=args.connections,
            seconds=args.seconds,
            close=scenario.close,
            cpu=LOAD_CPU,
        )
    if server is None:
        return Sample(load, None)
    after = tree_cpu_by_process(server.pid)
    by_role: dict[str, float] = {}
    for pid in {*before, *after}:
        role = process_role(pid, server.pid)
        by_role[role] = by_role.get(role, 0.0) + after.get(pid, before.get(pid, 0.0)) - before.get(pid, 0.0)
    return Sample(load, sum(by_role.values()), by_role)


def tls_resumptions(port: int, tries: int = 6) -> int:
    """On how many of ``tries`` reconnections the server resumed the TLS 1.3 session its previous
    connection handed out (what wrk re-offers with ``Connection: close``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    session = None
    resumed = 0
    for attempt in range(tries + 1):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while tls.recv(4096):
                pass
            resumed += int(attempt > 0 and bool(tls.session_reused))
            session = tls.session
    return resumed


def http_answers(port: int) -> str | None:
    """None if a GET through the peer returns the upstream's 20-byte body, else what went wrong."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := sock.recv(4096):
                response += chunk
    except OSError as exc:
        return f"GET / failed: {exc}"
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or body != BODY.encode():
        return f"GET / answered {response[:120]!r}"
    return None


def versions() -> list[str]:
    found = []
    for argv in (["nginx", "-v"], ["haproxy", "-v"], ["wrk", "-v"]):
        if shutil.which(argv[0]):
            result = subprocess.run(argv, capture_output=True, text=True)
            found.append((result.stdout + result.stderr).strip().splitlines()[0])
    smgate = subprocess.run(smgate_command("version"), capture_output=True, text=True, cwd=REPO)
    found.append(smgate.stdout.strip().partition("\n")[0])
    return found


@dataclass
class Run:
    """The servers of one benchmark run and the samples taken from them."""

    args: argparse.Namespace
    fleet: Fleet
    pki: Pki
    peers: dict[str, Peer] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)
    http_ok: bool = False
    tlcp_ok: bool = False
    taken: set[int] = field(default_factory=set)  # ports handed out so far

    def runnable(self, scenario: Scenario) -> bool:
        return self.http_ok if scenario.unit == "req" else self.tlcp_ok

    def wanted(self, key: str, scenarios: list[Scenario]) -> bool:
        return key in self.args.peers and any(key in s.peers for s in scenarios)

    def start_peers(self, scenarios: list[Scenario]) -> None:
        """Start every wanted peer that is installed; one that fails to start is skipped, with why."""
        missing = {
            name: f"`{name}` is not installed (apt-get install {package})"
            for name, package in (("nginx", "nginx-light"), ("haproxy", "haproxy"), ("wrk", "wrk"))
            if shutil.which(name) is None
        }
        if any(s.unit == "req" for s in scenarios):
            if "wrk" in missing or "nginx" in missing:
                self.skipped["HTTP and TLS scenarios"] = (
                    missing.get("wrk") or f"{missing['nginx']}: it is the upstream"
                )
            else:
                self.http_ok = self.start_peer("direct", self.start_upstream)
        if any(s.unit == "hs" for s in scenarios):
            self.tlcp_ok = babassl_available()
            if not self.tlcp_ok:
                self.skipped["TLCP scenarios"] = "BabaSSL (the tongsuopy wheel, dev extra) is not installed"
        upstream = self.peers["direct"].ports["http"] if self.http_ok else 0
        if self.http_ok and self.wanted("nginx", scenarios):
            self.start_peer("nginx", lambda: self.start_nginx_proxy(upstream))
        if self.http_ok and self.wanted("haproxy", scenarios):
            if "haproxy" in missing:
                self.skipped[LABELS["haproxy"]] = missing["haproxy"]
            else:
                self.start_peer("haproxy", lambda: self.start_haproxy_proxy(upstream))
        if self.tlcp_ok and self.wanted("babassl", scenarios):
            self.start_peer("babassl", self.start_babassl)
        for key, variant in SMGATE_VARIANTS.items():
            if self.wanted(key, scenarios):
                self.start_peer(key, functools.partial(self.start_smgate, variant, upstream))
        if not self.wanted("direct", scenarios):
            self.peers.pop("direct", None)  # the upstream keeps serving the proxies
        self.check_peers(scenarios)

    def start_peer(self, key: str, start: Callable[[], Peer]) -> bool:
        try:
            self.peers[key] = start()
        except StartError as exc:
            self.skipped[LABELS[key]] = f"did not start: {exc}"
            return False
        return True

    def start_upstream(self) -> Peer:
        ports = allocate(self.taken, "http", "tls")
        conf = nginx_upstream_conf(self.fleet.workdir / "upstream", self.pki, ports["http"], ports["tls"])
        server = start_nginx(self.fleet, "upstream", conf, cpu=LOAD_CPU, ports=list(ports.values()))
        peer = Peer(LABELS["direct"], ports)
        peer.notes.append(f"the upstream: nginx pid {server.pid} on CPU {LOAD_CPU}")
        return peer

    def start_nginx_proxy(self, upstream: int) -> Peer:
        ports = allocate(self.taken, "http", "tls")
        conf = nginx_proxy_conf(self.fleet.workdir / "nginx", self.pki, ports["http"], ports["tls"], upstream)
        server = start_nginx(self.fleet, "nginx", conf, cpu=PROXY_CPU, ports=list(ports.values()))
        return Peer(LABELS["nginx"], ports, server)

    def start_haproxy_proxy(self, upstream: int) -> Peer:
        ports = allocate(self.taken, "http", "tls")
        server = start_haproxy(self.fleet, self.pki, ports["http"], ports["tls"], upstream)
        return Peer(LABELS["haproxy"], ports, server)

    def start_babassl(self) -> Peer:
        ports = allocate(self.taken, "tlcp")
        server = start_babassl_server(self.fleet, self.pki, ports["tlcp"])
        peer = Peer(LABELS["babassl"], ports, server)
        peer.notes.append(f"libssl reports {babassl_library(server)!r} (thread per connection)")
        return peer

    def start_smgate(self, variant: SmgateVariant, upstream: int) -> Peer:
        ports = allocate(self.taken, "http", "tls", "tlcp")
        # Without the upstream only the TLCP rows run, which never route: any port will do.
        server = start_smgate(self.fleet, self.pki, variant, ports, upstream or ports["http"])
        return Peer(LABELS[variant.key], ports, server)

    def check_peers(self, scenarios: list[Scenario]) -> None:
        """Every HTTP peer must answer with the upstream's body before it is measured."""
        if not self.http_ok:
            return
        for key, peer in list(self.peers.items()):
            if "http" not in peer.ports:
                continue
            problem = http_answers(peer.ports["http"])
            if problem is not None:
                self.skipped[peer.label] = problem
                del self.peers[key]
                continue
            if any(s.close for s in scenarios):
                try:
                    resumed = f"resumed on {tls_resumptions(peer.ports['tls'])}/6 reconnections"
                except OSError as exc:  # ssl.SSLError included
                    resumed = f"probe failed: {exc}"
                peer.notes.append(f"TLS 1.3 session {resumed}")

    def measure_all(self, scenarios: list[Scenario]) -> None:
        for round_index in range(1, self.args.rounds + 1):
            for scenario in filter(self.runnable, scenarios):
                for key in scenario.peers:
                    peer = self.peers.get(key)
                    if peer is None:
                        continue
                    sample = measure(peer, scenario, self.args)
                    self.samples.setdefault((scenario.key, key), []).append(sample)
                    print(
                        f"[round {round_index}/{self.args.rounds}] {scenario.title:<38} "
                        f"{peer.label:<32} {render_sample(sample, scenario.unit)}",
                        flush=True,
                    )

    def finish_audit(self) -> list[str]:
        """Stop the audit-on gateway (it flushes and seals its trail) and verify what it wrote."""
        peer = self.peers.get("smgate-audit")
        if peer is None or peer.server is None:
            return []
        operations = sum(
            s.load.operations
            for (_, key), runs in self.samples.items()
            if key == "smgate-audit"
            for s in runs
        )
        self.fleet.stop(peer.server)
        summary = verify_audit(peer.server, self.pki)
        verdict = (
            "verified" if summary.get("exit_code") == 0 else f"NOT verified (exit {summary.get('exit_code')})"
        )
        shown = (
            "records",
            "macs_verified",
            "signatures_verified",
            "declared_gaps",
            "events",
            "problem",
            "output",
        )
        details = "; ".join(f"{key}: {summary[key]}" for key in shown if key in summary)
        return [
            f"audit trail of smgate audit on ({operations} requests and handshakes measured): {verdict}",
            f"  {details}",
        ]


# -- report -----------------------------------------------------------------------------------------------


def render_sample(sample: Sample, unit: str) -> str:
    cpu = sample.cpu_us_per_op
    cpu_text = f"{cpu:9.1f} µs/{unit}" if cpu is not None else f"{'-':>9}"
    line = (
        f"{sample.load.rate:9.0f} {unit}/s  p50 {sample.load.p50_ms:7.2f} ms  p99 {sample.load.p99_ms:7.2f} ms  "
        f"{cpu_text}"
    )
    if sample.load.resumed is not None:
        line += f"  resumed {sample.load.resumed}/{sample.load.operations}"
    if sample.load.problem:
        line += f"  ! {sample.load.problem}"
    return line


@dataclass
class Row:
    rate: float
    p50: float
    p99: float
    cpu: float | None
    cpu_range: tuple[float, float] | None
    problems: int
    resumed_share: float | None


def median_row(samples: list[Sample]) -> Row:
    cpus = [c for c in (s.cpu_us_per_op for s in samples) if c is not None]
    return Row(
        rate=statistics.median(s.load.rate for s in samples),
        p50=statistics.median(s.load.p50_ms for s in samples),
        p99=statistics.median(s.load.p99_ms for s in samples),
        cpu=statistics.median(cpus) if cpus else None,
        cpu_range=(min(cpus), max(cpus)) if cpus else None,
        problems=sum(1 for s in samples if s.load.problem),
        resumed_share=statistics.median(
            s.load.resumed / s.load.operations
            for s in samples
            if s.load.resumed is not None and s.load.operations
        )
        if any(s.load.resumed is not None for s in samples)
        else None,
    )


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:5.2f}x" if a is not None and b else "    -"


def report(run: Run, scenarios: list[Scenario]) -> list[str]:
    lines = [
        f"{'scenario':<38} {'peer':<32} {'rate/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/op':>10} "
        f"{'(min-max)':>15}"
    ]
    ratio_lines: list[str] = []
    for scenario in scenarios:
        rows = {
            key: median_row(run.samples[(scenario.key, key)])
            for key in scenario.peers
            if (scenario.key, key) in run.samples
        }
        for key, row in rows.items():
            cpu = f"{row.cpu:10.1f}" if row.cpu is not None else f"{'-':>10}"
            spread = f"({row.cpu_range[0]:.0f}-{row.cpu_range[1]:.0f})" if row.cpu_range else ""
            flag = f"  resumed {100 * row.resumed_share:.0f}%" if row.resumed_share is not None else ""
            flag += f"  ! problems in {row.problems} round(s)" if row.problems else ""
            lines.append(
                f"{scenario.title:<38} {run.peers[key].label:<32} {row.rate:9.0f} {row.p50:8.2f} {row.p99:8.2f} "
                f"{cpu} {spread:>15}{flag}"
            )
        ratio_lines += scenario_ratios(scenario, rows)
    return [*lines, "", "ratios of the medians (CPU per op; rate; p99 latency):", *ratio_lines]


def scenario_ratios(scenario: Scenario, rows: dict[str, Row]) -> list[str]:
    pairs = (
        ("smgate", "nginx", "smgate/nginx"),
        ("smgate", "haproxy", "smgate/HAProxy"),
        ("smgate", "babassl", "smgate/BabaSSL"),
        ("smgate-audit", "smgate", "audit on/off"),
        ("smgate-2w", "smgate", "2 workers/1"),
    )
    lines = []
    for mine, theirs, name in pairs:
        if mine in rows and theirs in rows:
            a, b = rows[mine], rows[theirs]
            lines.append(
                f"  {scenario.title:<38} {name:<16} CPU {ratio(a.cpu, b.cpu)}  rate {ratio(a.rate, b.rate)}  "
                f"p99 {ratio(a.p99, b.p99)}"
            )
    return lines


def cpu_splits(run: Run, scenarios: list[Scenario]) -> list[str]:
    """Where the CPU of multi-process peers went (median share per process role)."""
    lines = []
    for scenario in scenarios:
        for key in scenario.peers:
            samples = run.samples.get((scenario.key, key), [])
            roles = sorted({role for s in samples for role in s.cpu_by_role})
            if len(roles) < 2 or not key.startswith("smgate"):
                continue
            shares = []
            for role in roles:
                per_op = statistics.median(
                    1e6 * s.cpu_by_role.get(role, 0.0) / s.load.operations
                    for s in samples
                    if s.load.operations
                )
                if per_op >= 0.05:
                    shares.append(f"{role} {per_op:.1f}")
            lines.append(
                f"  {scenario.title} / {run.peers[key].label}: µs/op by process: {', '.join(shares)}"
            )
    return lines


# -- command line -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C does, so the cleanup below always runs."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def comma_list(choices: list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {','.join(choices)}")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    scenario_keys = [s.key for s in SCENARIOS]
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the table shows medians (default 3)")
    parser.add_argument("--seconds", type=float, default=8.0, help="load seconds per point (default 8)")
    parser.add_argument(
        "--only",
        type=comma_list(scenario_keys),
        default=scenario_keys,
        help=f"scenarios, comma-separated (default all: {','.join(scenario_keys)})",
    )
    parser.add_argument(
        "--peers",
        type=comma_list(list(LABELS)),
        default=list(LABELS),
        help=f"peers, comma-separated (default all: {','.join(LABELS)})",
    )
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--tlcp-threads", type=int, default=8, help="BabaSSL client connections in flight (default 8)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (configs, logs, audit trail)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None:
        print(
            "needs two CPUs and taskset (util-linux): the proxy and the load are pinned apart",
            file=sys.stderr,
        )
        return 2
    scenarios = [s for s in SCENARIOS if s.key in args.only]
    workdir = Path(tempfile.mkdtemp(prefix="smgate-bench-proxy-"))
    fleet = Fleet(workdir)
    print(f"bench/proxy.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(
        f"proxy on CPU {PROXY_CPU}; load generator and upstream on CPU {LOAD_CPU}; {args.rounds} rounds x "
        f"{args.seconds:g} s; load average before start: {os.getloadavg()[0]:.2f}"
    )
    print("; ".join(versions()), flush=True)
    exit_code = 0
    try:
        with interruptible():
            run = Run(args, fleet, Pki.create(workdir))
            run.start_peers(scenarios)
            for what, why in run.skipped.items():
                print(f"skipped {what}: {why}")
            started = time.monotonic()
            run.measure_all(scenarios)
            audit_lines = run.finish_audit()
            print(
                f"\nmedians of {args.rounds} rounds, {args.seconds:g} s each "
                f"(measuring took {time.monotonic() - started:.0f} s):"
            )
            print("\n".join(report(run, scenarios)))
            notes = [
                f"  {peer.label}: {'; '.join(dict.fromkeys(peer.notes))}"
                for peer in run.peers.values()
                if peer.notes
            ]
            print(
                "\n".join(
                    [
                        "",
                        "notes:",
                        *notes,
                        *cpu_splits(run, scenarios),
                        *(f"  {line}" for line in audit_lines),
                    ]
                )
            )
            for what, why in run.skipped.items():
                print(f"  skipped {what}: {why}")
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every server this run started", file=sys.stderr)
        exit_code = 130
    except StartError as exc:
        print(f"a server did not start: {exc}", file=sys.stderr)
        exit_code = 1
    finally:
        # A second Ctrl-C (or a SIGTERM) must not cut the cleanup short.
        previous = {
            signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)
        }
        fleet.stop_all()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
