"""By-hand interop against GmSSL 3.x and Tongsuo 8.5 built outside the repository, and BabaSSL.

    .venv/bin/python -m tests.tlcp.live_peers --gmssl /work/peers/gmssl/bin/gmssl \\
        --tongsuo /work/peers/tongsuo/bin/openssl [--only client|server|alpn]

Client matrix: the ``smgate client`` command with no dialect option (``--profile auto`` is the
default), ``--send`` and ``--resume 1``, against each peer's own server.  Server matrix: each peer's
own client against smgate's TLCP server (`tls.tlcp.aio.start_tlcp_server`, standard profile, trust
anchors loaded, as a listener configured for client certificates).  Both run every suite with client
authentication off and required (ECDHE always exchanges the client's certificates; "off" means the
server does not require or verify them).  Each peer uses the certificates of its recordings in
../shared/tlcp.

ALPN matrix (``--only alpn``, ECC_SM4_GCM_SM3): `tls.tlcp.aio.tlcp_connect` offering h2 and http/1.1
to each peer's server started without ALPN, with ``h2``, with ``http/1.1,h2`` and with an unrelated
protocol (a refusal is retried with ``alpn_fallback``, and both attempts are shown); then each peer's
client offering nothing, ``h2``, ``http/1.1,h2`` and an unrelated protocol to smgate's server
preferring h2 then http/1.1, and once more to a server that requires ALPN.

Not a test: CI has neither GmSSL nor Tongsuo (tests/tlcp/test_client_matrix.py runs their emulations),
and nothing here builds them.  Prints one line per cell and a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO
from tests.interop.babassl import SUITE_NAMES, NTLSCertFiles
from tests.interop.identities import PKI, TONGSUO_PKI, is_ecdhe
from tests.ports import free_port
from tls.tlcp import CipherSuite, ClientAuth, HandshakeComplete, SessionCache, TLCPConfiguration
from tls.tlcp.aio import TLCPHandshakeError, TLCPStream, start_tlcp_server, tlcp_connect

from .dialect_servers import GMSSL_PKI, listening_socket

GMSSL_CERTS = GMSSL_PKI.ca_file.parent
GMSSL_PASSWORD = "P@ssw0rd"
CELL_TIMEOUT = 60.0
GMSSL_SUITES = {suite: f"TLS_{suite.name}" for suite in CipherSuite}


@dataclass
class Cell:
    peer: str
    suite: CipherSuite
    client_auth: bool
    ok: bool
    detail: str

    def render(self) -> str:
        auth = "required" if self.client_auth else "off"
        return f"{'PASS' if self.ok else 'FAIL'}  {self.peer:8} {self.suite.name:18} auth {auth:8}  {self.detail}"


@dataclass(frozen=True)
class Peers:
    gmssl: Path
    tongsuo: Path

    @property
    def tongsuo_env(self) -> dict[str, str]:
        """Tongsuo's openssl needs its own libssl/libcrypto (the system has OpenSSL 3.0)."""
        library = self.tongsuo.parent.parent / "lib"
        return {**os.environ, "LD_LIBRARY_PATH": str(library)}


def tongsuo_pair_args(files: NTLSCertFiles) -> list[str]:
    return [
        "-sign_cert",
        str(files.sign_cert),
        "-sign_key",
        str(files.sign_key),
        "-enc_cert",
        str(files.enc_cert),
        "-enc_key",
        str(files.enc_key),
    ]


# -- client matrix: smgate client against each peer's server ---------------------------------------------


def gmssl_server(peers: Peers, suite: CipherSuite, client_auth: bool, port: int) -> list[str]:
    command = [str(peers.gmssl), "tlcp_server", "-port", str(port), "-cipher_suite", GMSSL_SUITES[suite]]
    command += ["-cert", str(GMSSL_CERTS / "server_certs.pem"), "-key", str(GMSSL_CERTS / "server_keys.pem")]
    command += ["-pass", GMSSL_PASSWORD]
    if client_auth or is_ecdhe(suite):  # GmSSL reads an ECDHE client's certificates only with CA certificates
        command += ["-cacert", str(GMSSL_PKI.ca_file)]
    if client_auth:
        command.append("-cert_request")
    return command


