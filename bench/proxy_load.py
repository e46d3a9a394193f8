"""Load generators for bench/proxy.py, each pinned to the load core.

* HTTP/1.1 and TLS 1.3: Debian's ``wrk`` (one thread, ``--connections`` keep-alive connections; with
  ``Connection: close`` a new connection per request: wrk then re-offers the previous connection's
  TLS 1.3 session ticket, so those are PSK-(EC)DHE resumptions wherever the server accepts them).
* TLCP: the interop harness's BabaSSL 8.3.2 client load (tests/interop/babassl.py, libssl through
  ctypes, in a child process), closed loop: ``--threads`` connections in flight, each doing connect,
  handshake, close_notify, close, again; ``--resume`` re-offers each thread's first session
  (session-ID resumption, tickets off).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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
    """Run the interop harness's BabaSSL client load (``python -m tests.interop.babassl load``) pinned to
    ``cpu``; latency is the handshake's (SSL_connect)."""
    argv = ["taskset", "-c", str(cpu), sys.executable, "-m", "tests.interop.babassl", "load"]
    argv += ["--port", str(port), "--suite", suite, "--threads", str(threads), "--duration", str(seconds)]
    argv += ["--resume"] if resume else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=seconds + 120)
    try:
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        return LoadResult(
            operations=int(summary["handshakes"]),
            seconds=float(summary["seconds"]),
            p50_ms=float(summary["handshake_p50_ms"]),
            p99_ms=float(summary["handshake_p99_ms"]),
            problem=f"{summary['errors']} failed connections, first: {summary['first_error']}"
            if summary["errors"]
            else None,
            resumed=int(summary["resumed"]),
        )
    except (IndexError, KeyError, ValueError):
        problem = f"TLCP load failed ({result.returncode}): {(result.stdout + result.stderr).strip()[-300:]}"
        return LoadResult(0, 0.0, 0.0, 0.0, problem=problem)
