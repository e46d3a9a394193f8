"""RFC 8998 against OpenSSL 4.x's TLS stack (the ``cryptography`` wheel's libssl, `tests.interop.openssl4`):
both directions, both suites, with and without client authentication, a full handshake then a
resumed one."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.interop.identities import TONGSUO_PKI
from tests.interop.openssl4 import Client, PeerFiles, serve, version
from tls.tls13 import CipherSuite, ClientAuth, SessionTicketKeys, TLS13Configuration
from tls.tls13.aio import TLS13Stream, start_tls13_server, tls13_connect

from .conftest import client_credential, free_port, server_credential

PKI = TONGSUO_PKI
CELLS = [(suite, auth) for suite in CipherSuite for auth in (False, True)]


def test_the_wheel_carries_openssl_4() -> None:
    assert version().startswith("OpenSSL 4."), version()


def _client_files(client_auth: bool) -> PeerFiles:
    files = PKI.client_files
    return PeerFiles(
        files.sign_cert if client_auth else None, files.sign_key if client_auth else None, PKI.ca_file
    )


@pytest.mark.parametrize(("suite", "client_auth"), CELLS)
async def test_openssl4_client_to_smgate_server(suite: CipherSuite, client_auth: bool) -> None:
    seen = []

    async def respond(stream: TLS13Stream) -> None:
        await stream.read(65536)
        done = stream.handshake
        seen.append((done.session_resumed, done.peer_verified, done.peer_sm2_signature_id))
        stream.write(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nsmgate")
        await stream.drain()
        stream.write_eof()

    configuration = TLS13Configuration(
        is_client=False,
        cipher_suites=(suite,),
        credential=server_credential(PKI),
        trust_store=PKI.trust_store,
        client_auth=ClientAuth.REQUIRED if client_auth else ClientAuth.NONE,
        ticket_keys=SessionTicketKeys(),
    )
    port = free_port()
    server = await start_tls13_server("127.0.0.1", port, lambda: configuration, respond)
    try:
        client = Client(suite.name, _client_files(client_auth))
        reports = [await asyncio.to_thread(client.get, port) for _ in range(2)]
    finally:
        server.close()
        await server.wait_closed()
    assert [(r.cipher, r.resumed, r.verify_result) for r in reports] == [
        (suite.name, False, 0),
        (suite.name, True, 0),
    ]
    assert all(r.data.endswith(b"smgate") for r in reports)
    assert [resumed for resumed, _, _ in seen] == [False, True]
    if client_auth:
        # OpenSSL 4 signs its CertificateVerify with the SM2 ID RFC 8998 3.2.1 fixes.
        assert seen[0][1:] == (True, b"TLSv1.3+GM+Cipher+Suite") and seen[1][1]


@pytest.mark.parametrize(("suite", "client_auth"), CELLS)
async def test_smgate_client_to_openssl4_server(suite: CipherSuite, client_auth: bool) -> None:
    listener = socket.create_server(("127.0.0.1", free_port()))
    port = listener.getsockname()[1]
    files = PeerFiles(PKI.server_files.sign_cert, PKI.server_files.sign_key, PKI.ca_file)
    serving = asyncio.create_task(
        asyncio.to_thread(serve, listener, suite.name, files, client_auth=client_auth, connections=2)
    )
    outcomes = []
    session = None
    try:
        for _ in range(2):
            configuration = TLS13Configuration(
                is_client=True,
                cipher_suites=(suite,),
                trust_store=PKI.trust_store,
                server_name="localhost",
                credential=client_credential(PKI) if client_auth else None,
                session=session,
            )
            stream = await tls13_connect("127.0.0.1", port, configuration, handshake_timeout=10)
            stream.write(b"GET / HTTP/1.0\r\n\r\n")
            await stream.drain()
            response = await stream.read()
            session = stream.session or session
            done = stream.handshake
            outcomes.append((done.session_resumed, done.peer_verified, done.peer_sm2_signature_id, response))
            stream.close()
        reports = await asyncio.wait_for(serving, 20)
    finally:
        listener.close()
    assert [o[0] for o in outcomes] == [False, True] and all(o[1] for o in outcomes)
    assert outcomes[0][2] == b"TLSv1.3+GM+Cipher+Suite"  # the ID OpenSSL 4's server signs with
    assert all(o[3].endswith(b"openssl4") for o in outcomes)
    assert [(r.cipher, r.resumed, r.peer_certificate) for r in reports] == [
        (suite.name, False, client_auth),
        (suite.name, True, client_auth),
    ]
    assert all(r.verify_result == 0 and r.data.startswith(b"GET /") for r in reports)