def tongsuo_server(peers: Peers, suite: CipherSuite, client_auth: bool, port: int) -> list[str]:
    command = [str(peers.tongsuo), "s_server", "-enable_ntls", "-ntls", "-accept", f"127.0.0.1:{port}"]
    command += [*tongsuo_pair_args(TONGSUO_PKI.server_files), "-cipher", SUITE_NAMES[suite]]
    if client_auth:
        command += ["-Verify", "1", "-CAfile", str(TONGSUO_PKI.ca_file)]
    return command


def babassl_server(peers: Peers, suite: CipherSuite, client_auth: bool, port: int) -> list[str]:
    command = [sys.executable, "-m", "tests.interop.babassl", "server", "--suite", SUITE_NAMES[suite]]
    command += [*TONGSUO_PKI.server_files.as_args(), "--port", str(port), "--quiet"]
    if client_auth or is_ecdhe(suite):  # BabaSSL checks an ECDHE client's chain even unasked (unknown_ca)
        command += ["--ca", str(TONGSUO_PKI.ca_file)]
    if client_auth:
        command += ["--verify-client", "--require-client-cert"]
    return command


ServerCommand = Callable[[Peers, CipherSuite, bool, int], list[str]]

CLIENT_MATRIX_PEERS: list[tuple[str, PKI, ServerCommand]] = [
    ("gmssl", GMSSL_PKI, gmssl_server),
    ("tongsuo", TONGSUO_PKI, tongsuo_server),
    ("babassl", TONGSUO_PKI, babassl_server),
]


async def wait_for_port(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if process.returncode is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.asynccontextmanager
async def peer_server(command: list[str], env: dict[str, str], port: int) -> AsyncIterator[None]:
    # Tongsuo's s_server ends at EOF on stdin: keep a pipe open.
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )
    try:
        await wait_for_port(port, process)
        yield
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def smgate_client_cell(
    peers: Peers, peer: str, pki: PKI, server: ServerCommand, suite: CipherSuite, client_auth: bool
) -> Cell:
    port = free_port()
    command = [sys.executable, "-m", "gateway.cli", "client", "127.0.0.1", str(port), "--protocol", "tlcp"]
    command += ["--servername", "localhost", "--cafile", str(pki.ca_file), "--cipher", suite.name]
    command += ["--send", "hello from smgate client\n", "--read-timeout", "1", "--resume", "1"]
    if client_auth or is_ecdhe(suite):
        files = pki.client_files
        command += ["--cert", str(files.sign_cert), "--key", str(files.sign_key)]
        command += ["--enc-cert", str(files.enc_cert), "--enc-key", str(files.enc_key)]
    env = peers.tongsuo_env if peer == "tongsuo" else dict(os.environ)
    async with peer_server(server(peers, suite, client_auth, port), env, port):
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), CELL_TIMEOUT)
    lines = stdout.decode(errors="replace").splitlines()
    if process.returncode != 0:
        return Cell(peer, suite, client_auth, False, stderr.decode(errors="replace").strip())
    details = [line for line in lines if line.startswith(("dialect:", "resume 1/1:"))]
    return Cell(peer, suite, client_auth, True, " | ".join(details))


async def client_matrix(peers: Peers) -> list[Cell]:
    cells = []
    for peer, pki, server in CLIENT_MATRIX_PEERS:
        for suite in CipherSuite:
            for client_auth in (False, True):
                cell = await smgate_client_cell(peers, peer, pki, server, suite, client_auth)
                print(cell.render(), flush=True)
                cells.append(cell)
    return cells


# -- server matrix: each peer's client against smgate's server -------------------------------------------


