"""smgate's TLS 1.3 (RFC 8998) engine against BabaSSL 8.3.2 (the tongsuopy wheel's libssl), both directions.

Every matrix cell: both suites, with and without client authentication, a full handshake then a
resumed one (session ticket, psk_dhe_ke), 1 MiB echoed each way, close_notify both ways, checked from
both ends (the BabaSSL child reports what it saw).  Then HelloRetryRequest each way, ALPN, KeyUpdate,
SNI and a chain from smgate's own PKI.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.interop.babassl import (
    TLS13_SUITE_NAMES,
    BabaSSLServer,
    ClientOptions,
    ServerOptions,
    payload_bytes,
    run_babassl_client,
)
from tests.interop.identities import PKI, TONGSUO_PKI, openssl_oneline
from tls.tls13 import CipherSuite, ClientAuth, HandshakeComplete, SessionTicketKeys
from tls.tls13.aio import TLS13Stream, start_tls13_server, tls13_connect

from .conftest import client_config, client_credential, free_port, server_config

MIB = 1 << 20

MATRIX = [
    pytest.param(suite, client_auth, id=f"{suite.name}-{'clientauth' if client_auth else 'noauth'}")
    for suite in CipherSuite
    for client_auth in (False, True)
]


class EchoServer:
    """An smgate TLS 1.3 echo server; remembers each handshake and whether the client closed cleanly."""

    def __init__(self) -> None:
        self.handshakes: list[HandshakeComplete] = []
        self.clean_close: list[bool] = []

    async def __call__(self, stream: TLS13Stream) -> None:
        self.handshakes.append(stream.handshake)
        while data := await stream.read(65536):
            stream.write(data)
            await stream.drain()
        self.clean_close.append(stream.close_notify_received)

    async def wait_for(self, connections: int) -> None:
        async with asyncio.timeout(15):
            while len(self.clean_close) < connections:
                await asyncio.sleep(0.01)


async def run_babassl_against_smgate(
    pki: PKI, configuration_overrides: dict[str, object], options: dict[str, object]
) -> tuple[list, EchoServer]:
    echo = EchoServer()
    configuration = server_config(pki, **configuration_overrides)
    port = free_port()
    server = await start_tls13_server("127.0.0.1", port, lambda: configuration, echo)
    try:
        client = ClientOptions(port=port, protocol="tls13", ca_file=pki.peer_ca_file, **options)  # type: ignore[arg-type]
        reports = await run_babassl_client(client, timeout=120)
        await echo.wait_for(len(reports))
    finally:
        server.close()
        await server.wait_closed()
    return reports, echo


@pytest.mark.parametrize(("suite", "client_auth"), MATRIX)
async def test_babassl_client_to_smgate_server(suite: CipherSuite, client_auth: bool) -> None:
    pki = TONGSUO_PKI
    reports, echo = await run_babassl_against_smgate(
        pki,
        {
            "cipher_suites": (suite,),
            "client_auth": ClientAuth.REQUIRED if client_auth else ClientAuth.NONE,
        },
        {
            "suite": TLS13_SUITE_NAMES[suite],
            "certs": pki.client_files if client_auth else None,
            "server_name": "localhost",
            "payload_size": MIB,
            "resume": True,
        },
    )
    assert [report.error for report in reports] == [None, None]
    assert [report.reused for report in reports] == [False, True]
    for report in reports:
        assert (report.cipher, report.version) == (TLS13_SUITE_NAMES[suite], "TLSv1.3")
        assert report.verify_result == 0
        assert report.payload_ok and report.sent == report.received == MIB
        assert report.close_notify_received
        assert report.peer_subject == openssl_oneline(pki.server_set.sign_cert)
    assert [handshake.session_resumed for handshake in echo.handshakes] == [False, True]
    assert echo.clean_close == [True, True]
    for handshake in echo.handshakes:
        assert handshake.cipher_suite == suite and handshake.server_name == "localhost"
        if client_auth:
            assert handshake.peer_certificate is not None
            assert handshake.peer_certificate.der == pki.client_set.sign_cert.der
        else:
            assert handshake.peer_certificates == ()
    if client_auth:
        # BabaSSL signs its CertificateVerify with RFC 8998's SM2 ID
        assert echo.handshakes[0].peer_sm2_signature_id == b"TLSv1.3+GM+Cipher+Suite"


async def smgate_client_session(
    port: int, suite: CipherSuite, client_auth: bool, payload: bytes, *, rounds: int = 2, **overrides: Any
) -> list[HandshakeComplete]:
    """Connect `rounds` times, resuming from the previous ticket; echo `payload` each time."""
    handshakes: list[HandshakeComplete] = []
    session = None
    for _ in range(rounds):
        configuration = client_config(
            session=session,
            cipher_suites=(suite,),
            credential=client_credential() if client_auth else None,
            **overrides,
        )
        stream = await tls13_connect("127.0.0.1", port, configuration)
        handshakes.append(stream.handshake)
        stream.write(payload)
        await stream.drain()
        assert await stream.readexactly(len(payload)) == payload
        session = stream.session or await stream.wait_for_session()
        stream.write_eof()
        assert await stream.read() == b""
        assert stream.close_notify_received
        await stream.aclose()
    return handshakes


@pytest.mark.parametrize(("suite", "client_auth"), MATRIX)
async def test_smgate_client_to_babassl_server(suite: CipherSuite, client_auth: bool) -> None:
    pki = TONGSUO_PKI
    options = ServerOptions(
        suite=TLS13_SUITE_NAMES[suite],
        certs=pki.server_files,
        ca_file=pki.peer_ca_file,
        verify_client=client_auth,
        require_client_cert=client_auth,
        connections=2,
        protocol="tls13",
        port=free_port(),
    )
    payload = payload_bytes(MIB, seed=3)
    async with BabaSSLServer(options) as babassl:
        handshakes = await smgate_client_session(babassl.port, suite, client_auth, payload)
        reports = await babassl.reports()

    assert [handshake.session_resumed for handshake in handshakes] == [False, True]
    for handshake in handshakes:
        assert handshake.cipher_suite == suite
        assert handshake.peer_certificate is not None
        assert handshake.peer_certificate.der == pki.server_set.sign_cert.der
    assert handshakes[0].peer_sm2_signature_id == b"TLSv1.3+GM+Cipher+Suite"
    assert [report.error for report in reports] == [None, None]
    assert [report.reused for report in reports] == [False, True]
    for report in reports:
        assert (report.cipher, report.version) == (TLS13_SUITE_NAMES[suite], "TLSv1.3")
        assert report.received == report.sent == MIB
        assert report.close_notify_received
        if client_auth:
            assert report.peer_subject == openssl_oneline(pki.client_set.sign_cert)


async def test_hello_retry_request_from_smgate_server() -> None:
    """BabaSSL's first key share is X25519; smgate asks for curveSM2 with a HelloRetryRequest."""
    reports, echo = await run_babassl_against_smgate(
        TONGSUO_PKI,
        {},
        {
            "suite": "TLS_SM4_GCM_SM3",
            "groups": "X25519:SM2",
            "server_name": "localhost",
            "payload_size": 5000,
        },
    )
    assert [report.error for report in reports] == [None]
    assert reports[0].payload_ok
    assert echo.handshakes[0].session_resumed is False


