"""Audit pipeline benchmark: what the data path pays per event, and what the pipeline sustains.

Run: ``.venv/bin/python bench/audit.py [--events N] [--gateway | --gateway-only] [--pipeline thread|process]``.
Prints, from one run:

1. ``emit()`` calls/s as the gateway sees them (enqueue only) next to ``NullAuditLog.emit`` (the
   "audit off" baseline) and a bare ``dict`` build.
2. Pipeline processing rate per stage set, in-process: redact + context + canonical JSON ("no chain",
   the baseline), then + HMAC-SM3 chain, then + chain + SM3 checkpoint digest + an SM2-signed checkpoint
   every 1000 records ("full").
3. End to end: events/s from the first ``emit`` until everything is on disk (``flush``), with
   checkpoints every 1000 records and ``fsync: interval``, and the CPU per event on each side.
4. With ``--gateway``: three in-process gateways (plain HTTP -> a minimal upstream) on the event loop
   ``smgate serve`` uses (uvloop when installed), two with audit off (``NullAuditLog``) and one with
   audit on, driven in turn by a load-generator process: rounds of off A / on / off B. The gateways keep
   CPU 0; the load generator, the upstream and the audit pipeline process share the other CPUs. Printed:
   requests/s, the median over rounds of the request-rate cost ``1 - on / mean(A, B)`` (target: under
   10 %), the same statistic for B against A (the method's noise floor on this machine), and the CPU per
   request of the gateway process and of the pipeline process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from structlog.typing import Processor

from audit.checkpoint import Checkpointer, CheckpointSigner
from audit.config import AuditConfig, load_audit_config
from audit.events import tls_fields
from audit.keys import write_audit_key
from audit.log import AuditEmitter, AuditLog, NullAuditLog
from audit.processors import EMIT_NS, LINE, ContextAdder, HmacChain, Redactor, canonicalise, run_processors
from tls.crypto import SM2PrivateKey

KEY = bytes(range(32))
FIELDS: dict[str, object] = {
    "conn_id": "01a2124b-6f00-7c00-8000-000000000001",
    "request_id": "01a2124b-6f00-7c00-8000-000000000002",
    "method": "POST",
    "host": "api.bank.example",
    "path": "/v1/payments/42",
    "status": 201,
    "bytes_received": 512,
    "bytes_sent": 80,
    "duration_ms": 3.25,
    "headers": {"authorization": "Bearer token", "user-agent": "bench"},
    **tls_fields(
        protocol="TLCP",
        cipher_suite="ECDHE_SM4_GCM_SM3",
        sni="api.bank.example",
        alpn="http/1.1",
        resumed=False,
    ),
}


def _chunked_rate(func: Callable[[], object], count: int, between: Callable[[], object]) -> float:
    """Calls/s of ``func`` in chunks of 1000, running ``between`` (untimed) after each chunk."""
    func()
    elapsed = 0.0
    for _ in range(max(1, count // 1000)):
        start = time.perf_counter()
        for _ in range(1000):
            func()
        elapsed += time.perf_counter() - start
        between()
    return max(1, count // 1000) * 1000 / elapsed


def emit_rates(count: int, config: AuditConfig) -> dict[str, float]:
    """What the caller pays. The queue is emptied between chunks (as the running pipeline would), so a
    growing backlog does not bill the garbage collector to ``emit``."""
    null = NullAuditLog()
    log = AuditLog.from_config(config)  # not started: emit only enqueues, which is all the caller pays

    def drain() -> None:
        buffer = getattr(log, "_buffer", None)  # pipeline: process buffers in a deque
        if buffer is not None:
            buffer.clear()
        queue = getattr(log, "_queue", None)  # pipeline: thread queues for its thread
        while queue is not None and not queue.empty():
            queue.get_nowait()

    candidates: dict[str, Callable[[], object]] = {
        "dict build (floor)": lambda: dict(FIELDS),
        "NullAuditLog.emit (audit off)": lambda: null.emit("http.request", **FIELDS),
        "AuditLog.emit (audit on)": lambda: log.emit("http.request", **FIELDS),
    }
    best = dict.fromkeys(candidates, 0.0)
    for _ in range(3):  # interleaved rounds, best of three: the machine is shared
        for name, func in candidates.items():
            best[name] = max(best[name], _chunked_rate(func, count, drain))
    return best


def stage_rates(count: int) -> dict[str, float]:
    signer = CheckpointSigner(SM2PrivateKey.generate())

    def run(chain: bool, checkpoints: bool) -> float:
        redactor = Redactor(b"r" * 32, hash_paths=["headers.authorization"])
        context = ContextAdder(instance="bench", pid=1)
        hmac_chain = HmacChain(KEY, signer=signer)
        processors: list[Processor] = [redactor, context, canonicalise]
        if chain:
            processors.append(hmac_chain)
        checkpointer = Checkpointer(signer=signer, every_records=1000, every_seconds=3600.0, now=0.0)
        lines = []
        start = time.perf_counter()
        for _ in range(count):
            record = run_processors(processors, {**FIELDS, "event": "http.request", EMIT_NS: time.time_ns()})
            line = record[LINE] if chain else record["_canonical"]
            lines.append(line)
            if checkpoints:
                checkpointer.observe(record["seq"], line)
                if checkpointer.due(0.0):
                    body = checkpointer.body("count", head_seq=record["seq"], head_mac=hmac_chain.prev)
                    checkpoint = run_processors(processors, body)  # the chain step signs it
                    checkpointer.reset(checkpoint["seq"], 0.0)
        return count / (time.perf_counter() - start)

    modes = {
        "no chain (baseline)": (False, False),
        "+ HMAC-SM3 chain": (True, False),
        "+ chain + signed checkpoints": (True, True),
    }
    best = dict.fromkeys(modes, 0.0)
    for _ in range(3):  # interleaved rounds, best of three: the machine is shared
        for name, (chain, checkpoints) in modes.items():
            best[name] = max(best[name], run(chain, checkpoints))
    return best


async def end_to_end_rate(count: int, config: AuditConfig) -> tuple[float, float, float]:
    """Events/s from the first ``emit`` to ``flush``, and CPU microseconds per event of this process
    and of the pipeline process (0 for ``pipeline: thread``)."""
    log = AuditLog.from_config(config)
    await log.start()
    start = time.perf_counter()
    cpu_start = time.process_time()
    pipeline_cpu_start = pipeline_process_cpu(log)
    for index in range(count):
        log.emit("http.request", **FIELDS)
        if index % 256 == 0:
            await asyncio.sleep(0)
    await log.flush(timeout=120)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    pipeline_cpu = pipeline_process_cpu(log) - pipeline_cpu_start
    await log.aclose()
    dropped = log.metrics().dropped
    if dropped:
        print(f"  (queue overflowed: {dropped} events declared in audit.gap)")
    return count / elapsed, 1e6 * cpu / count, 1e6 * pipeline_cpu / count


def pipeline_process_cpu(audit: object) -> float:
    """CPU seconds used so far by the audit pipeline child of ``audit`` (0.0 if it has none)."""
    pid = getattr(audit, "pipeline_pid", None)
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


# The load generator and the upstream share the non-gateway CPUs with the audit pipeline process, so
# both are as lean as asyncio allows (protocols, no streams; uvloop when installed): what they spend is
# not what is measured, and a saturated helper CPU would slow the gateway without any audit cost.
_HELPER_LOOP = """
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
"""

_UPSTREAM = (
    _HELPER_LOOP
    + """