def gmssl_client(peers: Peers, suite: CipherSuite, client_auth: bool, port: int, message: Path) -> list[str]:
    command = [str(peers.gmssl), "tlcp_client", "-host", "localhost", "-port", str(port)]
    command += ["-cipher_suite", GMSSL_SUITES[suite], "-cacert", str(GMSSL_PKI.ca_file), "-in", str(message)]
    if is_ecdhe(suite):  # the double certificate: sign then enc
        command += ["-cert", str(GMSSL_CERTS / "client_certs.pem")]
        command += ["-key", str(GMSSL_CERTS / "client_keys.pem"), "-pass", GMSSL_PASSWORD]
    elif client_auth:  # GmSSL's client loads a single signing certificate for ECC suites
        command += ["-cert", str(GMSSL_CERTS / "client_sign_cert.pem")]
        command += ["-key", str(GMSSL_CERTS / "client_sign_key.pem"), "-pass", GMSSL_PASSWORD]
    return command


def tongsuo_client(
    peers: Peers, suite: CipherSuite, client_auth: bool, port: int, message: Path
) -> list[str]:
    command = [str(peers.tongsuo), "s_client", "-enable_ntls", "-ntls", "-connect", f"127.0.0.1:{port}"]
    command += ["-cipher", SUITE_NAMES[suite], "-CAfile", str(TONGSUO_PKI.ca_file), "-verify_return_error"]
    command += ["-servername", "localhost", "-reconnect"]
    if client_auth or is_ecdhe(suite):
        command += tongsuo_pair_args(TONGSUO_PKI.client_files)
    return command


def babassl_client(
    peers: Peers, suite: CipherSuite, client_auth: bool, port: int, message: Path
) -> list[str]:
    command = [sys.executable, "-m", "tests.interop.babassl", "client", "--port", str(port)]
    command += ["--suite", SUITE_NAMES[suite], "--ca", str(TONGSUO_PKI.ca_file), "--server-name", "localhost"]
    command += ["--payload-size", "100", "--resume"]
    if client_auth or is_ecdhe(suite):
        command += TONGSUO_PKI.client_files.as_args()
    return command


ClientCommand = Callable[[Peers, CipherSuite, bool, int, Path], list[str]]

SERVER_MATRIX_PEERS: list[tuple[str, PKI, ClientCommand]] = [
    ("gmssl", GMSSL_PKI, gmssl_client),
    ("tongsuo", TONGSUO_PKI, tongsuo_client),
    ("babassl", TONGSUO_PKI, babassl_client),
]