async def test_hello_retry_request_from_babassl_server() -> None:
    """smgate sends an empty key_share; BabaSSL asks for curveSM2 with a HelloRetryRequest."""
    options = ServerOptions(
        suite="TLS_SM4_GCM_SM3",
        certs=TONGSUO_PKI.server_files,
        connections=2,
        protocol="tls13",
        port=free_port(),
    )
    async with BabaSSLServer(options) as babassl:
        handshakes = await smgate_client_session(
            babassl.port, CipherSuite.TLS_SM4_GCM_SM3, False, b"retry" * 100, offer_key_share=False
        )
        reports = await babassl.reports()
    assert [handshake.session_resumed for handshake in handshakes] == [False, True]
    assert [report.error for report in reports] == [None, None]


async def test_alpn_and_key_update_with_babassl_client() -> None:
    reports, echo = await run_babassl_against_smgate(
        TONGSUO_PKI,
        {"alpn_protocols": ("h2", "http/1.1")},
        {
            "suite": "TLS_SM4_GCM_SM3",
            "alpn": "http/1.1,h2",
            "server_name": "localhost",
            "payload_size": 200_000,
            "key_update": True,
        },
    )
    assert [report.error for report in reports] == [None]
    assert reports[0].alpn == "h2" and reports[0].payload_ok
    assert echo.handshakes[0].alpn_protocol == "h2"


async def test_alpn_and_key_update_with_babassl_server() -> None:
    options = ServerOptions(
        suite="TLS_SM4_CCM_SM3",
        certs=TONGSUO_PKI.server_files,
        connections=1,
        protocol="tls13",
        alpn="http/1.1",
        port=free_port(),
    )
    async with BabaSSLServer(options) as babassl:
        configuration = client_config(
            cipher_suites=(CipherSuite.TLS_SM4_CCM_SM3,), alpn_protocols=("h2", "http/1.1")
        )
        stream = await tls13_connect("127.0.0.1", babassl.port, configuration)
        assert stream.get_extra_info("alpn_protocol") == "http/1.1"
        for round_number in range(3):
            stream.write(b"%d" % round_number * 1000)
            stream.update_keys()
            await stream.drain()
            assert await stream.readexactly(1000) == b"%d" % round_number * 1000
        await stream.aclose()
        (report,) = await babassl.reports()
    assert report.error is None and report.alpn == "http/1.1" and report.received == 3000


async def test_smgate_pki_chain_both_ways(smgate_pki: PKI) -> None:
    """smgate's root -> intermediate -> leaf PKI: each side sends and validates the intermediate."""
    reports, echo = await run_babassl_against_smgate(
        smgate_pki,
        {"client_auth": ClientAuth.REQUIRED},
        {
            "suite": "TLS_SM4_GCM_SM3",
            "certs": smgate_pki.client_files,
            "server_name": "localhost",
            "payload_size": 1000,
        },
    )
    assert [report.error for report in reports] == [None]
    assert echo.handshakes[0].peer_certificate is not None
    assert echo.handshakes[0].peer_certificate.der == smgate_pki.client_set.sign_cert.der
    options = ServerOptions(
        suite="TLS_SM4_GCM_SM3",
        certs=smgate_pki.server_files,
        ca_file=smgate_pki.peer_ca_file,
        connections=1,
        protocol="tls13",
        port=free_port(),
    )
    async with BabaSSLServer(options) as babassl:
        stream = await tls13_connect("127.0.0.1", babassl.port, client_config(smgate_pki))
        subjects = [certificate.subject for certificate in stream.handshake.peer_certificates]
        assert "Intermediate CA" in subjects[1]  # BabaSSL completes its chain from its CA file
        await stream.aclose()
        await babassl.reports()


def test_ticket_keys_are_shared_per_server() -> None:
    keys = SessionTicketKeys()
    assert server_config(ticket_keys=keys).ticket_keys is keys
