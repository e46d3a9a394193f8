"""TLS 1.3 (RFC 8998) server benchmark: smgate (tls.tls13.aio) beside BabaSSL 8.3.2, under the same BabaSSL load.

Usage: ``.venv/bin/python bench/tls13.py [--duration 4] [--rounds 3] [--threads 8]
[--suites TLS_SM4_GCM_SM3,...|all] [--no-uvloop] [--profile DIR] [--instructions DIR]`` (about a minute
per suite and round).

For each suite and each server in turn (both one process pinned to CPU 0; the load is one BabaSSL
client process pinned to CPU 1 running ``--threads`` closed-loop connections):

* full handshakes/s (curveSM2 ECDHE, sm2sig_sm3 server signature, no client certificate),
* resumed handshakes/s (psk_dhe_ke from a session ticket: each load thread re-offers its first ticket;
  both servers issue stateless tickets),
* bulk MiB/s (one connection streaming 32 MiB into a server that discards it).

Every rate is printed per wall-clock second and per second of server CPU time (from /proc), and the
server CPU per operation with the smgate/BabaSSL ratio: on a shared machine the CPU figures are the
fair comparison.  Nothing here asserts a speed.  ``--profile DIR`` records the smgate server with
py-spy during the first round (collapsed stacks), splits its time into SM2 scalar operations, the
engine, the asyncio adapter and the event loop/kernel, and summarises the functions as bench/tlcp.py.

``--instructions DIR`` times nothing: it runs each server under valgrind's callgrind and prints the
user-space instructions per full and per resumed handshake of both, with their ratio.  CPU time per
handshake moves by 10-20 % with the load of a shared machine; the instruction count repeats to within a
fraction of a percent, so it shows what a change to the engine saved.  It leaves out the kernel and
counts an instruction of the Python interpreter the same as one of libcrypto's bignum code, which runs
at a higher rate, so it understates the Python side; the CPU figures stay the comparison the targets use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.tlcp import process_cpu_seconds, profiled, summarize_profile  # noqa: E402
from tests.interop.babassl import TLS13_SUITE_NAMES  # noqa: E402
from tests.interop.identities import TONGSUO_PKI  # noqa: E402
from tls.tls13 import CipherSuite, SessionTicketKeys, SM2Credential, TLS13Configuration  # noqa: E402
from tls.tls13.aio import TLS13Stream, start_tls13_server  # noqa: E402

SERVER_CPU = 0
CLIENT_CPU = 1
BULK_PAYLOAD = 32 * 1024 * 1024
MIB = 1024 * 1024


async def _serve_smgate(suite: CipherSuite, mode: str) -> None:
    configuration = TLS13Configuration(
        is_client=False,
        cipher_suites=(suite,),
        credential=SM2Credential.from_certificate_set(TONGSUO_PKI.server_set),
        trust_store=TONGSUO_PKI.trust_store,
        ticket_keys=SessionTicketKeys(),
    )

    async def handle(stream: TLS13Stream) -> None:
        while data := await stream.read(1 << 20):
            if mode == "echo":
                stream.write(data)
                await stream.drain()

    server = await start_tls13_server("127.0.0.1", 0, lambda: configuration, handle, backlog=512)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "listening", "port": port, "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


@contextlib.contextmanager
def running_server(
    kind: str, suite: CipherSuite, mode: str, *, use_uvloop: bool, wrapper: Sequence[str] = ()
) -> Iterator[tuple[int, int]]:
    """Start a server child pinned to SERVER_CPU (run under ``wrapper``, e.g. valgrind); yields (port, pid)."""
    if kind == "smgate":
        command = [sys.executable, str(Path(__file__).resolve()), "serve-smgate", "--suite", str(int(suite))]
        command += ["--mode", mode] + (["--uvloop"] if use_uvloop else [])
    else:
        command = [
            sys.executable,
            "-m",
            "tests.interop.babassl",
            "server",
            "--protocol",
            "tls13",
            "--tickets",
        ]
        command += ["--suite", TLS13_SUITE_NAMES[suite], *TONGSUO_PKI.server_files.as_args()]
        command += ["--mode", mode, "--quiet", "--cpu", str(SERVER_CPU)]
    process = subprocess.Popen([*wrapper, *command], stdout=subprocess.PIPE, cwd=REPO, text=True)
    try:
        os.sched_setaffinity(process.pid, {SERVER_CPU})
        assert process.stdout is not None
        record = json.loads(process.stdout.readline())
        yield int(record["port"]), process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Measurement:
    units: float
    seconds: float
    server_cpu: float
    client_cpu: float
    errors: int

    @property
    def rate(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_unit(self) -> float:
        return self.server_cpu / self.units if self.units else float("inf")


def run_load(
    port: int,
    server_pid: int,
    suite: CipherSuite,
    *,
    threads: int,
    duration: float,
    resume: bool,
    payload: int,
) -> Measurement:
    command = [
        sys.executable,
        "-m",
        "tests.interop.babassl",
        "load",
        "--protocol",
        "tls13",
        "--port",
        str(port),
    ]
    command += ["--suite", TLS13_SUITE_NAMES[suite], "--threads", str(threads), "--duration", str(duration)]
    command += ["--cpu", str(CLIENT_CPU), "--tickets"]
    if resume:
        command.append("--resume")
    if payload:
        command += ["--payload-size", str(payload), "--no-echo"]
    server_before = process_cpu_seconds(server_pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=duration + 120)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = process_cpu_seconds(server_pid) - server_before
    summary = json.loads(output.stdout.strip().splitlines()[-1])
    if summary.get("errors"):
        print(
            f"    ! {summary['errors']} failed connections, first: {summary.get('first_error')}", flush=True
        )
    if resume and summary["handshakes"] and summary["resumed"] < 0.9 * summary["handshakes"]:
        print(f"    ! only {summary['resumed']} of {summary['handshakes']} handshakes resumed", flush=True)
    key = "bytes_sent" if payload else ("resumed" if resume else "handshakes")
    client_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return Measurement(
        float(summary[key]), float(summary["seconds"]), server_cpu, client_cpu, int(summary["errors"])
    )


PHASES = ("full", "resumed", "bulk")

#: Where the smgate server's time goes, by the innermost matching frame of each py-spy sample.
SPLIT_BUCKETS = (
    (
        "SM2 scalar operations (libcrypto via cffi)",
        ("OpenSSLBackend.point_mul", "OpenSSLBackend.sign", "OpenSSLBackend.verify"),
    ),
    ("TLS 1.3 engine (tls/tls13 core: Python, SM3/SM4/HKDF calls)", ("tls/tls13/",)),
    ("asyncio adapter (tls/tls13/aio.py, incl. its socket writes)", ("tls/tls13/aio.py",)),
)


def split_profile(path: Path, cpu_per_operation: float) -> list[str]:
    """Share of the server's samples per bucket, and the CPU per operation that share stands for."""
    if not path.exists():
        return [f"  (no profile at {path})"]
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        frames = stack.split(";")
        total += int(count_text)
        bucket = "event loop, sockets, kernel (uvloop) and the rest"
        for name, markers in SPLIT_BUCKETS:
            if any(
                marker in frame and (marker != "tls/tls13/" or "aio.py" not in frame)
                for frame in frames
                for marker in markers
            ):
                bucket = name
                break
        counts[bucket] = counts.get(bucket, 0) + int(count_text)
    if not total:
        return ["  (no samples)"]
    return [
        f"  {100 * count / total:5.1f}%  ~{1e3 * cpu_per_operation * count / total:6.3f} ms/op  {bucket}"
        for bucket, count in sorted(counts.items(), key=lambda item: -item[1])
    ]


