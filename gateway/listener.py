"""Listeners: accept raw sockets, sniff the first record, run the TLCP or TLS handshake, hand off.

One port serves TLCP, TLS 1.2/1.3 and (if allowed) plaintext. The first record header is read with
``MSG_PEEK`` so the bytes stay in the kernel buffer: OpenSSL (``loop.connect_accepted_socket`` with an
``SSLContext``) and the TLCP engine each see the original ClientHello. Garbage, oversized first records,
disallowed protocols and handshakes not finished within ``handshake_timeout`` (slow loris, truncated
records) are closed and counted by reason (``smgate_handshake_failures``) and audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from typing import TYPE_CHECKING

from gateway import audit_events as events
from gateway.config import ListenerConfig, Protocol
from gateway.connection import Connection, next_connection_id
from gateway.identity import PeerIdentity, identity_from_ssl, plain_identity
from gateway.sniff import RECORD_HEADER_LEN, FirstRecord, classify
from gateway.stream import AsyncioByteStream, ByteStream
from gateway.tlcp_support import tlcp_server_handshake
from tls.tlcp.aio import TLCPStreamError

if TYPE_CHECKING:
    from gateway.runtime import Generation

_STREAM_LIMIT = 256 * 1024


class HandshakeRefused(Exception):
    """The connection is closed before any filter runs; ``reason`` labels the metric and audit record."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


async def _wait_readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await fut
    finally:
        loop.remove_reader(sock.fileno())