import asyncio, sys
RESPONSE = b"HTTP/1.1 200 OK\\r\\ncontent-length: 3\\r\\n\\r\\nok\\n"
class Responder(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.data = transport, b""
    def data_received(self, data):
        self.data += data
        count = self.data.count(b"\\r\\n\\r\\n")  # bodiless GETs: one request per header block
        if count:
            self.data = self.data[self.data.rindex(b"\\r\\n\\r\\n") + 4 :]
            self.transport.write(RESPONSE * count)
async def main():
    server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""
)

_LOAD = (
    _HELPER_LOOP
    + """
import asyncio, sys, time
port, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
REQUEST = b"GET /anything HTTP/1.1\\r\\nhost: bench\\r\\n\\r\\n"
class Client(asyncio.Protocol):
    def __init__(self, deadline, counts, done):
        self.deadline, self.counts, self.done, self.data = deadline, counts, done, b""
    def connection_made(self, transport):
        self.transport = transport
        transport.write(REQUEST)
    def data_received(self, data):
        self.data += data
        end = self.data.find(b"\\r\\n\\r\\n")
        if end < 0:
            return
        head = self.data[:end].lower()
        length = int(head.split(b"content-length:")[1].split(b"\\r\\n")[0])
        if len(self.data) < end + 4 + length:
            return
        self.data = self.data[end + 4 + length :]
        self.counts[0] += 1
        if time.perf_counter() < self.deadline:
            self.transport.write(REQUEST)
        else:
            self.transport.close()
    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)
async def main():
    loop = asyncio.get_running_loop()
    counts = [0]
    start = time.perf_counter()
    waiters = []
    for _ in range(clients):
        done = loop.create_future()
        await loop.create_connection(lambda: Client(start + seconds, counts, done), "127.0.0.1", port)
        waiters.append(done)
    await asyncio.gather(*waiters)
    print(counts[0], counts[0] / (time.perf_counter() - start), flush=True)
asyncio.run(main())
"""
)