def measure_server(
    kind: str, suite: CipherSuite, *, threads: int, duration: float, use_uvloop: bool, profile: Path | None
) -> dict[str, Measurement]:
    """One server's full, resumed and bulk figures (a fresh server process for bulk, in sink mode)."""
    runs: dict[str, Measurement] = {}
    directory = profile if kind == "smgate" else None
    with running_server(kind, suite, "echo", use_uvloop=use_uvloop) as (port, pid):
        for phase in ("full", "resumed"):
            with profiled(pid, directory, f"{phase}-{suite.name}", duration):
                runs[phase] = run_load(
                    port,
                    pid,
                    suite,
                    threads=threads,
                    duration=duration,
                    resume=phase == "resumed",
                    payload=0,
                )
    with running_server(kind, suite, "sink", use_uvloop=use_uvloop) as (port, pid):
        with profiled(pid, directory, f"bulk-{suite.name}", duration):
            runs["bulk"] = run_load(
                port, pid, suite, threads=1, duration=duration, resume=False, payload=BULK_PAYLOAD
            )
    return runs


#: seconds to wait for callgrind to write a dump the bench asked for
DUMP_TIMEOUT = 120.0


def callgrind_total(path: Path) -> int | None:
    """The instructions a callgrind dump counted (its ``totals:`` line, written last), None until written."""
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
    return None