async def peek_first_bytes(sock: socket.socket) -> bytes:
    """Up to 5 bytes of the first record, not consumed; fewer only for non-handshake first bytes."""
    while True:
        try:
            data = sock.recv(RECORD_HEADER_LEN, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            await _wait_readable(sock)
            continue
        except OSError as exc:
            raise HandshakeRefused("reset", str(exc)) from None
        if not data:
            raise HandshakeRefused("closed_before_hello")
        if len(data) >= RECORD_HEADER_LEN or data[0] != 0x16:
            return data
        # A partial header stays readable: poll instead of spinning on the ready socket.
        await asyncio.sleep(0.01)


#: how often a listener paused by audit (``on_failure: stop_accepting``) checks whether it may go on
AUDIT_RECHECK_SECONDS = 0.05


async def _hold_until_audit_writes(generation: Generation, client: socket.socket) -> None:
    """Audit ``on_failure: stop_accepting`` and the trail cannot be written: keep this connection
    unserved (and the next ones in the backlog) until it can; closed if the listener stops meanwhile."""
    try:
        while not generation.audit.accepting_allowed():
            await asyncio.sleep(AUDIT_RECHECK_SECONDS)
    except asyncio.CancelledError:
        client.close()
        raise


class Listener:
    """A bound socket and its accept loop; the generation (config, contexts) is swapped on reload."""

    def __init__(self, config: ListenerConfig, generation: Generation, *, reuse_port: bool = False) -> None:
        self.config = config
        self.generation = generation
        self.reuse_port = reuse_port
        self.sock: socket.socket | None = None
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._accept_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self.sock is not None
        port: int = self.sock.getsockname()[1]
        return port

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.config.address else socket.AF_INET
        self.sock = socket.create_server(
            (self.config.address, self.config.port),
            family=family,
            backlog=1024,
            reuse_port=self.reuse_port,
        )
        self.sock.setblocking(False)

    def start(self) -> None:
        if self.sock is None:
            self.bind()
        self._accept_task = asyncio.create_task(self._accept_loop(), name=f"listener:{self.config.name}")

    async def stop_accepting(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        while True:
            try:
                client, peer = await loop.sock_accept(self.sock)
            except OSError:
                await asyncio.sleep(0.05)  # EMFILE and friends: back off rather than spin
                continue
            if not self.generation.audit.accepting_allowed():
                await _hold_until_audit_writes(self.generation, client)
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.create_task(self._serve(client, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        gen = self.generation
        cfg = self.config
        stats = gen.stats
        conn_id = next_connection_id()
        stats.connections_total.labels(cfg.name).inc()
        with contextlib.suppress(OSError):
            events.conn_open(gen.audit, conn_id, cfg.name, peer, sock.getsockname())
        started = time.monotonic()
        protocol_label = "unknown"
        try:
            async with asyncio.timeout(cfg.handshake_timeout):
                kind = await self._sniff(sock)
                protocol_label = kind.value
                stream, identity = await self._handshake(sock, peer, kind, gen)
        except HandshakeRefused as exc:
            self._refused(sock, conn_id, exc.reason, str(exc), protocol_label)
            return
        except TimeoutError:
            self._refused(sock, conn_id, "handshake_timeout", "", protocol_label)
            return
        except TLCPStreamError as exc:
            reason = "handshake_timeout" if "timed out" in str(exc) else "handshake_error"
            self._refused(
                sock,
                conn_id,
                reason,
                str(exc),
                protocol_label,
                alert=exc.alert,
                alert_sent=exc.alert_sent is not False,
            )
            return
        except ssl.SSLError as exc:
            alert, sent = events.openssl_alert(exc.reason or "")
            self._refused(
                sock,
                conn_id,
                "handshake_error",
                str(exc),
                protocol_label,
                alert=alert,
                alert_sent=sent,
            )
            return
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
            # The peer hung up mid-handshake; a TLS client that rejects our certificate sends its
            # alert and closes at once, and the event loop may report only the close.
            self._refused(sock, conn_id, "peer_closed", type(exc).__name__, protocol_label, alert_sent=False)
            return
        except (ConnectionError, OSError) as exc:
            self._refused(sock, conn_id, "handshake_error", type(exc).__name__, protocol_label)
            return
        elapsed = time.monotonic() - started
        stats.handshake_seconds.labels(identity.protocol).observe(elapsed)
        stats.handshakes.labels(cfg.name, identity.protocol, identity.cipher_suite or "-", "success").inc()
        events.handshake_ok(gen.audit, conn_id, identity, elapsed * 1000)
        transport = "tls" if identity.protocol.startswith("tls") else identity.protocol
        chain = gen.select_filter_chain(cfg, identity.sni, transport)
        if chain is None:
            stats.handshake_failures.labels(cfg.name, "no_filter_chain").inc()
            events.route_decision(
                gen.audit,
                conn_id,
                route=None,
                cluster=None,
                upstream=None,
                allow=False,
                reason="no_filter_chain",
            )
            stream.abort()
            events.conn_close(
                gen.audit,
                conn_id,
                bytes_received=0,
                bytes_sent=0,
                duration_ms=elapsed * 1000,
                reason="no_filter_chain",
            )
            return
        conn = Connection(
            stream=stream,
            identity=identity,
            listener=cfg.name,
            generation=gen,
            filter_chain=chain.name,
            id=conn_id,
        )
        self.connections.add(conn)
        stats.connections_active.labels(cfg.name).inc()
        try:
            await conn.run(gen.build_filters(chain))
        finally:
            self.connections.discard(conn)
            stats.connections_active.labels(cfg.name).dec()
            events.conn_close(
                gen.audit,
                conn_id,
                bytes_received=conn.bytes_received,
                bytes_sent=conn.bytes_sent,
                duration_ms=(time.monotonic() - started) * 1000,
                reason=conn.close_reason,
            )

    async def _sniff(self, sock: socket.socket) -> FirstRecord:
        protocols = self.config.tls.protocols
        if protocols == (Protocol.PLAIN,):
            return FirstRecord.PLAIN  # nothing to tell apart; server-speaks-first protocols work too
        first = await peek_first_bytes(sock)
        if len(first) >= RECORD_HEADER_LEN:
            kind = classify(first, max_record=self.config.max_first_record_bytes)
        else:
            kind = FirstRecord.PLAIN if first[0] >= 0x20 else FirstRecord.GARBAGE
        if kind is FirstRecord.GARBAGE and Protocol.PLAIN in protocols and first[0] != 0x16:
            return FirstRecord.PLAIN  # binary plaintext protocols (length-prefixed RPC) are not garbage
        return kind

    async def _handshake(
        self, sock: socket.socket, peer: tuple[str, int], kind: FirstRecord, gen: Generation
    ) -> tuple[ByteStream, PeerIdentity]:
        protocols = self.config.tls.protocols
        if kind is FirstRecord.TLS:
            policy = gen.listener_tls.get(self.config.name)
            if policy is None:
                raise HandshakeRefused("protocol_not_allowed", "tls")
            return await self._tls_handshake(sock, peer, policy.default, policy.sni_of)
        if kind is FirstRecord.TLCP:
            tlcp = gen.listener_tlcp.get(self.config.name)
            if tlcp is None or Protocol.TLCP not in protocols:
                raise HandshakeRefused("protocol_not_allowed", "tlcp")
            return await tlcp_server_handshake(sock, peer, tlcp, self.config.handshake_timeout)
        if kind is FirstRecord.PLAIN:
            if Protocol.PLAIN not in protocols:
                raise HandshakeRefused("protocol_not_allowed", "plain")
            stream = await _open_plain(sock)
            return stream, plain_identity(peer)
        raise HandshakeRefused(kind.value)

    async def _tls_handshake(
        self, sock: socket.socket, peer: tuple[str, int], ctx: ssl.SSLContext, sni_of: object
    ) -> tuple[ByteStream, PeerIdentity]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_STREAM_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol, sock, ssl=ctx, ssl_handshake_timeout=self.config.handshake_timeout
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        ssl_object = transport.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        sni = getattr(sni_of, "get", lambda _k: None)(ssl_object)
        return AsyncioByteStream(reader, writer), identity_from_ssl(ssl_object, sni, peer)

    def _refused(
        self,
        sock: socket.socket,
        conn_id: int,
        reason: str,
        detail: str,
        protocol: str,
        *,
        alert: str | None = None,
        alert_sent: bool = True,
    ) -> None:
        gen = self.generation
        gen.stats.handshake_failures.labels(self.config.name, reason).inc()
        gen.stats.handshakes.labels(self.config.name, protocol, "-", "failure").inc()
        events.handshake_fail(
            gen.audit, conn_id, reason, alert=alert, alert_sent=alert_sent, detail=f"{protocol}: {detail}"
        )
        with contextlib.suppress(OSError):
            sock.close()
        events.conn_close(gen.audit, conn_id, bytes_received=0, bytes_sent=0, duration_ms=0.0, reason=reason)

    async def close_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


async def _open_plain(sock: socket.socket) -> ByteStream:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_STREAM_LIMIT)
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return AsyncioByteStream(reader, writer)