async def run_peer_client(
    peers: Peers,
    peer: str,
    configuration: TLCPConfiguration,
    handle: Callable[[TLCPStream], Awaitable[None]],
    command: Callable[[int], list[str]],
    message: Path,
) -> tuple[int | None, bytes]:
    """Serve ``configuration`` on a fresh port while the peer's client (``command(port)``) runs with
    ``message`` on stdin; returns its exit status and output."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = await start_tlcp_server(None, 0, lambda: configuration, handle, sock=sock)
    env = peers.tongsuo_env if peer == "tongsuo" else dict(os.environ)
    try:
        process = await asyncio.create_subprocess_exec(
            *command(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        output, _ = await asyncio.wait_for(process.communicate(message.read_bytes()), CELL_TIMEOUT)
        await asyncio.sleep(0.2)
    finally:
        server.close()
        await server.wait_closed()
    return process.returncode, output


async def smgate_server_cell(
    peers: Peers,
    peer: str,
    pki: PKI,
    client: ClientCommand,
    suite: CipherSuite,
    client_auth: bool,
    message: Path,
) -> Cell:
    handshakes: list[HandshakeComplete] = []

    async def echo(stream: TLCPStream) -> None:
        handshakes.append(stream.handshake)
        with contextlib.suppress(ConnectionError):
            while data := await stream.read(65536):
                stream.write(data)
                await stream.drain()

    configuration = TLCPConfiguration(
        is_client=False,
        cipher_suites=(suite,),
        certificate_set=pki.server_set,
        client_auth=ClientAuth.REQUIRED if client_auth else ClientAuth.NONE,
        trust_store=pki.trust_store,
        session_cache=SessionCache(),
    )
    returncode, output = await run_peer_client(
        peers,
        peer,
        configuration,
        echo,
        lambda port: client(peers, suite, client_auth, port, message),
        message,
    )
    authenticated = [h.peer_sign_cert is not None and h.peer_verified for h in handshakes]
    ok = bool(handshakes) and (not client_auth or all(authenticated)) and returncode == 0
    detail = f"{len(handshakes)} handshake(s), {sum(h.session_resumed for h in handshakes)} resumed"
    if client_auth:
        detail += f", client verified: {all(authenticated)}"
    if not ok:
        detail += f"; client exit {returncode}: {output.decode(errors='replace').strip()[-300:]}"
    return Cell(peer, suite, client_auth, ok, detail)


async def server_matrix(peers: Peers) -> list[Cell]:
    cells = []
    with tempfile.TemporaryDirectory() as directory:
        message = Path(directory) / "message.txt"
        message.write_bytes(b"hello from the peer client\n")
        for peer, pki, client in SERVER_MATRIX_PEERS:
            for suite in CipherSuite:
                for client_auth in (False, True):
                    cell = await smgate_server_cell(peers, peer, pki, client, suite, client_auth, message)
                    print(cell.render(), flush=True)
                    cells.append(cell)
    return cells


# -- ALPN matrix ---------------------------------------------------------------------------------------

ALPN_SUITE = CipherSuite.ECC_SM4_GCM_SM3
ALPN_PEERS = ("gmssl", "tongsuo", "babassl")
ALPN_SERVER_LISTS: tuple[tuple[str, ...], ...] = ((), ("h2",), ("http/1.1", "h2"), ("spdy/3",))
ALPN_CLIENT_OFFERS: tuple[tuple[str, ...], ...] = ((), ("h2",), ("http/1.1", "h2"), ("spdy/3",))
SMGATE_ALPN = ("h2", "http/1.1")


def alpn_args(peer: str, names: tuple[str, ...]) -> list[str]:
    """GmSSL repeats -alpn per name; Tongsuo's -alpn and the harness's --alpn take a comma list."""
    if not names:
        return []
    if peer == "gmssl":
        return [argument for name in names for argument in ("-alpn", name)]
    return ["--alpn" if peer == "babassl" else "-alpn", ",".join(names)]


async def smgate_alpn_client_cell(peers: Peers, peer: str, server_alpn: tuple[str, ...]) -> Cell:
    pki, server = {name: (pki, server) for name, pki, server in CLIENT_MATRIX_PEERS}[peer]
    port = free_port()
    command = server(peers, ALPN_SUITE, False, port) + alpn_args(peer, server_alpn)
    env = peers.tongsuo_env if peer == "tongsuo" else dict(os.environ)
    configuration = TLCPConfiguration(
        is_client=True,
        cipher_suites=(ALPN_SUITE,),
        trust_store=pki.trust_store,
        server_name="localhost",
        alpn_protocols=SMGATE_ALPN,
    )
    outcomes: list[str] = []
    ok = False
    async with peer_server(command, env, port):
        for fallback in (False, True):
            try:
                stream = await tlcp_connect("127.0.0.1", port, configuration, alpn_fallback=fallback)
            except TLCPHandshakeError as error:
                outcomes.append(f"{'fallback ' if fallback else ''}refused ({error.alert})")
                continue
            outcomes.append(
                f"{'after fallback ' if fallback else ''}ALPN {stream.get_extra_info('alpn_protocol')}"
            )
            stream.abort()
            ok = True
            break
    detail = f"server -alpn {','.join(server_alpn) or '(none)'}: " + "; ".join(outcomes)
    return Cell(peer, ALPN_SUITE, False, ok, detail)


async def peer_alpn_client_cell(
    peers: Peers, peer: str, offer: tuple[str, ...], required: bool, message: Path
) -> Cell:
    pki, client = {name: (pki, client) for name, pki, client in SERVER_MATRIX_PEERS}[peer]
    negotiated: list[str | None] = []

    async def echo(stream: TLCPStream) -> None:
        negotiated.append(stream.get_extra_info("alpn_protocol"))
        with contextlib.suppress(ConnectionError):
            while data := await stream.read(65536):
                stream.write(data)
                await stream.drain()

    configuration = TLCPConfiguration(
        is_client=False,
        cipher_suites=(ALPN_SUITE,),
        certificate_set=pki.server_set,
        trust_store=pki.trust_store,
        verify_peer=False,
        session_cache=SessionCache(),
        alpn_protocols=SMGATE_ALPN,
        alpn_required=required,
    )
    returncode, output = await run_peer_client(
        peers,
        peer,
        configuration,
        echo,
        lambda port: client(peers, ALPN_SUITE, False, port, message) + alpn_args(peer, offer),
        message,
    )
    expected = next((name for name in SMGATE_ALPN if name in offer), None)
    refused = required and offer and expected is None
    if refused:
        ok = not negotiated and returncode != 0
    else:
        ok = bool(negotiated) and all(name == expected for name in negotiated) and returncode == 0
    detail = (
        f"offers {','.join(offer) or '(none)'}{' to a server requiring ALPN' if required else ''}: "
        f"smgate negotiated {negotiated}, client exit {returncode}"
    )
    if not ok:
        detail += f": {output.decode(errors='replace').strip()[-300:]}"
    return Cell(peer, ALPN_SUITE, False, ok, detail)


async def alpn_matrix(peers: Peers) -> list[Cell]:
    cells = []
    for peer in ALPN_PEERS:
        for server_alpn in ALPN_SERVER_LISTS:
            cell = await smgate_alpn_client_cell(peers, peer, server_alpn)
            print(cell.render(), flush=True)
            cells.append(cell)
    with tempfile.TemporaryDirectory() as directory:
        message = Path(directory) / "message.txt"
        message.write_bytes(b"hello from the peer client\n")
        for peer in ALPN_PEERS:
            for offer, required in [(offer, False) for offer in ALPN_CLIENT_OFFERS] + [(("spdy/3",), True)]:
                cell = await peer_alpn_client_cell(peers, peer, offer, required, message)
                print(cell.render(), flush=True)
                cells.append(cell)
    return cells


def summary(title: str, cells: list[Cell]) -> str:
    passed = sum(cell.ok for cell in cells)
    return f"{title}: {passed}/{len(cells)} cells pass ({100 * passed / len(cells):.0f} %)"


async def main_async(peers: Peers, only: str | None) -> int:
    results: list[tuple[str, list[Cell]]] = []
    if only in (None, "client"):
        print("client matrix: smgate client (no dialect option) -> peer server", flush=True)
        results.append(("client matrix", await client_matrix(peers)))
    if only in (None, "server"):
        print("server matrix: peer client -> smgate TLCP server", flush=True)
        results.append(("server matrix", await server_matrix(peers)))
    if only in (None, "alpn"):
        print("ALPN matrix: smgate client -> peer server, then peer client -> smgate server", flush=True)
        results.append(("ALPN matrix", await alpn_matrix(peers)))
    for title, cells in results:
        print(summary(title, cells))
    return 0 if all(cell.ok for _, cells in results for cell in cells) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gmssl", type=Path, required=True, help="GmSSL 3.x `gmssl` binary")
    parser.add_argument(
        "--tongsuo", type=Path, required=True, help="Tongsuo 8.5 `openssl` binary (its lib/ beside bin/)"
    )
    parser.add_argument("--only", choices=("client", "server", "alpn"))
    args = parser.parse_args(argv)
    socket.setdefaulttimeout(CELL_TIMEOUT)
    return asyncio.run(main_async(Peers(args.gmssl, args.tongsuo), args.only))


if __name__ == "__main__":
    sys.exit(main())
