"""smgate against BabaSSL 8.3.2 NTLS (from the tongsuopy wheel), both directions, all four suites.

Every cell: a full handshake then a resumed one, application data both ways (echo), and a
close_notify exchange, checked from both ends (the BabaSSL child reports what it saw).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys

import pytest

from tests.conftest import REPO
from tests.interop.babassl import (
    SUITE_NAMES,
    BabaSSLServer,
    ClientOptions,
    ConnectionReport,
    ServerOptions,
    payload_bytes,
    run_babassl_client,
)
from tests.interop.identities import (
    PKI,
    SUITE_AUTH_MATRIX,
    TONGSUO_PKI,
    client_configuration,
    is_ecdhe,
    openssl_oneline,
    server_configuration,
    smgate_demo_pki,
)
from tls.tlcp.aio import TLCPHandshakeError, TLCPStream, start_tlcp_server, tlcp_connect, tlcp_request
from tls.tlcp.config import PeerProfile, SessionCache
from tls.tlcp.events import HandshakeComplete
from tls.tlcp.suites import CipherSuite

PAYLOAD_SIZE = 40_000


@pytest.fixture(scope="session")
def smgate_pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return smgate_demo_pki(tmp_path_factory.mktemp("smgate-pki"))


@pytest.fixture(params=["tongsuo-pki", "smgate-pki"])
def pki(request: pytest.FixtureRequest) -> PKI:
    """Tongsuo-made certificates, then smgate's own root -> intermediate -> leaf PKI."""
    if request.param == "tongsuo-pki":
        return TONGSUO_PKI
    smgate: PKI = request.getfixturevalue("smgate_pki")
    return smgate


@pytest.mark.parametrize(("suite", "client_auth"), SUITE_AUTH_MATRIX)
async def test_babassl_client_to_smgate_server(pki: PKI, suite: CipherSuite, client_auth: bool) -> None:
    handshakes: list[HandshakeComplete] = []
    clean_close: list[bool] = []

    async def echo(stream: TLCPStream) -> None:
        handshakes.append(stream.handshake)
        while data := await stream.read(65536):
            stream.write(data)
            await stream.drain()
        clean_close.append(stream.close_notify_received)

    configuration = server_configuration(
        pki, suites=(suite,), client_auth=client_auth, session_cache=SessionCache()
    )
    server = await start_tlcp_server("127.0.0.1", 0, lambda: configuration, echo)
    try:
        port = server.sockets[0].getsockname()[1]
        options = ClientOptions(
            port=port,
            suite=SUITE_NAMES[suite],
            certs=pki.client_files if client_auth else None,
            ca_file=pki.peer_ca_file,
            server_name="localhost",
            payload_size=PAYLOAD_SIZE,
            resume=True,
        )
        reports = await run_babassl_client(options)
        # The server side finishes its echo loop a moment after the client child has exited.
        async with asyncio.timeout(15):
            while len(clean_close) < 2:
                await asyncio.sleep(0.01)
    finally:
        server.close()
        await server.wait_closed()

    assert [report.error for report in reports] == [None, None]
    assert [report.reused for report in reports] == [False, True]
    for report in reports:
        assert report.cipher == SUITE_NAMES[suite]
        assert report.verify_result == 0
        assert report.payload_ok and report.sent == report.received == PAYLOAD_SIZE
        assert report.close_notify_received
    assert [handshake.session_resumed for handshake in handshakes] == [False, True]
    assert clean_close == [True, True]
    for handshake in handshakes:
        assert handshake.cipher_suite == suite
        if client_auth:
            assert handshake.peer_sign_cert is not None
            assert handshake.peer_sign_cert.der == pki.client_set.sign_cert.der
        else:
            assert handshake.peer_certificates == ()


#: BabaSSL expects the ECDHE ClientKeyExchange without the opaque<2> wrapper of GB/T 38636-2020
#: 6.4.5.8 (it answers the standard form with decode_error), so ECDHE needs the TONGSUO profile.
CLIENT_MATRIX = [
    pytest.param(
        suite,
        client_auth,
        profile,
        id=f"{suite.name}-{'clientauth' if client_auth else 'noauth'}-{profile.name}",
    )
    for suite in CipherSuite
    for client_auth in (False, True)
    for profile in (PeerProfile.STANDARD, PeerProfile.TONGSUO)
    if (client_auth or not is_ecdhe(suite)) and (profile is PeerProfile.TONGSUO or not is_ecdhe(suite))
]


