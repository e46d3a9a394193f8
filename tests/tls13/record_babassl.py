"""Record TLS 1.3 (RFC 8998) handshakes with BabaSSL 8.3.2 byte for byte, with key logs, for the KATs.

Run by hand (the recordings are committed under ``tests/tls13/data``; CI only replays them)::

    .venv/bin/python -m tests.tls13.record_babassl tests/tls13/data

Two recordings per suite:

``babassl-<suite>-clientauth``: a BabaSSL client and a BabaSSL server, both children of this script,
    talking through a relay here that writes each direction to ``client_to_server.bin`` /
    ``server_to_client.bin``; the server's NSS key log is ``keylog.txt``.  Nothing of smgate takes
    part, so the test that decrypts and checks it judges our codecs and key schedule against
    BabaSSL's own output.
``smgate-client-<suite>``: smgate's client (seeded random, fixed clock, so it can be replayed
    exactly) against a BabaSSL server; the BabaSSL key log is ``keylog.txt``.

``meta.json`` records the suite, the seed, the clock and the request.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from tests.interop.babassl import (
    TLS13_SUITE_NAMES,
    BabaSSLServer,
    ClientOptions,
    ServerOptions,
    run_babassl_client,
)
from tests.interop.identities import TONGSUO_PKI
from tls.tls13 import CipherSuite, TLS13Configuration, TLS13Connection

from .conftest import SeededRandom, free_port

RECORDING_TIME = datetime(2027, 6, 1, tzinfo=UTC)
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
SEED = 8998


async def _relay(listener: socket.socket, upstream_port: int, directory: Path) -> None:
    loop = asyncio.get_running_loop()
    client, _ = await loop.sock_accept(listener)
    reader, writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    client_reader, client_writer = await asyncio.open_connection(sock=client)

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, path: Path) -> None:
        with path.open("wb") as capture:
            while data := await source.read(65536):
                capture.write(data)
                sink.write(data)
                await sink.drain()
        sink.close()

    await asyncio.gather(
        pump(client_reader, writer, directory / "client_to_server.bin"),
        pump(reader, client_writer, directory / "server_to_client.bin"),
    )


async def record_babassl_pair(suite: CipherSuite, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    keylog = directory / "keylog.txt"
    keylog.unlink(missing_ok=True)
    pki = TONGSUO_PKI
    server = ServerOptions(
        suite=TLS13_SUITE_NAMES[suite],
        certs=pki.server_files,
        ca_file=pki.ca_file,
        verify_client=True,
        require_client_cert=True,
        connections=1,
        protocol="tls13",
        keylog=keylog,
        port=free_port(),
    )
    async with BabaSSLServer(server) as babassl:
        listener = socket.socket()
        listener.bind(("127.0.0.1", free_port()))
        listener.listen(1)
        listener.setblocking(False)
        relay = asyncio.create_task(_relay(listener, babassl.port, directory))
        client = ClientOptions(
            port=listener.getsockname()[1],
            suite=TLS13_SUITE_NAMES[suite],
            certs=pki.client_files,
            ca_file=pki.ca_file,
            server_name="localhost",
            payload_size=len(REQUEST),
            protocol="tls13",
        )
        (report,) = await run_babassl_client(client)
        await relay
        listener.close()
        await babassl.reports()
    assert report.error is None, report.error
    _write_meta(directory, suite, peer="babassl client and server, client auth", seed=None)


def record_smgate_client(suite: CipherSuite, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    keylog = directory / "keylog.txt"
    keylog.unlink(missing_ok=True)

    async def run() -> None:
        options = ServerOptions(
            suite=TLS13_SUITE_NAMES[suite],
            certs=TONGSUO_PKI.server_files,
            connections=1,
            protocol="tls13",
            keylog=keylog,
            port=free_port(),
        )
        async with BabaSSLServer(options) as babassl:
            await asyncio.to_thread(_drive_smgate_client, suite, babassl.port, directory)
            await babassl.reports()

    asyncio.run(run())
    _write_meta(directory, suite, peer="smgate client, babassl server", seed=SEED)


def _drive_smgate_client(suite: CipherSuite, port: int, directory: Path) -> None:
    """The sans-I/O client over a blocking socket, writing both directions as they pass."""
    connection = TLS13Connection(
        TLS13Configuration(
            is_client=True,
            cipher_suites=(suite,),
            trust_store=TONGSUO_PKI.trust_store,
            server_name="localhost",
            random=SeededRandom(SEED),
            now=lambda: RECORDING_TIME,
        )
    )
    sent, received = bytearray(), bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        connection.start_handshake()
        echoed = b""
        request_sent = False
        while len(echoed) < len(REQUEST):
            outgoing = connection.data_to_send()
            sent += outgoing
            sock.sendall(outgoing)
            if connection.handshake_complete and not request_sent:
                connection.send_application_data(REQUEST)
                request_sent = True
                continue
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("server closed early")
            received += data
            for event in connection.receive_data(data):
                echoed += getattr(event, "data", b"")
        connection.close()
        outgoing = connection.data_to_send()
        sent += outgoing
        sock.sendall(outgoing)
        while data := sock.recv(65536):
            received += data
    (directory / "client_to_server.bin").write_bytes(bytes(sent))
    (directory / "server_to_client.bin").write_bytes(bytes(received))


def _write_meta(directory: Path, suite: CipherSuite, *, peer: str, seed: int | None) -> None:
    meta = {
        "suite": suite.name,
        "peer": peer,
        "library": "BabaSSL 8.3.2 (tongsuopy 1.0.1, OpenSSL 1.1.1h base)",
        "certificates": "shared/tlcp/tongsuo/certs (server_sign, client_sign, ca)",
        "seed": seed,
        "time": RECORDING_TIME.isoformat(),
        "request": REQUEST.decode(),
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(tempfile.mkdtemp())
    for suite in CipherSuite:
        asyncio.run(record_babassl_pair(suite, root / f"babassl-{suite.name}-clientauth"))
        record_smgate_client(suite, root / f"smgate-client-{suite.name}")
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
