"""By-hand interoperability matrix against Tongsuo 8.5 and GmSSL 3 built outside the repository.

Not part of the test suite (the peers are not in CI; see the brief): run it when they are built::

    .venv/bin/python -m tests.tls13.peers_by_hand [--tongsuo /work/peers/tongsuo] [--gmssl /work/peers/gmssl]

For each peer, each RFC 8998 suite and with/without client authentication it runs the peer's client
against smgate's server and smgate's client against the peer's server, a full handshake then a
resumed one (session ticket), and prints one line per cell.  Tongsuo runs as
``openssl s_server``/``s_client -tls1_3 -ciphersuites ... -sigalgs sm2sig_sm3 -groups SM2
-enable_sm_tls13_strict``; GmSSL as ``gmssl tls13_server``/``tls13_client``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from certs import TrustStore, load_certificate_file
from tests.conftest import SHARED
from tests.interop.identities import TONGSUO_PKI
from tls.crypto import load_sm2_private_key
from tls.tls13 import CipherSuite, ClientAuth, SessionTicketKeys, SM2Credential, TLS13Configuration
from tls.tls13.aio import TLS13Stream, start_tls13_server, tls13_connect

from .conftest import free_port

RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nsmgate tls13\n"
GMSSL_CERTS = SHARED / "tlcp" / "gmssl" / "certs"
GMSSL_PASS = "P@ssw0rd"


@dataclass
class Identity:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    server_credential: SM2Credential
    client_credential: SM2Credential
    trust_store: TrustStore


def tongsuo_identity() -> Identity:
    files = TONGSUO_PKI
    return Identity(
        files.ca_file,
        files.server_files.sign_cert,
        files.server_files.sign_key,
        files.client_files.sign_cert,
        files.client_files.sign_key,
        SM2Credential.from_certificate_set(files.server_set),
        SM2Credential.from_certificate_set(files.client_set),
        files.trust_store,
    )


def gmssl_identity() -> Identity:
    def credential(role: str) -> SM2Credential:
        return SM2Credential(
            load_certificate_file(GMSSL_CERTS / f"{role}_sign_cert.pem"),
            load_sm2_private_key((GMSSL_CERTS / f"{role}_sign_key_plain.pem").read_bytes()),
        )

    return Identity(
        GMSSL_CERTS / "root_ca_cert.pem",
        GMSSL_CERTS / "server_sign_cert.pem",
        GMSSL_CERTS / "server_sign_key.pem",
        GMSSL_CERTS / "client_sign_cert.pem",
        GMSSL_CERTS / "client_sign_key.pem",
        credential("server"),
        credential("client"),
        TrustStore.from_pem_file(GMSSL_CERTS / "root_ca_cert.pem"),
    )


async def run(
    command: list[str], env: dict[str, str], stdin: bytes = b"", timeout: float = 20
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        return -1, output.decode(errors="replace") + "\n[timed out]"
    return process.returncode or 0, output.decode(errors="replace")


class Peer:
    name = ""
    #: GmSSL's tls13_server serves one connection; a second server with the same ticket key resumes.
    one_connection_per_server = False
    #: smgate client setting this peer's server needs (see GmSSL below).
    middlebox_compatibility = True
    accept_certificate_request_in_psk = False
    identity: Identity
    env: dict[str, str]

    def client_command(
        self, port: int, suite: CipherSuite, client_auth: bool, session_file: Path, resume: bool
    ) -> list[str]:
        raise NotImplementedError

    def server_command(self, port: int, suite: CipherSuite, client_auth: bool) -> list[str]:
        raise NotImplementedError

    def client_ok(self, output: str, resume: bool) -> bool:
        raise NotImplementedError


class Tongsuo(Peer):
    name = "Tongsuo 8.5"

    def __init__(self, prefix: Path) -> None:
        self.binary = str(prefix / "bin" / "tongsuo")
        self.env = dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib"))
        self.identity = tongsuo_identity()

    def _common(self, suite: CipherSuite) -> list[str]:
        return [
            "-tls1_3",
            "-ciphersuites",
            suite.name,
            "-sigalgs",
            "sm2sig_sm3",
            "-groups",
            "SM2",
            "-enable_sm_tls13_strict",
        ]

    def client_command(
        self, port: int, suite: CipherSuite, client_auth: bool, session_file: Path, resume: bool
    ) -> list[str]:
        identity = self.identity
        command = [self.binary, "s_client", "-connect", f"127.0.0.1:{port}", *self._common(suite)]
        command += [
            "-CAfile",
            str(identity.ca),
            "-verify_return_error",
            "-servername",
            "localhost",
            "-ign_eof",
        ]
        if client_auth:
            command += ["-cert", str(identity.client_cert), "-key", str(identity.client_key)]
        command += ["-sess_in" if resume else "-sess_out", str(session_file)]
        return command

    def server_command(self, port: int, suite: CipherSuite, client_auth: bool) -> list[str]:
        identity = self.identity
        command = [
            self.binary,
            "s_server",
            "-accept",
            str(port),
            *self._common(suite),
            "-www",
            "-naccept",
            "2",
        ]
        command += ["-cert", str(identity.server_cert), "-key", str(identity.server_key)]
        if client_auth:
            command += ["-Verify", "1", "-CAfile", str(identity.ca)]
        return command

    def client_ok(self, output: str, resume: bool) -> bool:
        return "smgate tls13" in output and ("Reused, TLSv1.3" in output) == resume


class GmSSL(Peer):
    name = "GmSSL 3"
    one_connection_per_server = True
    # GmSSL 3.3's tls13_server, asking for a client certificate, takes the client's compatibility
    # change_cipher_spec (RFC 8446 D.4) for the encrypted Certificate and fails to decrypt it, even with
    # -tls13_change_cipher_spec; without client auth it copes.  So the smgate client runs without
    # compatibility mode towards GmSSL (TLS13Configuration.middlebox_compatibility=False).
    middlebox_compatibility = False
    # Asking for client certificates, GmSSL 3.3's tls13_server sends a CertificateRequest in resumed
    # handshakes too (RFC 8446 4.3.2 forbids it) and wants our Certificate and CertificateVerify.
    accept_certificate_request_in_psk = True

    def __init__(self, prefix: Path) -> None:
        self.binary = str(prefix / "bin" / "gmssl")
        self.env = dict(os.environ, LD_LIBRARY_PATH=str(prefix / "lib"))
        self.identity = gmssl_identity()

    def client_command(
        self, port: int, suite: CipherSuite, client_auth: bool, session_file: Path, resume: bool
    ) -> list[str]:
        identity = self.identity
        command = [
            self.binary,
            "tls13_client",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-cipher_suite",
            suite.name,
        ]
        command += ["-supported_group", "sm2p256v1", "-sig_alg", "sm2sig_sm3", "-cacert", str(identity.ca)]
        command += ["-server_name", "localhost", "-psk_dhe_ke", "-get", "/"]
        if client_auth:
            command += [
                "-cert",
                str(identity.client_cert),
                "-key",
                str(identity.client_key),
                "-pass",
                GMSSL_PASS,
            ]
        command += ["-sess_in" if resume else "-sess_out", str(session_file)]
        return command

    def server_command(self, port: int, suite: CipherSuite, client_auth: bool) -> list[str]:
        identity = self.identity
        command = [self.binary, "tls13_server", "-port", str(port), "-cipher_suite", suite.name, "-www"]
        command += ["-cert", str(identity.server_cert), "-key", str(identity.server_key), "-pass", GMSSL_PASS]
        command += ["-supported_group", "sm2p256v1", "-sig_alg", "sm2sig_sm3", "-psk_dhe_ke"]
        command += ["-new_session_ticket", "1", "-ticket_key", "00" * 16, "-tls13_change_cipher_spec"]
        if client_auth:
            command += ["-cert_request", "-cacert", str(identity.ca)]
        return command

    def client_ok(self, output: str, resume: bool) -> bool:
        return "smgate tls13" in output


async def peer_client_to_smgate(peer: Peer, suite: CipherSuite, client_auth: bool, workdir: Path) -> str:
    identity = peer.identity
    handshakes: list[tuple[bool, int, bool]] = []

    async def respond(stream: TLS13Stream) -> None:
        await stream.read(65536)
        done = stream.handshake
        handshakes.append((done.session_resumed, len(done.peer_certificates), done.peer_verified))
        stream.write(RESPONSE)
        await stream.drain()
        stream.write_eof()

    configuration = TLS13Configuration(
        is_client=False,
        cipher_suites=(suite,),
        credential=identity.server_credential,
        trust_store=identity.trust_store,
        client_auth=ClientAuth.REQUIRED if client_auth else ClientAuth.NONE,
        ticket_keys=SessionTicketKeys(),
    )
    port = free_port()
    server = await start_tls13_server("127.0.0.1", port, lambda: configuration, respond)
    session_file = workdir / f"{peer.name.split()[0]}-{suite.name}-{client_auth}.sess"
    results = []
    try:
        for resume in (False, True):
            code, output = await run(
                peer.client_command(port, suite, client_auth, session_file, resume),
                peer.env,
                b"GET / HTTP/1.0\r\n\r\n",
            )
            results.append(peer.client_ok(output, resume))
            if not results[-1]:
                tail = "\n      ".join(output.strip().splitlines()[-6:])
                return f"FAIL ({'resumed' if resume else 'full'}, exit {code}): {tail}"
    finally:
        server.close()
        await server.wait_closed()
    resumed = [flag for flag, _, _ in handshakes]
    certs = [count for _, count, _ in handshakes]
    verified = [flag for _, _, flag in handshakes]
    ok = resumed == [False, True] and (not client_auth or (certs[0] >= 1 and all(verified)))
    return (
        f"{'ok' if ok else 'FAIL'} (smgate saw resumed={resumed}, client certs={certs}, verified={verified})"
    )


async def smgate_client_to_peer(peer: Peer, suite: CipherSuite, client_auth: bool) -> str:
    identity = peer.identity
    session = None
    resumed: list[bool] = []
    verified: list[bool] = []
    process = None
    port = free_port()
    try:
        for _ in range(2):
            if process is None or peer.one_connection_per_server:
                if process is not None:
                    await process.wait()
                port = free_port()
                process = await asyncio.create_subprocess_exec(
                    *peer.server_command(port, suite, client_auth),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env=peer.env,
                )
                await asyncio.sleep(0.5)
            configuration = TLS13Configuration(
                is_client=True,
                cipher_suites=(suite,),
                trust_store=identity.trust_store,
                server_name="localhost",
                credential=identity.client_credential if client_auth else None,
                session=session,
                middlebox_compatibility=peer.middlebox_compatibility,
                accept_certificate_request_in_psk=peer.accept_certificate_request_in_psk,
            )
            try:
                stream = await tls13_connect("127.0.0.1", port, configuration)
            except Exception as exc:
                raise type(exc)(f"{'resumed' if session else 'full'} handshake: {exc}") from exc
            resumed.append(stream.handshake.session_resumed)
            verified.append(stream.handshake.peer_verified)
            stream.write(b"GET / HTTP/1.0\r\n\r\n")
            await stream.drain()
            response = await stream.read()
            session = stream.session or session
            stream.close()
            if b"200" not in response.split(b"\r\n", 1)[0]:
                return f"FAIL: response {response[:60]!r}"
    except Exception as exc:  # report the cell, keep going
        output = b""
        if process is not None:
            if process.returncode is None:
                process.kill()
            output = await process.stdout.read() if process.stdout else b""
        return f"FAIL: {type(exc).__name__}: {exc}; peer said: {output.decode(errors='replace')[-300:]}"
    finally:
        if process is not None:
            if process.returncode is None:
                process.kill()
            await process.wait()
    ok = resumed == [False, True] and all(verified)
    return f"{'ok' if ok else 'FAIL'} (resumed={resumed}, server verified={verified})"


async def main_async(args: argparse.Namespace) -> int:
    peers: list[Peer] = []
    if (args.tongsuo / "bin" / "tongsuo").exists():
        peers.append(Tongsuo(args.tongsuo))
    if (args.gmssl / "bin" / "gmssl").exists():
        peers.append(GmSSL(args.gmssl))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for peer in peers:
        for suite in CipherSuite:
            for client_auth in (False, True):
                label = f"{peer.name:12} {suite.name:16} {'clientauth' if client_auth else 'noauth    '}"
                inbound = await peer_client_to_smgate(peer, suite, client_auth, workdir)
                outbound = await smgate_client_to_peer(peer, suite, client_auth)
                failures += (not inbound.startswith("ok")) + (not outbound.startswith("ok"))
                print(f"{label}  peer client -> smgate server: {inbound}")
                print(f"{label}  smgate client -> peer server: {outbound}", flush=True)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tongsuo", type=Path, default=Path("/work/peers/tongsuo"))
    parser.add_argument("--gmssl", type=Path, default=Path("/work/peers/gmssl"))
    parser.add_argument("--workdir", default="/tmp/smgate-tls13-peers")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
