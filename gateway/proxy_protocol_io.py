"""Reading a PROXY protocol header off an accepted socket, the listener's first step when configured.

The header is read with ``MSG_PEEK`` and then consumed with one ``recv`` of exactly its length, so the
client's first TLS/TLCP record stays in the kernel buffer for the sniffer and OpenSSL. The parser
(:mod:`gateway.proxy_protocol`) decides how many bytes it needs; a header that does not arrive within
the listener's ``handshake_timeout`` is the caller's timeout. A connection from an address outside
``trusted_sources`` is refused before anything is read: only the load balancer may name a client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork

from gateway.logs.rate_limit import handshake_failure
from gateway.proxy_protocol import (
    DEFAULT_MAX_V2_LENGTH,
    V1_MAX_LENGTH,
    NeedData,
    ProxyHeader,
    ProxyProtocolError,
    parse_header,
)


class ProxyProtocolConfig(BaseModel):
    """``listeners[].proxy_protocol``: expect a PROXY header before the first record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    versions: tuple[Literal[1, 2], ...] = Field(default=(1, 2), min_length=1)
    #: Networks the load balancers connect from; empty: any source may send a header.
    trusted_sources: tuple[IPvAnyNetwork, ...] = ()
    max_v2_length: int = Field(default=DEFAULT_MAX_V2_LENGTH, ge=216, le=65535)


class ProxyProtocolRefused(Exception):
    """The connection sent no acceptable PROXY header; the message is the log line's reason."""


def _trusted(config: ProxyProtocolConfig, peer: tuple[str, int]) -> bool:
    if not config.trusted_sources:
        return True
    try:
        address = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in config.trusted_sources)


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def read_proxy_header(
    sock: socket.socket, peer: tuple[str, int], config: ProxyProtocolConfig
) -> ProxyHeader:
    """Consume exactly the PROXY header from the non-blocking ``sock``; raises :class:`ProxyProtocolRefused`."""
    if not _trusted(config, peer):
        raise ProxyProtocolRefused(f"source {peer[0]} is not in proxy_protocol.trusted_sources")
    versions = frozenset(config.versions)
    limit = max(V1_MAX_LENGTH, 16 + config.max_v2_length)
    seen = 0
    while True:
        try:
            data = sock.recv(limit, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            await _readable(sock)
            continue
        except OSError as exc:
            raise ProxyProtocolRefused(f"connection error before the PROXY header: {exc}") from None
        if not data:
            raise ProxyProtocolRefused(f"connection closed after {seen} bytes of the PROXY header")
        try:
            result = parse_header(data, versions=versions, max_v2_length=config.max_v2_length)
        except ProxyProtocolError as exc:
            raise ProxyProtocolRefused(str(exc)) from None
        if isinstance(result, ProxyHeader):
            _consume(sock, result.length)
            return result
        assert isinstance(result, NeedData)
        if len(data) == seen:
            # The bytes we have stay readable: wait a little instead of spinning on a ready socket.
            await asyncio.sleep(0.01)
        seen = len(data)


def _consume(sock: socket.socket, length: int) -> None:
    """Drop the header bytes that peeking showed are already in the kernel buffer."""
    remaining = length
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ProxyProtocolRefused("connection closed while consuming the PROXY header")
        remaining -= len(chunk)


def client_address(header: ProxyHeader, peer: tuple[str, int]) -> tuple[str, int]:
    """The address routing, access control, access log and audit see: the header's source, if any."""
    return header.source if header.source is not None else peer


async def accept_proxy_header(
    sock: socket.socket, peer: tuple[str, int], config: ProxyProtocolConfig, timeout: float, listener: str
) -> tuple[str, int] | None:
    """The listener's first step: the real client address, or ``None`` after logging the refusal
    (rate-limited ``handshake failed`` line, reason ``proxy_protocol``) and closing ``sock``."""
    try:
        async with asyncio.timeout(timeout):
            header = await read_proxy_header(sock, peer, config)
    except (ProxyProtocolRefused, TimeoutError) as exc:
        detail = (
            str(exc) if isinstance(exc, ProxyProtocolRefused) else "timed out waiting for the PROXY header"
        )
        handshake_failure(listener, "proxy_protocol", peer, detail)
        sock.close()
        return None
    return client_address(header, peer)