@pytest.mark.parametrize(("suite", "client_auth", "profile"), CLIENT_MATRIX)
async def test_smgate_client_to_babassl_server(
    pki: PKI, suite: CipherSuite, client_auth: bool, profile: PeerProfile
) -> None:
    options = ServerOptions(
        suite=SUITE_NAMES[suite],
        certs=pki.server_files,
        ca_file=pki.peer_ca_file,
        verify_client=client_auth,
        require_client_cert=client_auth,
        connections=2,
    )
    payload = payload_bytes(PAYLOAD_SIZE, seed=3)
    async with BabaSSLServer(options) as babassl:
        configuration = client_configuration(pki, suites=(suite,), client_cert=client_auth, profile=profile)
        session = None
        for expect_resumed in (False, True):
            if session is not None:
                configuration = client_configuration(
                    pki, suites=(suite,), client_cert=client_auth, session=session, profile=profile
                )
            stream = await tlcp_connect("127.0.0.1", babassl.port, configuration)
            assert stream.handshake.cipher_suite == suite
            assert stream.handshake.session_resumed is expect_resumed
            assert stream.handshake.peer_sign_cert is not None
            assert stream.handshake.peer_sign_cert.der == pki.server_set.sign_cert.der
            stream.write(payload)
            await stream.drain()
            assert await stream.readexactly(PAYLOAD_SIZE) == payload
            stream.write_eof()
            assert await stream.read() == b""
            assert stream.close_notify_received
            await stream.aclose()
            session = stream.session
        reports = await babassl.reports(accept_order=True)

    assert [report.error for report in reports] == [None, None]
    assert [report.reused for report in reports] == [False, True]
    for report in reports:
        assert report.cipher == SUITE_NAMES[suite]
        assert report.received == report.sent == PAYLOAD_SIZE
        assert report.close_notify_received
        if client_auth:
            assert report.peer_subject == openssl_oneline(pki.client_set.sign_cert)
            assert report.verify_result == 0
        else:
            assert report.peer_subject is None


async def test_tlcp_request_against_babassl_echo_server(pki: PKI) -> None:
    suite = CipherSuite.ECC_SM4_GCM_SM3
    # BabaSSL sends the intermediate only when it can build the chain from its CA file.
    options = ServerOptions(
        suite=SUITE_NAMES[suite], certs=pki.server_files, ca_file=pki.peer_ca_file, connections=1
    )
    async with BabaSSLServer(options) as babassl:
        configuration = client_configuration(pki, suites=(suite,))
        response = await asyncio.to_thread(
            tlcp_request, "127.0.0.1", babassl.port, configuration, b"ping over TLCP", response_bytes=14
        )
        (report,) = await babassl.reports()
    assert response == b"ping over TLCP"
    assert report.error is None and report.close_notify_received


async def test_babassl_with_session_tickets_on_resumes_by_session_id() -> None:
    """Tongsuo's default offers session_ticket; smgate ignores the extension and resumes by session ID."""
    suite = CipherSuite.ECC_SM4_GCM_SM3
    resumed: list[bool] = []

    async def record(stream: TLCPStream) -> None:
        resumed.append(stream.handshake.session_resumed)
        while data := await stream.read(65536):
            stream.write(data)
            await stream.drain()

    configuration = server_configuration(TONGSUO_PKI, suites=(suite,), session_cache=SessionCache())
    server = await start_tlcp_server("127.0.0.1", 0, lambda: configuration, record)
    try:
        options = ClientOptions(
            port=server.sockets[0].getsockname()[1],
            suite=SUITE_NAMES[suite],
            ca_file=TONGSUO_PKI.ca_file,
            payload_size=1000,
            resume=True,
            tickets=True,
        )
        reports = await run_babassl_client(options)
    finally:
        server.close()
        await server.wait_closed()
    assert [(report.error, report.reused, report.payload_ok) for report in reports] == [
        (None, False, True),
        (None, True, True),
    ]
    assert resumed == [False, True]

    options_server = ServerOptions(
        suite=SUITE_NAMES[suite], certs=TONGSUO_PKI.server_files, tickets=True, connections=2
    )
    async with BabaSSLServer(options_server) as babassl:
        session = None
        for expect_resumed in (False, True):
            client = client_configuration(TONGSUO_PKI, suites=(suite,), session=session)
            stream = await tlcp_connect("127.0.0.1", babassl.port, client)
            assert stream.handshake.session_resumed is expect_resumed
            stream.write(b"x" * 100)
            assert await stream.readexactly(100) == b"x" * 100
            await stream.aclose()
            session = stream.session
        assert [report.reused for report in await babassl.reports(accept_order=True)] == [False, True]


