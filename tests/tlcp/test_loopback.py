"""smgate client against smgate server over real 127.0.0.1 sockets, through `tls.tlcp.aio`."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import pytest

from tests.interop.babassl import payload_bytes
from tests.interop.identities import (
    PKI,
    SUITE_AUTH_MATRIX,
    TONGSUO_PKI,
    client_configuration,
    server_configuration,
    smgate_demo_pki,
)
from tests.tlcp.dialect_servers import GMSSL_PKI
from tls.tlcp.aio import TLCPHandshakeError, TLCPStream, start_tlcp_server, tlcp_connect
from tls.tlcp.config import SessionCache
from tls.tlcp.events import HandshakeComplete
from tls.tlcp.suites import CipherSuite


async def echo_until_eof(stream: TLCPStream) -> None:
    while data := await stream.read(65536):
        stream.write(data)
        await stream.drain()


class EchoServer:
    """A smgate TLCP echo server on an ephemeral port that records each peer's handshake."""

    def __init__(
        self,
        pki: PKI = TONGSUO_PKI,
        alpn_protocols: tuple[str, ...] = (),
        alpn_required: bool = False,
        **server_options: object,
    ) -> None:
        self.pki = pki
        self.cache = SessionCache()
        self.alpn_protocols = alpn_protocols
        self.alpn_required = alpn_required
        self.options = server_options
        self.handshakes: list[HandshakeComplete] = []
        self.close_notify: list[bool] = []
        self.server: asyncio.Server | None = None

    async def handle(self, stream: TLCPStream) -> None:
        self.handshakes.append(stream.handshake)
        await echo_until_eof(stream)
        self.close_notify.append(stream.close_notify_received)

    async def __aenter__(self) -> EchoServer:
        configuration = server_configuration(self.pki, session_cache=self.cache, **self.options)  # type: ignore[arg-type]
        configuration = dataclasses.replace(
            configuration, alpn_protocols=self.alpn_protocols, alpn_required=self.alpn_required
        )
        self.server = await start_tlcp_server("127.0.0.1", 0, lambda: configuration, self.handle)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def echo_round_trip(stream: TLCPStream, payload: bytes) -> None:
    stream.write(payload)
    await stream.drain()
    assert await stream.readexactly(len(payload)) == payload
    stream.write_eof()
    assert await stream.read() == b""
    assert stream.close_notify_received
    await stream.aclose()


@pytest.mark.parametrize(("suite", "client_auth"), SUITE_AUTH_MATRIX)
async def test_full_then_resumed_handshake(suite: CipherSuite, client_auth: bool) -> None:
    async with EchoServer(suites=(suite,), client_auth=client_auth) as server:
        configuration = client_configuration(TONGSUO_PKI, suites=(suite,), client_cert=client_auth)
        first = await tlcp_connect("127.0.0.1", server.port, configuration)
        assert first.handshake.cipher_suite == suite
        assert not first.handshake.session_resumed
        assert first.handshake.peer_sign_cert is not None
        assert first.handshake.peer_sign_cert.der == TONGSUO_PKI.server_set.sign_cert.der
        assert first.handshake.peer_enc_cert is not None
        assert first.handshake.peer_enc_cert.der == TONGSUO_PKI.server_set.enc_cert.der
        assert first.get_extra_info("peername")[0] == "127.0.0.1"
        assert first.get_extra_info("cipher_suite") == suite
        await echo_round_trip(first, b"first connection " + suite.name.encode())
        session = first.session
        assert session is not None

        configuration = client_configuration(
            TONGSUO_PKI, suites=(suite,), client_cert=client_auth, session=session
        )
        second = await tlcp_connect("127.0.0.1", server.port, configuration)
        assert second.handshake.session_resumed
        assert second.handshake.session_id == first.handshake.session_id
        assert second.handshake.cipher_suite == suite
        await echo_round_trip(second, b"resumed connection")

    assert [h.session_resumed for h in server.handshakes] == [False, True]
    assert server.close_notify == [True, True]
    for handshake in server.handshakes:
        if client_auth:
            assert handshake.peer_sign_cert is not None
            assert handshake.peer_sign_cert.der == TONGSUO_PKI.client_set.sign_cert.der
        else:
            assert handshake.peer_certificates == ()


