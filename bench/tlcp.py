"""TLCP server benchmark: smgate (tls.tlcp.aio) beside BabaSSL 8.3.2 NTLS, under the same BabaSSL load.

Usage: ``.venv/bin/python bench/tlcp.py [--duration 4] [--threads 8] [--profile DIR]`` (about 2 minutes).

For each suite it measures, for both servers in turn:

* full handshakes/s (ECC suites without client auth, ECDHE suites with client auth, as deployed),
* resumed handshakes/s (session-ID resumption, each load thread re-offering its first session),
* bulk MB/s for SM4-GCM and SM4-CBC (one connection streaming into a server that discards the data).

Both servers are one process pinned to CPU 0 (smgate: one asyncio event loop; BabaSSL: a thread per
connection, which on one CPU amounts to the same accept-loop-and-serve shape); the load generator is one
BabaSSL client process pinned to CPU 1 running ``--threads`` closed-loop connections.  Beside the
measured rates it prints the crypto-bound limit measured in this run on the same CPU (an ECC full
handshake costs the server one SM2 sign and one SM2 decrypt; ECDHE with client auth costs one sign, one
ephemeral key, one SM2 key exchange and three verifies: client sign chain, client enc chain and
CertificateVerify), and the ratios smgate/limit and smgate/BabaSSL.  The machine is shared, so figures
are indicative; nothing here asserts a speed.

``--profile DIR`` also records the smgate server with py-spy (raw collapsed stacks into DIR) during the
full-handshake and bulk runs and prints the hottest frames.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from certs import Role, verify_sm2_chain  # noqa: E402
from tests.interop.babassl import SUITE_NAMES  # noqa: E402
from tests.interop.identities import TONGSUO_PKI, is_ecdhe, server_configuration  # noqa: E402
from tls.crypto import HMACSM3, SM4CBC, SM4GCM, SM2PrivateKey, sm2_key_exchange  # noqa: E402
from tls.tlcp.aio import TLCPStream, start_tlcp_server  # noqa: E402
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


# -- crypto-bound limits ---------------------------------------------------------------------------------


def _rate(operation: Callable[[], object], seconds: float = 0.4) -> float:
    """Seconds per call of ``operation`` (best of three short runs)."""
    best = float("inf")
    for _ in range(3):
        count = 0
        started = time.perf_counter()
        deadline = started + seconds / 3
        while time.perf_counter() < deadline:
            operation()
            count += 1
        best = min(best, (time.perf_counter() - started) / count)
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
            return self.sign + self.ephemeral_key + self.key_exchange + 3 * self.verify
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
        ephemeral_key=_rate(SM2PrivateKey.generate),
        key_exchange=_rate(key_exchange),
        gcm_decrypt_mbs=RECORD / _rate(lambda: gcm.decrypt(nonce, sealed, aad)) / MIB,
        cbc_decrypt_mbs=RECORD / _rate(cbc_open) / MIB,
    )


# -- server and load processes ------------------------------------------------------------------------


def _python() -> list[str]:
    return [sys.executable]


@contextlib.contextmanager
def running_server(kind: str, suite: CipherSuite, client_auth: bool, mode: str) -> Iterator[tuple[int, int]]:
    """Start a server child pinned to SERVER_CPU; yields (port, pid)."""
    if kind == "smgate":
        command = [*_python(), str(Path(__file__).resolve()), "serve-smgate", "--suite", str(int(suite))]
        command += ["--mode", mode] + (["--client-auth"] if client_auth else [])
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


def run_load(
    port: int,
    suite: CipherSuite,
    *,
    client_auth: bool,
    threads: int,
    duration: float,
    resume: bool = False,
    payload: int = 0,
) -> dict[str, object]:
    command = [*_python(), "-m", "tests.interop.babassl", "load", "--port", str(port)]
    command += ["--suite", SUITE_NAMES[suite], "--threads", str(threads), "--duration", str(duration)]
    command += ["--cpu", str(CLIENT_CPU)]
    if client_auth:
        command += TONGSUO_PKI.client_files.as_args()
    if resume:
        command.append("--resume")
    if payload:
        command += ["--payload-size", str(payload), "--no-echo"]
    output = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=duration + 120)
    summary: dict[str, object] = json.loads(output.stdout.strip().splitlines()[-1])
    return summary


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
    smgate: float
    babassl: float
    limit: float | None
    unit: str

    def render(self) -> str:
        limit = f"{self.limit:10.0f}" if self.limit else f"{'-':>10}"
        of_limit = f"{100 * self.smgate / self.limit:6.1f}%" if self.limit else f"{'-':>7}"
        ratio = f"{self.smgate / self.babassl:6.2f}" if self.babassl else f"{'-':>6}"
        return f"{self.metric:<44} {self.smgate:10.1f} {self.babassl:10.1f} {ratio} {limit} {of_limit}  {self.unit}"


def _rate_of(summary: dict[str, object], key: str = "handshakes") -> float:
    value = summary.get(key, 0)
    seconds = summary.get("seconds", 0)
    assert isinstance(value, int) and isinstance(seconds, float)
    if summary.get("errors"):
        print(
            f"    ! {summary['errors']} failed connections, first: {summary.get('first_error')}", flush=True
        )
    return value / seconds if seconds else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve-smgate", help="internal: the smgate server child")
    serve.add_argument("--suite", type=lambda text: CipherSuite(int(text, 0)), required=True)
    serve.add_argument("--client-auth", action="store_true")
    serve.add_argument("--mode", choices=("echo", "sink"), default="echo")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=8, help="concurrent BabaSSL client connections")
    parser.add_argument("--profile", type=Path, help="py-spy the smgate server into this directory")
    parser.add_argument("--suites", default="all", help="comma list of suite names (ECC_SM4_GCM_SM3,...)")
    args = parser.parse_args(argv)
    if args.command == "serve-smgate":
        os.sched_setaffinity(0, {SERVER_CPU})
        asyncio.run(_serve_smgate(args.suite, args.client_auth, args.mode))
        return 0

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
        results: dict[str, tuple[float, float]] = {}
        for kind in ("smgate", "babassl"):
            with running_server(kind, suite, client_auth, "echo") as (port, pid):
                name = f"full-{suite.name}"
                with profiled(pid, args.profile if kind == "smgate" else None, name, duration):
                    full = run_load(
                        port, suite, client_auth=client_auth, threads=args.threads, duration=duration
                    )
                if kind == "smgate" and args.profile:
                    profiles.append((f"{label} full handshakes", args.profile / f"{name}.txt"))
                name = f"resumed-{suite.name}"
                with profiled(pid, args.profile if kind == "smgate" else None, name, duration):
                    resumed = run_load(
                        port,
                        suite,
                        client_auth=client_auth,
                        threads=args.threads,
                        duration=duration,
                        resume=True,
                    )
                if kind == "smgate" and args.profile:
                    profiles.append((f"{label} resumed handshakes", args.profile / f"{name}.txt"))
            results[kind] = (_rate_of(full), _rate_of(resumed, "resumed"))
            print(
                f"  {kind:8} {label}: full {results[kind][0]:.0f}/s, resumed {results[kind][1]:.0f}/s",
                flush=True,
            )
        limit = 1 / costs.full_handshake_cost(suite)
        rows.append(Row(f"{label} full hs", results["smgate"][0], results["babassl"][0], limit, "hs/s"))
        rows.append(Row(f"{label} resumed hs", results["smgate"][1], results["babassl"][1], None, "hs/s"))

    for suite, limit_mbs in (
        (CipherSuite.ECC_SM4_GCM_SM3, costs.gcm_decrypt_mbs),
        (CipherSuite.ECC_SM4_CBC_SM3, costs.cbc_decrypt_mbs),
    ):
        rates: dict[str, float] = {}
        for kind in ("smgate", "babassl"):
            with running_server(kind, suite, False, "sink") as (port, pid):
                name = f"bulk-{suite.name}"
                with profiled(pid, args.profile if kind == "smgate" else None, name, duration):
                    summary = run_load(
                        port, suite, client_auth=False, threads=1, duration=duration, payload=BULK_PAYLOAD
                    )
                if kind == "smgate" and args.profile:
                    profiles.append((f"{SUITE_NAMES[suite]} bulk receive", args.profile / f"{name}.txt"))
            rates[kind] = _rate_of(summary, "bytes_sent") / MIB
            print(f"  {kind:8} {SUITE_NAMES[suite]} bulk: {rates[kind]:.1f} MiB/s", flush=True)
        rows.append(
            Row(
                f"{SUITE_NAMES[suite]} bulk client->server",
                rates["smgate"],
                rates["babassl"],
                limit_mbs,
                "MiB/s",
            )
        )

    print()
    print(
        f"server pinned to CPU {SERVER_CPU}, BabaSSL load ({args.threads} concurrent, 1 for bulk) on CPU {CLIENT_CPU}, "
        f"{duration:.1f} s per point; limit = crypto-bound server rate measured above"
    )
    print(f"{'metric':<44} {'smgate':>10} {'BabaSSL':>10} {'ratio':>6} {'limit':>10} {'%limit':>7}")
    for row in rows:
        print(row.render())
    for title, path in profiles:
        print(f"\nprofile: {title} ({path})")
        print("\n".join(summarize_profile(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
