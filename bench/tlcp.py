"""TLCP server benchmark: smgate (tls.tlcp.aio) beside BabaSSL 8.3.2 NTLS, under the same BabaSSL load.

Usage: ``.venv/bin/python bench/tlcp.py [--duration 4] [--threads 8] [--profile DIR] [--no-uvloop]``
(about 2 minutes; the smgate server runs on uvloop when it is installed, as ``smgate serve`` does).

``bench/tlcp.py dialect [--rounds 20] [--later 3]`` measures instead what profile auto costs: the wall
time of the first client connection to an unknown endpoint and of later ones, against emulated servers
whose flight reveals their dialect and against ones whose flight misleads (one extra handshake).

For each suite it measures, for both servers in turn:

* full handshakes/s (ECC suites without client auth, ECDHE suites with client auth, as deployed),
* resumed handshakes/s (session-ID resumption, each load thread re-offering its first session),
* bulk MB/s for SM4-GCM and SM4-CBC (one connection streaming into a server that discards the data).

Both servers are one process pinned to CPU 0 (smgate: one asyncio event loop; BabaSSL: a thread per
connection, which on one CPU amounts to the same accept-loop-and-serve shape); the load generator is one
BabaSSL client process pinned to CPU 1 running ``--threads`` closed-loop connections.  Beside the
measured rates it prints the crypto-bound limit measured in this run on the same CPU (an ECC full
handshake costs the server one SM2 sign and one SM2 decrypt; ECDHE with client auth costs one sign, one
ephemeral key, one SM2 key exchange, the CertificateVerify verify and two client chain checks as
`certs.verify_sm2_chain` performs them, i.e. cached after the first connection), and the ratios
smgate/limit and smgate/BabaSSL.

Every rate is printed twice: per wall-clock second, and per second of CPU time the server process used
(from /proc).  On a machine shared with other work the second is the fair comparison: it asks what one
fully available core would do.  Crypto costs are measured in process CPU time for the same reason.
Nothing here asserts a speed.

``--profile DIR`` also records the smgate server with py-spy (raw collapsed stacks into DIR) during the
full-handshake and bulk runs and prints the hottest frames.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from certs import Role, verify_sm2_chain  # noqa: E402
from tests.interop.babassl import SUITE_NAMES  # noqa: E402
from tests.interop.identities import (  # noqa: E402
    TONGSUO_PKI,
    client_configuration,
    is_ecdhe,
    server_configuration,
)
from tests.tlcp.dialect_servers import (  # noqa: E402
    GMSSL_PKI,
    GMSSL_SERVER,
    STANDARD_BEHIND_GMSSL_REQUEST,
    TONGSUO_BEHIND_GMSSL_REQUEST,
    TONGSUO_SERVER,
    DialectServer,
)
from tls.crypto import HMACSM3, SM4CBC, SM4GCM, SM2PrivateKey, sm2_key_exchange  # noqa: E402
from tls.tlcp import DialectCache, PeerProfile  # noqa: E402
from tls.tlcp.aio import TLCPStream, start_tlcp_server, tlcp_connect  # noqa: E402
from tls.tlcp.config import SessionCache  # noqa: E402
from tls.tlcp.suites import CipherSuite  # noqa: E402

SERVER_CPU = 0
CLIENT_CPU = 1
BULK_PAYLOAD = 32 * 1024 * 1024
RECORD = 16 * 1024
MIB = 1024 * 1024


# -- smgate server child ---------------------------------------------------------------------------------


async def _serve_smgate(suite: CipherSuite, client_auth: bool, mode: str) -> None:
    configuration = server_configuration(
        TONGSUO_PKI, suites=(suite,), client_auth=client_auth, session_cache=SessionCache(max_size=4096)
    )

    async def handle(stream: TLCPStream) -> None:
        while data := await stream.read(1 << 20):
            if mode == "echo":
                stream.write(data)
                await stream.drain()

    server = await start_tlcp_server("127.0.0.1", 0, lambda: configuration, handle, backlog=512)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "listening", "port": port, "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


async def _serve_dialect(name: str, suite: CipherSuite) -> None:
    traits, pki = DIALECT_SERVERS[name]
    server = DialectServer(traits, pki, suites=(suite,), client_auth=True)
    async with server.running():
        print(json.dumps({"event": "listening", "port": server.port, "pid": os.getpid()}), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


# -- profile auto: what the first connection to an unknown endpoint costs ----------------------------------

#: Emulated servers (tests/tlcp/dialect_servers.py): two whose flight reveals their dialect, two whose
#: flight misleads the recognition so that only the retry succeeds.
DIALECT_SERVERS = {
    "gmssl": (GMSSL_SERVER, GMSSL_PKI),
    "tongsuo": (TONGSUO_SERVER, TONGSUO_PKI),
    "standard-behind-gmssl-request": (STANDARD_BEHIND_GMSSL_REQUEST, TONGSUO_PKI),
    "tongsuo-behind-gmssl-request": (TONGSUO_BEHIND_GMSSL_REQUEST, TONGSUO_PKI),
}


@dataclass
class DialectCost:
    """First connections (empty cache) against later ones: wall ms each, CPU seconds summed."""

    first_ms: list[float] = field(default_factory=list)
    later_ms: list[float] = field(default_factory=list)
    first_client_cpu: float = 0.0
    later_client_cpu: float = 0.0
    first_server_cpu: float = 0.0
    later_server_cpu: float = 0.0
    #: retries (extra handshakes) paid by first connections, and by the later ones
    first_retries: int = 0
    later_retries: int = 0


async def _measure_dialect_cost(
    port: int, server_pid: int, name: str, suite: CipherSuite, rounds: int, later: int
) -> DialectCost:
    """``rounds`` times: a fresh cache (an unknown endpoint), one connection, then ``later`` more."""
    _, pki = DIALECT_SERVERS[name]
    configuration = client_configuration(pki, suites=(suite,), client_cert=True, profile=PeerProfile.AUTO)
    cost = DialectCost()
    for _ in range(rounds):
        cache = DialectCache()
        for index in range(1 + later):
            server_cpu, client_cpu = process_cpu_seconds(server_pid), time.process_time()
            started = time.perf_counter()
            stream = await tlcp_connect("127.0.0.1", port, configuration, dialect_cache=cache)
            await stream.aclose()
            elapsed = 1e3 * (time.perf_counter() - started)
            client_cpu = time.process_time() - client_cpu
            server_cpu = process_cpu_seconds(server_pid) - server_cpu
            if index == 0:
                cost.first_ms.append(elapsed)
                cost.first_client_cpu += client_cpu
                cost.first_server_cpu += server_cpu
                cost.first_retries += cache.stats.retries
            else:
                cost.later_ms.append(elapsed)
                cost.later_client_cpu += client_cpu
                cost.later_server_cpu += server_cpu
        cost.later_retries += cache.stats.retries
    cost.later_retries -= cost.first_retries
    return cost


def dialect_report(rounds: int, later: int) -> int:
    """Profile auto to each emulated server: the first connection with an empty cache against later
    ones with what it learned; server pinned to CPU 0, this client to CPU 1."""
    print(
        f"tlcp_connect with profile auto and client auth: {rounds} unknown endpoints x (1 first + {later} later "
        f"connections);\nserver (emulated, smgate engine) on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}. "
        "Per connection: median wall ms, mean client and server CPU ms (server CPU from /proc)."
    )
    print(
        f"{'server':30} {'suite':18} │ {'extra handshakes':>16} │ {'wall ms':>13} │ {'client CPU ms':>13} │"
        f" {'server CPU ms':>13}"
    )
    print(
        f"{'':30} {'':18} │ {'1st':>7} {'later':>8} │ {'1st':>6} {'later':>6} │ {'1st':>6} {'later':>6} │ {'1st':>6} {'later':>6}"
    )
    os.sched_setaffinity(0, {CLIENT_CPU})
    for name in DIALECT_SERVERS:
        for suite in (CipherSuite.ECC_SM4_GCM_SM3, CipherSuite.ECDHE_SM4_GCM_SM3):
            command = [*_python(), str(Path(__file__).resolve()), "serve-dialect", "--server", name]
            command += ["--suite", str(int(suite))]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO, text=True)
            try:
                os.sched_setaffinity(process.pid, {SERVER_CPU})
                assert process.stdout is not None
                port = int(json.loads(process.stdout.readline())["port"])
                cost = asyncio.run(_measure_dialect_cost(port, process.pid, name, suite, rounds, later))
            finally:
                process.terminate()
                process.wait(10)
            laters = rounds * later
            print(
                f"{name:30} {suite.name:18} │ {cost.first_retries / rounds:7.2f} {cost.later_retries / laters:8.2f} │"
                f" {statistics.median(cost.first_ms):6.1f} {statistics.median(cost.later_ms):6.1f} │"
                f" {1e3 * cost.first_client_cpu / rounds:6.1f} {1e3 * cost.later_client_cpu / laters:6.1f} │"
                f" {1e3 * cost.first_server_cpu / rounds:6.1f} {1e3 * cost.later_server_cpu / laters:6.1f}",
                flush=True,
            )
    return 0


# -- crypto-bound limits ---------------------------------------------------------------------------------


def _rate(operation: Callable[[], object], seconds: float = 0.4) -> float:
    """CPU seconds per call of ``operation`` (best of three short runs).

    Process CPU time, not wall time, so other load on a shared machine does not inflate the cost.
    """
    best = float("inf")
    for _ in range(3):
        count = 0
        started = time.process_time()
        deadline = started + seconds / 3
        while time.process_time() < deadline:
            operation()
            count += 1
        best = min(best, (time.process_time() - started) / count)
    return best


@dataclass
class CryptoCosts:
    sign: float
    decrypt: float
    verify: float
    chain_verify: float
    ephemeral_key: float
    key_exchange: float
    gcm_decrypt_mbs: float
    cbc_decrypt_mbs: float

    def full_handshake_cost(self, suite: CipherSuite) -> float:
        if is_ecdhe(suite):
            # CertificateVerify is always checked; the two client chain checks go through
            # `verify_sm2_chain`, whose per-certificate cache makes repeats nearly free.
            return self.sign + self.ephemeral_key + self.key_exchange + self.verify + 2 * self.chain_verify
        return self.sign + self.decrypt


def measure_crypto() -> CryptoCosts:
    server = TONGSUO_PKI.server_set
    client = TONGSUO_PKI.client_set
    message = os.urandom(600)
    signature = client.sign_key.sign(message)
    client_sign_pub = client.sign_cert.sm2_public_key()
    ciphertext = server.enc_cert.sm2_public_key().encrypt(os.urandom(48))
    client_ephemeral = SM2PrivateKey.generate().public_key()
    ephemeral = SM2PrivateKey.generate()
    now = datetime.now(UTC)

    def key_exchange() -> object:
        return sm2_key_exchange(
            initiator=True,
            static_key=server.enc_key,
            ephemeral_key=ephemeral,
            peer_static=client.enc_cert.sm2_public_key(),
            peer_ephemeral=client_ephemeral,
            key_length=48,
        )

    gcm = SM4GCM(os.urandom(16))
    nonce = os.urandom(12)
    record = os.urandom(RECORD)
    aad = os.urandom(13)
    sealed = gcm.encrypt(nonce, record, aad)
    cbc = SM4CBC(os.urandom(16))
    mac = HMACSM3(os.urandom(32))
    iv = os.urandom(16)
    cbc_sealed = cbc.encrypt(iv, record)

    def cbc_open() -> object:
        plaintext = cbc.decrypt(iv, cbc_sealed)
        return mac.compute(aad, plaintext)

    return CryptoCosts(
        sign=_rate(lambda: server.sign_key.sign(message)),
        decrypt=_rate(lambda: server.enc_key.decrypt(ciphertext)),
        verify=_rate(lambda: client_sign_pub.verify(signature, message)),
        chain_verify=_rate(
            lambda: verify_sm2_chain(
                client.sign_cert, [], TONGSUO_PKI.trust_store, role=Role.CLIENT_SIGN, now=now
            )
        ),
        ephemeral_key=_rate(lambda: SM2PrivateKey.generate().public_key()),
        key_exchange=_rate(key_exchange),
        gcm_decrypt_mbs=RECORD / _rate(lambda: gcm.decrypt(nonce, sealed, aad)) / MIB,
        cbc_decrypt_mbs=RECORD / _rate(cbc_open) / MIB,
    )


# -- server and load processes ------------------------------------------------------------------------


def _python() -> list[str]:
    return [sys.executable]


@contextlib.contextmanager
def running_server(
    kind: str, suite: CipherSuite, client_auth: bool, mode: str, *, use_uvloop: bool = False
) -> Iterator[tuple[int, int]]:
    """Start a server child pinned to SERVER_CPU; yields (port, pid)."""
    if kind == "smgate":
        command = [*_python(), str(Path(__file__).resolve()), "serve-smgate", "--suite", str(int(suite))]
        command += ["--mode", mode] + (["--client-auth"] if client_auth else [])
        command += ["--uvloop"] if use_uvloop else []
    else:
        files = TONGSUO_PKI.server_files
        command = [*_python(), "-m", "tests.interop.babassl", "server", "--suite", SUITE_NAMES[suite]]
        command += [*files.as_args(), "--mode", mode, "--quiet", "--cpu", str(SERVER_CPU)]
        if client_auth:
            command += ["--ca", str(TONGSUO_PKI.ca_file), "--verify-client", "--require-client-cert"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO, text=True)
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
    """One load run: units done (handshakes or bytes), wall time, and CPU burnt by each side."""

    units: float
    seconds: float
    server_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0

    @property
    def rate_per_server_cpu(self) -> float:
        """Units per second of server CPU: robust against other load on a shared machine."""
        return self.units / self.server_cpu if self.server_cpu else 0.0


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    port: int,
    server_pid: int,
    suite: CipherSuite,
    *,
    client_auth: bool,
    threads: int,
    duration: float,
    resume: bool = False,
    payload: int = 0,
) -> Measurement:
    command = [*_python(), "-m", "tests.interop.babassl", "load", "--port", str(port)]
    command += ["--suite", SUITE_NAMES[suite], "--threads", str(threads), "--duration", str(duration)]
    command += ["--cpu", str(CLIENT_CPU)]
    if client_auth:
        command += TONGSUO_PKI.client_files.as_args()
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
    key = "bytes_sent" if payload else ("resumed" if resume else "handshakes")
    client_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return Measurement(float(summary[key]), float(summary["seconds"]), server_cpu, client_cpu)


@contextlib.contextmanager
def profiled(pid: int, directory: Path | None, name: str, duration: float) -> Iterator[None]:
    """Record the process with py-spy (raw collapsed stacks) while the block runs.

    Sampling starts a second into the block (the load child needs that to start up and connect).
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if directory is None or not Path(py_spy).exists():
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / f"{name}.txt"
    command = [py_spy, "record", "--format", "raw", "--function", "--nonblocking", "-r", "250"]
    command += ["-d", str(max(1, int(duration - 1.5))), "-o", str(output), "-p", str(pid)]
    recorders: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        recorders.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    timer = threading.Timer(1.0, start)
    timer.start()
    try:
        yield
    finally:
        timer.join()
        for recorder in recorders:
            recorder.wait(duration + 30)