@dataclass(frozen=True)
class Slice:
    """One load slice against one gateway."""

    #: requests/s the load generator saw
    rps: float
    #: CPU the gateway process (event loop, any audit threads) spent per request, microseconds
    cpu_us: float
    #: CPU the audit pipeline process spent per request, microseconds (0 without one)
    pipeline_cpu_us: float


async def start_bench_gateway(audit: AuditEmitter, upstream_port: int) -> tuple[Any, int]:
    """An in-process gateway (plain HTTP listener -> the upstream) with ``audit``, and its port."""
    from gateway.config import parse_config
    from gateway.server import Gateway

    doc = {
        "listeners": [
            {
                "name": "bench",
                "port": 0,
                "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "main"}]}],
            }
        ],
        "route_configs": [
            {
                "name": "main",
                "virtual_hosts": [
                    {
                        "name": "any",
                        "domains": ["*"],
                        "routes": [{"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "echo"}}],
                    }
                ],
            }
        ],
        "clusters": [{"name": "echo", "endpoints": [{"address": "127.0.0.1", "port": upstream_port}]}],
        "admin": None,
    }
    gateway = Gateway(parse_config(doc, Path.cwd()), audit=audit)  # type: ignore[arg-type]
    await gateway.start()
    return gateway, next(iter(gateway.listeners.values())).port


async def drive(port: int, audit: object, *, clients: int, seconds: float) -> Slice:
    """One load-generator run against ``port``; CPU of this process and of ``audit``'s pipeline process."""
    cpu_start = time.process_time()
    pipeline_cpu_start = pipeline_process_cpu(audit)
    load = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LOAD, str(port), str(clients), str(seconds), stdout=asyncio.subprocess.PIPE
    )
    pin_to_helper_cpus(load.pid)
    output, _ = await load.communicate()
    cpu = time.process_time() - cpu_start
    pipeline_cpu = pipeline_process_cpu(audit) - pipeline_cpu_start
    count, rate = output.decode().split()
    requests = max(1, int(count))
    return Slice(float(rate), 1e6 * cpu / requests, 1e6 * pipeline_cpu / requests)


async def gateway_overhead(
    config: AuditConfig, *, clients: int, seconds: float, rounds: int
) -> dict[str, Any]:
    """Three gateways in this process, all in front of one upstream: two with audit off (``NullAuditLog``;
    A and B) and one with audit on (``AuditLog`` from ``config``). Each round drives A, on, B for
    ``seconds`` each. The cost of a round is ``1 - on / mean(A, B)`` (its neighbours cancel a linear
    drift of the machine's speed); ``1 - B / A`` over the same rounds is the noise floor of the method.
    Returned: medians over rounds, and each round's cost.
    """
    upstream = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _UPSTREAM, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert upstream.stdout is not None and upstream.stdin is not None
    upstream_port = int((await upstream.stdout.readline()).decode())
    pin_to_helper_cpus(upstream.pid)
    log = AuditLog.from_config(config)
    gateways = []
    try:
        await log.start()
        if log.pipeline_pid is not None:
            pin_to_helper_cpus(log.pipeline_pid)
        audits: dict[str, AuditEmitter] = {"off_a": NullAuditLog(), "on": log, "off_b": NullAuditLog()}
        ports = {}
        for name, audit in audits.items():
            gateway, ports[name] = await start_bench_gateway(audit, upstream_port)
            gateways.append(gateway)
        await drive(ports["off_a"], None, clients=clients, seconds=0.5)  # warm-up: connections, caches

        slices: dict[str, list[Slice]] = {name: [] for name in audits}
        for _ in range(rounds):
            for name, audit in audits.items():
                slices[name].append(await drive(ports[name], audit, clients=clients, seconds=seconds))
    finally:
        for gateway in gateways:
            await gateway.stop()
        await log.aclose()
        upstream.stdin.close()
        await upstream.wait()
    off_a, on, off_b = slices["off_a"], slices["on"], slices["off_b"]
    rate_costs = [1 - b.rps / ((a.rps + c.rps) / 2) for a, b, c in zip(off_a, on, off_b, strict=True)]
    cpu_costs = [1 - (a.cpu_us + c.cpu_us) / 2 / b.cpu_us for a, b, c in zip(off_a, on, off_b, strict=True)]
    noise = [1 - c.rps / a.rps for a, c in zip(off_a, off_b, strict=True)]
    return {
        "audit_off_rps": statistics.median(item.rps for item in off_a + off_b),
        "audit_on_rps": statistics.median(item.rps for item in on),
        "overhead_percent": 100.0 * statistics.median(rate_costs),
        "overhead_quartiles": [round(100.0 * q, 1) for q in statistics.quantiles(rate_costs, n=4)[::2]],
        "round_overheads": [round(100.0 * cost, 1) for cost in rate_costs],
        "noise_percent": 100.0 * statistics.median(noise),
        "noise_quartiles": [round(100.0 * q, 1) for q in statistics.quantiles(noise, n=4)[::2]],
        "round_noise": [round(100.0 * value, 1) for value in noise],
        "audit_off_cpu_us": statistics.median(item.cpu_us for item in off_a + off_b),
        "audit_on_cpu_us": statistics.median(item.cpu_us for item in on),
        "cpu_overhead_percent": 100.0 * statistics.median(cpu_costs),
        "pipeline_cpu_us": statistics.median(item.pipeline_cpu_us for item in on),
    }


#: CPUs for the load generator, the upstream and the audit pipeline process; the gateway loop keeps CPU 0
_HELPER_CPUS: set[int] = set()


def pin_gateway_cpu() -> None:
    """Give the gateway (this process) CPU 0 and everything else the other CPUs, so the load generator
    and upstream do not take turns with the gateway on one core (that noise is larger than the target)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    os.sched_setaffinity(0, {cpus[0]})
    _HELPER_CPUS.update(cpus[1:])


def pin_to_helper_cpus(pid: int) -> None:
    if _HELPER_CPUS:
        os.sched_setaffinity(pid, _HELPER_CPUS)


def bench_config(directory: Path, pipeline: str = "thread", batch_linger: float | None = None) -> AuditConfig:
    key_file = directory / "audit.key"
    write_audit_key(key_file)
    signing_key = directory / "audit_sign.key"
    signing_key.write_bytes(SM2PrivateKey.generate().to_pkcs8_pem())
    return load_audit_config(
        {
            "key_file": str(key_file),
            "signing_key": str(signing_key),
            "instance_id": "bench",
            "pipeline": pipeline,
            "queue_size": 1_000_000,
            "checkpoint": {"every_records": 1000, "every_seconds": 60},
            "sinks": [{"type": "file", "directory": str(directory / "log"), "fsync": "interval"}],
            **({} if batch_linger is None else {"batch_linger": batch_linger}),
        }
    )


def pipeline_figures(events: int, config: AuditConfig) -> None:
    """Parts 1-3: what ``emit`` costs the caller, each pipeline stage, and the pipeline end to end."""
    print("\n1. caller side: emit() calls/s")
    emits = emit_rates(events, config)
    floor = emits["NullAuditLog.emit (audit off)"]
    for name, value in emits.items():
        print(f"  {name:34s} {value:12,.0f}/s  {1e6 / value:6.2f} us/call  x{value / floor:.2f} of audit-off")
    print("\n2. pipeline stages (one thread, in memory): events/s")
    stages = stage_rates(events)
    baseline = stages["no chain (baseline)"]
    for name, value in stages.items():
        print(
            f"  {name:34s} {value:12,.0f}/s  {1e6 / value:6.2f} us/event  x{value / baseline:.2f} of baseline"
        )
    print("\n3. end to end (emit -> chained, checkpointed, written): events/s")
    rate, cpu_us, pipeline_cpu_us = asyncio.run(end_to_end_rate(events, config))
    print(
        f"  {'AuditLog, file sink, fsync interval':34s} {rate:12,.0f}/s  {cpu_us:6.2f} us CPU/event here"
        f" + {pipeline_cpu_us:.2f} in the pipeline process"
    )


def gateway_figures(
    config: AuditConfig, *, clients: int, seconds: float, rounds: int, use_uvloop: bool
) -> None:
    """Part 4: the gateway's request rate and CPU per request, audit off vs on."""
    from gateway.cli import install_event_loop_policy

    loop_name = install_event_loop_policy(use_uvloop)  # as ``smgate serve`` does
    print(
        f"\n4. gateway (plain HTTP keep-alive, {clients} clients, gateway loop {loop_name}; {rounds} rounds of"
        f" audit off A / on / off B, {seconds}s each)"
    )
    pin_gateway_cpu()
    result = asyncio.run(gateway_overhead(config, clients=clients, seconds=seconds, rounds=rounds))
    print(f"  {'audit off (NullAuditLog)':38s} {result['audit_off_rps']:10,.0f} req/s")
    print(f"  {'audit on (AuditLog)':38s} {result['audit_on_rps']:10,.0f} req/s")
    print(
        f"  {'request-rate cost, median of rounds':38s} {result['overhead_percent']:9.1f} %  (target < 10 %;"
        f" quartiles {result['overhead_quartiles']})"
    )
    print(f"  {'  each round: 1 - on / mean(A, B), %':38s} {result['round_overheads']}")
    print(
        f"  {'noise floor (off B vs off A), median':38s} {result['noise_percent']:9.1f} %  (quartiles"
        f" {result['noise_quartiles']})"
    )
    print(f"  {'  each round: 1 - B / A, %':38s} {result['round_noise']}")
    print(f"  {'gateway process CPU, audit off':38s} {result['audit_off_cpu_us']:10,.1f} us/req")
    print(f"  {'gateway process CPU, audit on':38s} {result['audit_on_cpu_us']:10,.1f} us/req")
    print(f"  {'gateway CPU cost, median of rounds':38s} {result['cpu_overhead_percent']:9.1f} %")
    if result["pipeline_cpu_us"]:
        print(
            f"  {'audit pipeline process CPU':38s} {result['pipeline_cpu_us']:10,.1f} us/req"
            "  (on the other CPUs, with the load generator and upstream)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument(
        "--gateway", action="store_true", help="also measure gateway requests/s, audit off vs on"
    )
    parser.add_argument("--gateway-only", action="store_true", help="only the gateway comparison (part 4)")
    parser.add_argument("--seconds", type=float, default=0.6, help="load duration per gateway slice")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--batch-linger", type=float, default=None, help="audit batch_linger (default: config default)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="run the gateway on the stock asyncio loop")
    parser.add_argument("--rounds", type=int, default=30, help="rounds of audit off A / on / off B")
    parser.add_argument(
        "--pipeline",
        choices=("thread", "process"),
        default=None,
        help="audit pipeline (default: config default)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        config = bench_config(
            Path(temporary),
            args.pipeline or AuditConfig.model_fields["pipeline"].default,
            args.batch_linger,
        )
        print(
            f"audit bench: {args.events} http.request events (~{len(str(FIELDS))} chars of fields),"
            f" pipeline: {config.pipeline}, batch_linger: {config.batch_linger}s"
        )
        if not args.gateway_only:
            pipeline_figures(args.events, config)
        if args.gateway or args.gateway_only:
            gateway_figures(
                config,
                clients=args.clients,
                seconds=args.seconds,
                rounds=args.rounds,
                use_uvloop=not args.no_uvloop,
            )


if __name__ == "__main__":
    main()