def wait_for_dump(path: Path) -> int:
    deadline = time.monotonic() + DUMP_TIMEOUT
    while (total := callgrind_total(path)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"callgrind wrote no dump {path}")
        time.sleep(0.5)
    return total


def count_instructions(
    kind: str, suite: CipherSuite, *, duration: float, use_uvloop: bool, directory: Path
) -> dict[str, float]:
    """User-space instructions per full and per resumed handshake of one server, under callgrind.

    The server starts uninstrumented; callgrind counts from the first load on and dumps after each
    phase (a dump resets the counters), so start-up is not counted.  One load connection at a time;
    the first handshake of a resumed phase is a full one (it fetches the ticket).
    """
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / f"callgrind-{kind}-{suite.name}.out"
    for stale in directory.glob(f"{output.name}*"):
        stale.unlink()
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={output}"]
    wrapper.append(f"--log-file={directory / f'valgrind-{kind}-{suite.name}.log'}")
    per_handshake: dict[str, float] = {}
    with running_server(kind, suite, "echo", use_uvloop=use_uvloop, wrapper=wrapper) as (port, pid):
        subprocess.run(["callgrind_control", "--instr=on", str(pid)], check=True, capture_output=True)
        for dump, phase in enumerate(("full", "resumed"), start=1):
            load = run_load(
                port, pid, suite, threads=1, duration=duration, resume=phase == "resumed", payload=0
            )
            subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
            total = wait_for_dump(Path(f"{output}.{dump}"))
            per_handshake[phase] = total / load.units if load.units else float("nan")
    return per_handshake


def report_instructions(
    suites: list[CipherSuite], *, duration: float, use_uvloop: bool, directory: Path
) -> None:
    """Print both servers' instructions per handshake and the smgate/BabaSSL ratio."""
    print(
        "user-space instructions per handshake under callgrind (kernel excluded; independent of the "
        "machine's load, unlike CPU time; one load connection)"
    )
    for suite in suites:
        counts = {
            kind: count_instructions(
                kind, suite, duration=duration, use_uvloop=use_uvloop, directory=directory
            )
            for kind in ("smgate", "babassl")
        }
        for phase in ("full", "resumed"):
            smgate, babassl = counts["smgate"][phase], counts["babassl"][phase]
            print(
                f"  {suite.name} {phase:8} smgate {smgate / 1e6:7.2f} M   BabaSSL {babassl / 1e6:7.2f} M   "
                f"ratio {smgate / babassl:5.2f}",
                flush=True,
            )