# half-close both ways: data keeps flowing towards the side that sent close_notify


async def test_babassl_server_writes_after_our_close_notify() -> None:
    """smgate writes its request and close_notify; BabaSSL answers only after reading the close_notify."""
    suite = CipherSuite.ECC_SM4_GCM_SM3
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.tlcp.babassl_reply_after_eof",
        "--suite",
        SUITE_NAMES[suite],
        *TONGSUO_PKI.server_files.as_args(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        port = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))["port"]
        payload = payload_bytes(PAYLOAD_SIZE, seed=7)
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=(suite,)))
        stream.write(payload)
        await stream.drain()
        stream.write_eof()
        assert await stream.read() == payload
        assert stream.close_notify_received
        await stream.aclose()
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode(errors="replace")
    report = json.loads(stdout)
    assert report == {
        "received": PAYLOAD_SIZE,
        "sent": PAYLOAD_SIZE,
        "close_notify_received": True,
        "shutdown": 1,
        "error": None,
    }


async def test_smgate_server_answers_after_babassl_close_notify() -> None:
    """BabaSSL sends its payload then SSL_shutdown; smgate reads to EOF, then answers and closes."""
    suite = CipherSuite.ECDHE_SM4_GCM_SM3
    requests: list[tuple[int, bool]] = []
    answer = payload_bytes(3 * PAYLOAD_SIZE, seed=11)

    async def answer_after_eof(stream: TLCPStream) -> None:
        request = await stream.read()
        requests.append((len(request), stream.close_notify_received))
        stream.write(answer)
        await stream.drain()

    configuration = server_configuration(TONGSUO_PKI, suites=(suite,), client_auth=True)
    server = await start_tlcp_server("127.0.0.1", 0, lambda: configuration, answer_after_eof)
    try:
        options = ClientOptions(
            port=server.sockets[0].getsockname()[1],
            suite=SUITE_NAMES[suite],
            certs=TONGSUO_PKI.client_files,
            ca_file=TONGSUO_PKI.peer_ca_file,
            payload_size=PAYLOAD_SIZE,
            echo=False,
        )
        (report,) = await run_babassl_client(options)
    finally:
        server.close()
        await server.wait_closed()
    assert requests == [(PAYLOAD_SIZE, True)]
    # The harness counts bytes read after its SSL_shutdown and flags them as unexpected (payload_ok).
    assert report.error is None and report.sent == PAYLOAD_SIZE
    assert report.received == len(answer) and report.close_notify_received


# ALPN (RFC 7301) in the NTLS hellos: BabaSSL offers and selects it like TLS does


async def _serve_babassl_client(
    alpn_protocols: tuple[str, ...], offer: str, *, alpn_required: bool = False, resume: bool = True
) -> tuple[list[ConnectionReport], list[str | None]]:
    """A BabaSSL client offering ``offer`` against a smgate server; (client reports, server ALPN seen)."""
    suite = CipherSuite.ECC_SM4_GCM_SM3
    negotiated: list[str | None] = []

    async def echo(stream: TLCPStream) -> None:
        negotiated.append(stream.get_extra_info("alpn_protocol"))
        assert stream.handshake.alpn_protocol == negotiated[-1]
        while data := await stream.read(65536):
            stream.write(data)
            await stream.drain()

    configuration = dataclasses.replace(
        server_configuration(TONGSUO_PKI, suites=(suite,), session_cache=SessionCache()),
        alpn_protocols=alpn_protocols,
        alpn_required=alpn_required,
    )
    server = await start_tlcp_server("127.0.0.1", 0, lambda: configuration, echo)
    try:
        options = ClientOptions(
            port=server.sockets[0].getsockname()[1],
            suite=SUITE_NAMES[suite],
            ca_file=TONGSUO_PKI.ca_file,
            payload_size=1000,
            resume=resume,
            alpn=offer,
        )
        reports = await run_babassl_client(options)
    finally:
        server.close()
        await server.wait_closed()
    return reports, negotiated