async def test_large_transfer_checks_every_byte() -> None:
    size = 16 * 1024 * 1024 + 1234
    payload = payload_bytes(size, seed=7)
    async with EchoServer(suites=(CipherSuite.ECC_SM4_GCM_SM3,)) as server:
        configuration = client_configuration(TONGSUO_PKI, suites=(CipherSuite.ECC_SM4_GCM_SM3,))
        stream = await tlcp_connect("127.0.0.1", server.port, configuration)

        async def send() -> None:
            for offset in range(0, size, 1 << 20):
                stream.write(payload[offset : offset + (1 << 20)])
                await stream.drain()

        async def receive() -> tuple[int, bytes]:
            # Read the whole echo before close_notify: the peer answers close_notify at once
            # (RFC 5246 7.2.1), after which it cannot echo what it still holds.
            digest = hashlib.sha256()
            received = 0
            while received < size and (chunk := await stream.read(1 << 20)):
                assert chunk == payload[received : received + len(chunk)]
                digest.update(chunk)
                received += len(chunk)
            return received, digest.digest()

        _, (received, digest) = await asyncio.gather(send(), receive())
        stream.write_eof()
        assert await stream.read() == b""
        await stream.aclose()
    assert received == size
    assert digest == hashlib.sha256(payload).digest()


async def test_fifty_concurrent_connections() -> None:
    async with EchoServer(suites=(CipherSuite.ECC_SM4_CBC_SM3,)) as server:
        configuration = client_configuration(TONGSUO_PKI, suites=(CipherSuite.ECC_SM4_CBC_SM3,))

        async def one(index: int) -> bytes:
            stream = await tlcp_connect("127.0.0.1", server.port, configuration)
            message = f"client {index} ".encode() * 50
            stream.write(message)
            await stream.drain()
            echoed = await stream.readexactly(len(message))
            await stream.aclose()
            return echoed

        results = await asyncio.gather(*(one(index) for index in range(50)))
    assert results == [f"client {index} ".encode() * 50 for index in range(50)]
    assert len(server.handshakes) == 50


async def test_smgate_pki_chain_through_an_intermediate(tmp_path) -> None:
    pki = smgate_demo_pki(tmp_path)
    suite = CipherSuite.ECDHE_SM4_GCM_SM3
    async with EchoServer(pki, suites=(suite,), client_auth=True) as server:
        configuration = client_configuration(pki, suites=(suite,), client_cert=True)
        stream = await tlcp_connect("127.0.0.1", server.port, configuration)
        assert [c.der for c in stream.handshake.peer_certificates] == [
            c.der for c in pki.server_set.certificate_list()
        ]
        await echo_round_trip(stream, b"through the intermediate")
    (handshake,) = server.handshakes
    assert handshake.peer_sign_cert is not None
    assert handshake.peer_sign_cert.der == pki.client_set.sign_cert.der


async def test_alpn_over_sockets_full_and_resumed() -> None:
    suite = CipherSuite.ECDHE_SM4_GCM_SM3
    async with EchoServer(suites=(suite,), client_auth=True, alpn_protocols=("h2", "http/1.1")) as server:
        session = None
        for offer, expected in ((("http/1.1", "h2"), "h2"), (("http/1.1",), "http/1.1"), ((), None)):
            configuration = dataclasses.replace(
                client_configuration(TONGSUO_PKI, suites=(suite,), client_cert=True, session=session),
                alpn_protocols=offer,
            )
            stream = await tlcp_connect("127.0.0.1", server.port, configuration)
            assert stream.get_extra_info("alpn_protocol") == stream.handshake.alpn_protocol == expected
            assert stream.handshake.session_resumed is (session is not None)
            await echo_round_trip(stream, b"negotiated " + str(expected).encode())
            session = session or stream.session
    assert [(h.alpn_protocol, h.session_resumed) for h in server.handshakes] == [
        ("h2", False),
        ("http/1.1", True),
        (None, True),
    ]


async def test_alpn_fallback_only_after_no_application_protocol() -> None:
    suite = CipherSuite.ECC_SM4_GCM_SM3
    async with EchoServer(suites=(suite,), alpn_protocols=("h2",), alpn_required=True) as server:
        configuration = dataclasses.replace(
            client_configuration(TONGSUO_PKI, suites=(suite,)), alpn_protocols=("http/1.1",)
        )
        with pytest.raises(TLCPHandshakeError) as refused:
            await tlcp_connect("127.0.0.1", server.port, configuration)
        assert refused.value.alert == "no_application_protocol"
        stream = await tlcp_connect("127.0.0.1", server.port, configuration, alpn_fallback=True)
        assert stream.handshake.alpn_protocol is None
        await echo_round_trip(stream, b"without ALPN")

        untrusted = dataclasses.replace(configuration, trust_store=GMSSL_PKI.trust_store)
        with pytest.raises(TLCPHandshakeError) as our_alert:
            await tlcp_connect("127.0.0.1", server.port, untrusted, alpn_fallback=True)
        assert our_alert.value.alert_sent is True  # our own verdict: never retried
    assert [h.alpn_protocol for h in server.handshakes] == [None]