def summarize_profile(path: Path, top: int = 16) -> list[str]:
    """Inclusive and self share of samples per function, from py-spy's collapsed stacks.

    Frames present in nearly every sample (the event loop and its callers) say nothing and are skipped.
    """
    if not path.exists():
        return [f"  (no profile at {path})"]
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        self_time[frames[-1]] += count
    if not total:
        return ["  (no samples)"]
    lines = [f"  {total} samples; inclusive % (self %) per function:"]
    shown = [(frame, count) for frame, count in inclusive.most_common() if count < 0.9 * total][:top]
    for frame, count in shown:
        lines.append(f"  {100 * count / total:5.1f}% ({100 * self_time[frame] / total:4.1f}%)  {frame}")
    lines.append("  top self time:")
    for frame, count in self_time.most_common(10):
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return lines


# -- report -----------------------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    smgate: Measurement
    babassl: Measurement
    limit: float | None
    unit: str
    scale: float = 1.0

    HEADER = (
        f"{'metric':<44} {'smgate':>8} {'BabaSSL':>8} {'ratio':>6} │ {'smgate':>8} {'BabaSSL':>8} {'ratio':>6}"
        f" │ {'limit':>7} {'%limit':>6} │ {'srv/cli CPU smgate':>18} {'BabaSSL':>9}"
    )

    def render(self) -> str:
        smgate, babassl = self.smgate, self.babassl
        wall = (smgate.rate / self.scale, babassl.rate / self.scale)
        cpu = (smgate.rate_per_server_cpu / self.scale, babassl.rate_per_server_cpu / self.scale)
        limit = f"{self.limit:7.0f}" if self.limit else f"{'-':>7}"
        of_limit = f"{100 * cpu[0] / self.limit:5.1f}%" if self.limit else f"{'-':>6}"

        def ratio(pair: tuple[float, float]) -> str:
            return f"{pair[0] / pair[1]:6.2f}" if pair[1] else f"{'-':>6}"

        def load(measurement: Measurement) -> str:
            seconds = measurement.seconds or 1.0
            return f"{100 * measurement.server_cpu / seconds:3.0f}%/{100 * measurement.client_cpu / seconds:3.0f}%"

        return (
            f"{self.metric:<44} {wall[0]:8.1f} {wall[1]:8.1f} {ratio(wall)} │ {cpu[0]:8.1f} {cpu[1]:8.1f} {ratio(cpu)}"
            f" │ {limit} {of_limit} │ {load(smgate):>18} {load(babassl):>9}  {self.unit}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve-smgate", help="internal: the smgate server child")
    serve.add_argument("--suite", type=lambda text: CipherSuite(int(text, 0)), required=True)
    serve.add_argument("--client-auth", action="store_true")
    serve.add_argument("--mode", choices=("echo", "sink"), default="echo")
    serve.add_argument("--uvloop", action="store_true")
    serve_dialect = sub.add_parser("serve-dialect", help="internal: an emulated dialect server child")
    serve_dialect.add_argument("--server", choices=list(DIALECT_SERVERS), required=True)
    serve_dialect.add_argument("--suite", type=lambda text: CipherSuite(int(text, 0)), required=True)
    dialect = sub.add_parser(
        "dialect", help="profile auto: the cost of the first connection to an unknown endpoint"
    )
    dialect.add_argument("--rounds", type=int, default=20, help="unknown endpoints (fresh caches)")
    dialect.add_argument("--later", type=int, default=3, help="connections after the first, per endpoint")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=8, help="concurrent BabaSSL client connections")
    parser.add_argument("--profile", type=Path, help="py-spy the smgate server into this directory")
    parser.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=importlib.util.find_spec("uvloop") is not None,
        help="run the smgate server on uvloop, as `smgate serve` does when it is installed (default: if installed)",
    )
    parser.add_argument("--suites", default="all", help="comma list of suite names (ECC_SM4_GCM_SM3,...)")
    parser.add_argument("--no-bulk", action="store_true", help="handshakes only, no bulk transfer")
    args = parser.parse_args(argv)
    if args.command == "serve-smgate":
        os.sched_setaffinity(0, {SERVER_CPU})
        loop_factory = None
        if args.uvloop:
            import uvloop

            loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve_smgate(args.suite, args.client_auth, args.mode))
        return 0
    if args.command == "serve-dialect":
        os.sched_setaffinity(0, {SERVER_CPU})
        asyncio.run(_serve_dialect(args.server, args.suite))
        return 0
    if args.command == "dialect":
        return dialect_report(args.rounds, args.later)

    if len(os.sched_getaffinity(0)) < 2 and os.cpu_count() == 1:
        print("needs two CPUs (server and load pinned apart)", file=sys.stderr)
        return 2
    suites = (
        list(CipherSuite) if args.suites == "all" else [CipherSuite[name] for name in args.suites.split(",")]
    )
    duration: float = args.duration
    os.sched_setaffinity(0, {SERVER_CPU})
    costs = measure_crypto()
    os.sched_setaffinity(0, {SERVER_CPU, CLIENT_CPU})
    print(
        f"crypto on CPU {SERVER_CPU} (tls.crypto, per op): SM2 sign {1e3 * costs.sign:.3f} ms, decrypt "
        f"{1e3 * costs.decrypt:.3f} ms, verify {1e3 * costs.verify:.3f} ms (chain check incl. parsing "
        f"{1e3 * costs.chain_verify:.3f} ms), ephemeral key {1e3 * costs.ephemeral_key:.3f} ms, key exchange "
        f"{1e3 * costs.key_exchange:.3f} ms; 16 KiB record open: SM4-GCM {costs.gcm_decrypt_mbs:.0f} MiB/s, "
        f"SM4-CBC+HMAC-SM3 {costs.cbc_decrypt_mbs:.0f} MiB/s",
        flush=True,
    )
    rows: list[Row] = []
    profiles: list[tuple[str, Path]] = []
    for suite in suites:
        client_auth = is_ecdhe(suite)
        label = f"{SUITE_NAMES[suite]}{' +client auth' if client_auth else ''}"
        results: dict[str, tuple[Measurement, Measurement]] = {}
        for kind in ("smgate", "babassl"):
            runs: list[Measurement] = []
            with running_server(kind, suite, client_auth, "echo", use_uvloop=args.uvloop) as (port, pid):
                for phase, resume in (("full", False), ("resumed", True)):
                    name = f"{phase}-{suite.name}"
                    with profiled(pid, args.profile if kind == "smgate" else None, name, duration):
                        runs.append(
                            run_load(
                                port,
                                pid,
                                suite,
                                client_auth=client_auth,
                                threads=args.threads,
                                duration=duration,
                                resume=resume,
                            )
                        )
                    if kind == "smgate" and args.profile:
                        profiles.append((f"{label} {phase} handshakes", args.profile / f"{name}.txt"))
            results[kind] = (runs[0], runs[1])
            print(f"  {kind:8} {label}: full {runs[0].rate:.0f}/s, resumed {runs[1].rate:.0f}/s", flush=True)
        limit = 1 / costs.full_handshake_cost(suite)
        rows.append(Row(f"{label} full hs", results["smgate"][0], results["babassl"][0], limit, "hs/s"))
        rows.append(Row(f"{label} resumed hs", results["smgate"][1], results["babassl"][1], None, "hs/s"))

    bulk_suites = (
        ()
        if args.no_bulk
        else (
            (CipherSuite.ECC_SM4_GCM_SM3, costs.gcm_decrypt_mbs),
            (CipherSuite.ECC_SM4_CBC_SM3, costs.cbc_decrypt_mbs),
        )
    )
    for suite, limit_mbs in bulk_suites:
        bulk: dict[str, Measurement] = {}
        for kind in ("smgate", "babassl"):
            with running_server(kind, suite, False, "sink", use_uvloop=args.uvloop) as (port, pid):
                name = f"bulk-{suite.name}"
                with profiled(pid, args.profile if kind == "smgate" else None, name, duration):
                    bulk[kind] = run_load(
                        port,
                        pid,
                        suite,
                        client_auth=False,
                        threads=1,
                        duration=duration,
                        payload=BULK_PAYLOAD,
                    )
                if kind == "smgate" and args.profile:
                    profiles.append((f"{SUITE_NAMES[suite]} bulk receive", args.profile / f"{name}.txt"))
            print(f"  {kind:8} {SUITE_NAMES[suite]} bulk: {bulk[kind].rate / MIB:.1f} MiB/s", flush=True)
        rows.append(
            Row(
                f"{SUITE_NAMES[suite]} bulk client->server",
                bulk["smgate"],
                bulk["babassl"],
                limit_mbs,
                "MiB/s",
                MIB,
            )
        )

    print()
    print(
        f"server pinned to CPU {SERVER_CPU}, BabaSSL load ({args.threads} concurrent, 1 for bulk) on CPU {CLIENT_CPU}, "
        f"smgate loop: {'uvloop' if args.uvloop else 'asyncio'}, {duration:.1f} s per point.\nLeft: per wall-clock second. Middle: per second of server CPU time (robust "
        "on a shared machine). limit: crypto-bound server rate per CPU second, measured above; %limit uses the "
        "middle smgate figure.\nLast: server/client CPU use during the run (100% = one core busy)."
    )
    print(Row.HEADER)
    for row in rows:
        print(row.render())
    for title, path in profiles:
        print(f"\nprofile: {title} ({path})")
        print("\n".join(summarize_profile(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