def _spread(values: list[float], digits: int = 2) -> str:
    """median [min-max]"""
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def render(metric: str, smgate: list[Measurement], babassl: list[Measurement], unit: str, target: str) -> str:
    """One row: medians over the rounds with [min-max]; ratios are taken per round (same-round pairs)."""
    scale, cost_scale, cost_unit = (1.0, 1e3, "ms") if unit == "hs/s" else (MIB, 1e3 * MIB, "ms/MiB")
    pairs = list(zip(smgate, babassl, strict=True))
    cpu_ratios = [s.cpu_per_unit / b.cpu_per_unit for s, b in pairs]
    rate_ratios = [s.rate / b.rate for s, b in pairs]
    rates = (_spread([m.rate / scale for m in smgate], 1), _spread([m.rate / scale for m in babassl], 1))
    costs = (
        _spread([cost_scale * m.cpu_per_unit for m in smgate], 3),
        _spread([cost_scale * m.cpu_per_unit for m in babassl], 3),
    )
    return (
        f"{metric}   target {target}\n"
        f"    rate {unit:<12} smgate {rates[0]:<26} BabaSSL {rates[1]:<26} ratio {_spread(rate_ratios)}\n"
        f"    server CPU {cost_unit:<6} smgate {costs[0]:<26} BabaSSL {costs[1]:<26} ratio {_spread(cpu_ratios)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve-smgate", help="internal: the smgate server child")
    serve.add_argument("--suite", type=lambda text: CipherSuite(int(text, 0)), required=True)
    serve.add_argument("--mode", choices=("echo", "sink"), default="echo")
    serve.add_argument("--uvloop", action="store_true")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians and [min-max] are reported)")
    parser.add_argument("--threads", type=int, default=8, help="concurrent BabaSSL client connections")
    parser.add_argument("--suites", default="TLS_SM4_GCM_SM3", help="comma list, or 'all'")
    parser.add_argument("--profile", type=Path, help="py-spy the smgate server into this directory")
    parser.add_argument(
        "--instructions",
        type=Path,
        metavar="DIR",
        help="instead of timing: count both servers' instructions per handshake with valgrind (callgrind "
        "output in DIR); --duration is per phase, valgrind runs the servers about 50 times slower",
    )
    parser.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=importlib.util.find_spec("uvloop") is not None,
        help="run the smgate server on uvloop, as `smgate serve` does (default: if installed)",
    )
    args = parser.parse_args(argv)
    if args.command == "serve-smgate":
        os.sched_setaffinity(0, {SERVER_CPU})
        loop_factory = None
        if args.uvloop:
            import uvloop

            loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve_smgate(args.suite, args.mode))
        return 0
    if os.cpu_count() == 1:
        print("needs two CPUs (server and load pinned apart)", file=sys.stderr)
        return 2
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    suites = (
        list(CipherSuite) if args.suites == "all" else [CipherSuite[name] for name in args.suites.split(",")]
    )
    if args.instructions:
        report_instructions(
            suites, duration=args.duration, use_uvloop=args.uvloop, directory=args.instructions
        )
        return 0
    samples: dict[tuple[CipherSuite, str], list[dict[str, Measurement]]] = {}
    for round_index in range(args.rounds):
        # alternate which server goes first, so a drift in the machine's load does not favour one
        kinds = ("smgate", "babassl") if round_index % 2 == 0 else ("babassl", "smgate")
        for suite in suites:
            for kind in kinds:
                profile = args.profile if round_index == 0 else None
                runs = measure_server(
                    kind,
                    suite,
                    threads=args.threads,
                    duration=args.duration,
                    use_uvloop=args.uvloop,
                    profile=profile,
                )
                samples.setdefault((suite, kind), []).append(runs)
                print(
                    f"  round {round_index + 1} {kind:8} {suite.name}: full {runs['full'].rate:.0f}/s "
                    f"({1e3 * runs['full'].cpu_per_unit:.3f} ms CPU), resumed {runs['resumed'].rate:.0f}/s "
                    f"({1e3 * runs['resumed'].cpu_per_unit:.3f} ms CPU), "
                    f"bulk {runs['bulk'].rate / MIB:.1f} MiB/s",
                    flush=True,
                )
    print()
    print(
        f"server pinned to CPU {SERVER_CPU}, BabaSSL load ({args.threads} concurrent, 1 for bulk) on CPU {CLIENT_CPU}, "
        f"smgate loop: {'uvloop' if args.uvloop else 'asyncio'}, {args.duration:.1f} s per point, "
        f"{args.rounds} rounds: median [min-max]."
    )
    targets = {"full": "CPU <= 1.0x", "resumed": "CPU <= 1.5x", "bulk": "rate >= 0.9x"}
    titles = {"full": "full handshake", "resumed": "resumed handshake", "bulk": "bulk client->server"}
    for suite in suites:
        for phase in PHASES:
            smgate = [runs[phase] for runs in samples[(suite, "smgate")]]
            babassl = [runs[phase] for runs in samples[(suite, "babassl")]]
            unit = "MiB/s" if phase == "bulk" else "hs/s"
            print(render(f"{suite.name} {titles[phase]}", smgate, babassl, unit, targets[phase]))
    if args.profile:
        for suite in suites:
            for phase in PHASES:
                path = args.profile / f"{phase}-{suite.name}.txt"
                cpu = samples[(suite, "smgate")][0][phase].cpu_per_unit * (MIB if phase == "bulk" else 1)
                unit = "MiB" if phase == "bulk" else "handshake"
                print(f"\nprofile: {suite.name} {phase}, round 1 ({path}); per {unit}:")
                print("\n".join(split_profile(path, cpu)))
                print("\n".join(summarize_profile(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