async def test_babassl_client_alpn_with_smgate_server() -> None:
    reports, negotiated = await _serve_babassl_client(("h2", "http/1.1"), "http/1.1,h2")
    assert [(report.error, report.reused, report.alpn) for report in reports] == [
        (None, False, "h2"),
        (None, True, "h2"),  # negotiated afresh on the resumed connection
    ]
    assert negotiated == ["h2", "h2"]


async def test_babassl_client_alpn_without_overlap() -> None:
    reports, negotiated = await _serve_babassl_client(("h2",), "spdy/3", resume=False)
    assert [(report.error, report.alpn, report.payload_ok) for report in reports] == [(None, "", True)]
    assert negotiated == [None]

    reports, negotiated = await _serve_babassl_client(("h2",), "spdy/3", alpn_required=True, resume=False)
    assert negotiated == []
    (report,) = reports
    assert report.error is not None and "reason(1120)" in report.error  # alert 120 received


@pytest.mark.parametrize(
    ("babassl_alpn", "expected"),
    [("http/1.1,h2", "http/1.1"), ("h2", "h2"), ("", None)],
    ids=["server-order", "one-common", "server-without-alpn"],
)
async def test_smgate_client_alpn_with_babassl_server(babassl_alpn: str, expected: str | None) -> None:
    suite = CipherSuite.ECC_SM4_GCM_SM3
    options = ServerOptions(
        suite=SUITE_NAMES[suite], certs=TONGSUO_PKI.server_files, connections=2, alpn=babassl_alpn
    )
    async with BabaSSLServer(options) as babassl:
        session = None
        for expect_resumed in (False, True):
            configuration = dataclasses.replace(
                client_configuration(TONGSUO_PKI, suites=(suite,), session=session),
                alpn_protocols=("h2", "http/1.1"),
            )
            stream = await tlcp_connect("127.0.0.1", babassl.port, configuration)
            assert stream.handshake.session_resumed is expect_resumed
            assert stream.get_extra_info("alpn_protocol") == expected
            stream.write(b"x" * 100)
            assert await stream.readexactly(100) == b"x" * 100
            await stream.aclose()
            session = stream.session
        reports = await babassl.reports(accept_order=True)
    assert [(report.error, report.reused, report.alpn) for report in reports] == [
        (None, False, expected or ""),
        (None, True, expected or ""),
    ]


async def test_babassl_server_refuses_an_offer_without_overlap() -> None:
    suite = CipherSuite.ECC_SM4_GCM_SM3
    options = ServerOptions(
        suite=SUITE_NAMES[suite], certs=TONGSUO_PKI.server_files, connections=1, alpn="h2"
    )
    async with BabaSSLServer(options) as babassl:
        configuration = dataclasses.replace(
            client_configuration(TONGSUO_PKI, suites=(suite,)), alpn_protocols=("http/1.1",)
        )
        with pytest.raises(TLCPHandshakeError) as refused:
            await tlcp_connect("127.0.0.1", babassl.port, configuration)
        (report,) = await babassl.reports()
    assert refused.value.alert == "no_application_protocol" and refused.value.alert_sent is False
    assert report.error is not None and "no application protocol" in report.error


async def test_alpn_fallback_connects_again_without_alpn() -> None:
    """What GmSSL 3.3's tlcp_server does to any ALPN offer when it has no -alpn, BabaSSL does here to
    one without overlap: with alpn_fallback the client connects once more, offering nothing."""
    suite = CipherSuite.ECC_SM4_GCM_SM3
    options = ServerOptions(
        suite=SUITE_NAMES[suite], certs=TONGSUO_PKI.server_files, connections=2, alpn="h2"
    )
    async with BabaSSLServer(options) as babassl:
        configuration = dataclasses.replace(
            client_configuration(TONGSUO_PKI, suites=(suite,)), alpn_protocols=("http/1.1",)
        )
        stream = await tlcp_connect("127.0.0.1", babassl.port, configuration, alpn_fallback=True)
        assert stream.get_extra_info("alpn_protocol") is None
        stream.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await stream.readexactly(18) == b"GET / HTTP/1.1\r\n\r\n"
        await stream.aclose()
        reports = await babassl.reports(accept_order=True)
    assert [(report.error is None, report.alpn) for report in reports] == [(False, ""), (True, "")]
