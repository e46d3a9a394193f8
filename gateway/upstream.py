"""Upstream transport sockets: open a :class:`ByteStream` to an endpoint in plain TCP, TLS (optionally
mutual) or TLCP, as a cluster's ``transport_socket`` says."""

from __future__ import annotations

import asyncio
import ssl
from abc import ABC, abstractmethod

from gateway.config import UpstreamTransport
from gateway.stream import AsyncioByteStream, ByteStream

_STREAM_LIMIT = 256 * 1024


class UpstreamConnectError(Exception):
    """Connecting or handshaking with an endpoint failed (retryable as ``connect-failure``)."""


class UpstreamConnector(ABC):
    kind: str = "plain"

    @abstractmethod
    async def connect(self, address: str, port: int, timeout: float) -> ByteStream: ...


class PlainConnector(UpstreamConnector):
    kind = "plain"

    async def connect(self, address: str, port: int, timeout: float) -> ByteStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(address, port, limit=_STREAM_LIMIT)
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(f"connect {address}:{port}: {exc or 'timeout'}") from None
        return AsyncioByteStream(reader, writer)


def upstream_ssl_context(cfg: UpstreamTransport) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.verify:
        assert cfg.trust_anchors is not None
        ctx.load_verify_locations(cafile=str(cfg.trust_anchors))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.client_cert_chain is not None and cfg.client_private_key is not None:
        ctx.load_cert_chain(str(cfg.client_cert_chain), str(cfg.client_private_key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class TlsConnector(UpstreamConnector):
    """TLS 1.2/1.3 to the endpoint; verifies the server name against the CA bundle."""

    kind = "tls"

    def __init__(self, cfg: UpstreamTransport) -> None:
        self._cfg = cfg
        self._ctx = upstream_ssl_context(cfg)

    async def connect(self, address: str, port: int, timeout: float) -> ByteStream:
        server_name = self._cfg.server_name or address
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    address,
                    port,
                    ssl=self._ctx,
                    server_hostname=server_name,
                    ssl_handshake_timeout=timeout,
                    limit=_STREAM_LIMIT,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"tls connect {address}:{port}: {exc or 'timeout'}") from None
        return AsyncioByteStream(reader, writer)


def build_connector(cfg: UpstreamTransport) -> UpstreamConnector:
    if cfg.type == "tls":
        return TlsConnector(cfg)
    if cfg.type == "tlcp":
        from gateway.tlcp_support import TlcpConnector  # tlcp_support imports this module

        return TlcpConnector(cfg)
    return PlainConnector()
