"""Load generators for bench/proxy.py, each pinned to the load core.

* HTTP/1.1 and TLS 1.3: Debian's ``wrk`` (one thread, ``--connections`` keep-alive connections; with
  ``Connection: close`` a new connection per request: wrk then re-offers the previous connection's
  TLS 1.3 session ticket, so those are PSK-(EC)DHE resumptions wherever the server accepts them).
* TLCP: BabaSSL 8.3.2's NTLS client (tests/interop/babassl.py, libssl through ctypes), closed loop:
  ``--threads`` connections in flight, each doing connect, handshake, close_notify, close, again.
  ``--resume`` re-offers each thread's first session (session-ID resumption, tickets off as in the
  interop harness). It runs in a child process (``python -m bench.proxy_load tlcp ...``) because
  BabaSSL's libssl must not share a process with the system OpenSSL.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_NO_TICKET = 0x00004000  # SSL_OP_NO_TICKET (OpenSSL 1.1.1 ssl.h)
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class LoadResult:
    """What one load run did: operations (requests or handshakes) completed, over how long, latency
    percentiles in milliseconds, and anything that went wrong (None: nothing)."""

    operations: int
    seconds: float
    p50_ms: float
    p99_ms: float
    problem: str | None = None
    resumed: int | None = None

    @property
    def rate(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0


# -- wrk ------------------------------------------------------------------------------------------------


def parse_wrk(output: str) -> LoadResult:
    """Read wrk's summary (run with ``--latency``)."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    percentiles = {
        int(match[1]): float(match[2]) * _UNITS[match[3]]
        for match in re.finditer(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    }
    if done is None or set(percentiles) != {50, 99}:
        return LoadResult(0, 0.0, 0.0, 0.0, problem=f"unreadable wrk output: {output.strip()[-300:]!r}")
    problems = []
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sockets and any(int(count) for count in sockets.groups()):
        problems.append(sockets[0])
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        problems.append(non_2xx[0])
    return LoadResult(
        operations=int(done[1]),
        seconds=float(done[2]) * _UNITS[done[3]] / 1e3,
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        problem="; ".join(problems) or None,
    )


def run_wrk(url: str, *, connections: int, seconds: float, close: bool, cpu: int) -> LoadResult:
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    result = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 60)
    parsed = parse_wrk(result.stdout)
    if result.returncode != 0:
        parsed.problem = f"wrk exited {result.returncode}: {result.stderr.strip()[-200:]}"
    return parsed


# -- BabaSSL TLCP ----------------------------------------------------------------------------------------


def run_tlcp_load(
    port: int, *, suite: str, threads: int, seconds: float, resume: bool, cpu: int
) -> LoadResult:
    """Run the BabaSSL client load in a child pinned to ``cpu`` and read its JSON summary."""
    argv = ["taskset", "-c", str(cpu), sys.executable, "-m", "bench.proxy_load", "tlcp", "--port", str(port)]
    argv += ["--suite", suite, "--threads", str(threads), "--seconds", str(seconds)]
    argv += ["--resume"] if resume else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=seconds + 120)
    try:
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        return LoadResult(**summary)
    except (IndexError, json.JSONDecodeError, TypeError):
        problem = f"TLCP load failed ({result.returncode}): {(result.stdout + result.stderr).strip()[-300:]}"
        return LoadResult(0, 0.0, 0.0, 0.0, problem=problem)


def _tlcp_client(port: int, suite: str, threads: int, seconds: float, resume: bool) -> LoadResult:
    """The child's side: closed-loop TLCP handshakes through BabaSSL; latency is connect to Finished."""
    from tests.interop.babassl import BabaSSL, BabaSSLError

    lib = BabaSSL()
    ctx = lib.new_context(server=False)
    lib.set_options(ctx, _NO_TICKET)
    lib.set_cipher_list(ctx, suite)
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"resumed": 0, "errors": 0}
    first_error: list[str] = []
    deadline = time.perf_counter() + seconds

    def handshake(session: int) -> tuple[float, bool, int]:
        started = time.perf_counter()
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.settimeout(None)  # libssl needs a blocking descriptor
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ssl = lib.new_ssl(ctx, sock.fileno())
        try:
            if session:
                lib.set_session(ssl, session)
            lib.handshake(ssl, server=False)
            elapsed = time.perf_counter() - started
            reused = lib.session_reused(ssl)
            lib.shutdown(ssl)
            buffer = ctypes.create_string_buffer(4096)
            try:
                while lib.read(ssl, buffer):
                    pass
            except BabaSSLError:
                pass  # the server closed without its close_notify: the handshake still counts
            return elapsed, reused, lib.get1_session(ssl)
        finally:
            lib.free_ssl(ssl)
            sock.close()

    def worker() -> None:
        session = 0
        while time.perf_counter() < deadline:
            try:
                elapsed, reused, new_session = handshake(session)
            except (BabaSSLError, OSError) as exc:
                with lock:
                    counts["errors"] += 1
                    first_error.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(elapsed)
                counts["resumed"] += int(reused)
            if resume and not session:
                session = new_session
            elif new_session:
                lib.free_session(new_session)
        if session:
            lib.free_session(session)

    started = time.perf_counter()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.perf_counter() - started
    lib.free_context(ctx)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    problem = f"{counts['errors']} failed connections, first: {first_error[0]}" if first_error else None
    return LoadResult(
        operations=len(latencies),
        seconds=elapsed,
        p50_ms=quantiles[49] * 1e3,
        p99_ms=quantiles[98] * 1e3,
        problem=problem,
        resumed=counts["resumed"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="internal: the TLCP load child of bench/proxy.py")
    sub = parser.add_subparsers(dest="command", required=True)
    tlcp = sub.add_parser("tlcp")
    tlcp.add_argument("--port", type=int, required=True)
    tlcp.add_argument("--suite", required=True)
    tlcp.add_argument("--threads", type=int, default=8)
    tlcp.add_argument("--seconds", type=float, default=8.0)
    tlcp.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    result = _tlcp_client(args.port, args.suite, args.threads, args.seconds, args.resume)
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
