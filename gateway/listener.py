"""Listeners: accept a socket and take it, top-down, to a running connection.

    accept -> listener filters (PROXY protocol: who; sniff: which transport)
           -> transport.accept (handshake, identity)
           -> filter chain match (SNI, transport) -> Connection.run(filters)

Each step hands the next what it found and never comes back: the listener filters annotate the
:class:`~gateway.transports.base.AcceptedSocket`, the transport returns a stream and a
:class:`~gateway.identity.PeerIdentity` or refuses with a reason (the metric label and audit record),
the chain's filters run the connection. The whole of the first two steps fits in ``handshake_timeout``
(slow loris, truncated records). One port serves TLCP, TLS 1.2/1.3 and (if allowed) plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import audit_events as events
from gateway.config import ListenerConfig
from gateway.connection import Connection, next_connection_id
from gateway.heap import release_free_heap
from gateway.identity import PeerIdentity
from gateway.listener_filters.base import ListenerFilter
from gateway.listener_filters.proxy_protocol import ProxyProtocol
from gateway.listener_filters.sniff import Sniff
from gateway.logs.rate_limit import handshake_failure
from gateway.stream import TransportStream
from gateway.transports.base import AcceptedSocket, HandshakeRefused, ServerTransport, refuse_raw

if TYPE_CHECKING:
    from gateway.runtime import Generation


#: A burst of at least this many concurrent handshakes is followed by a heap trim once it is over.
_TRIM_AFTER_PENDING = 256


@dataclass(frozen=True, slots=True)
class _Established:
    """What the handshake phase hands the connection phase."""

    conn_id: int
    stream: TransportStream
    identity: PeerIdentity
    transport: str
    started: float


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
    """A bound socket and its accept loop; the generation (config, transports) is swapped on reload."""

    def __init__(self, config: ListenerConfig, generation: Generation, *, reuse_port: bool = False) -> None:
        self.config = config
        self.generation = generation
        self.reuse_port = reuse_port
        self.sock: socket.socket | None = None
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._accept_task: asyncio.Task[None] | None = None
        self._filters: tuple[Generation, list[ListenerFilter]] | None = None
        #: Connections between accept and the end of their handshake (bounded by max_pending_handshakes).
        self.pending_handshakes = 0
        self._peak_pending = 0
        self._handshake_slot = asyncio.Event()

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

    async def close_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        while True:
            while self.pending_handshakes >= self.config.max_pending_handshakes:
                self._handshake_slot.clear()
                await self._handshake_slot.wait()
            try:
                client, peer = await loop.sock_accept(self.sock)
            except OSError:
                await asyncio.sleep(0.05)  # EMFILE and friends: back off rather than spin
                continue
            if not self.generation.audit.accepting_allowed():
                await _hold_until_audit_writes(self.generation, client)
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.pending_handshakes += 1
            self._peak_pending = max(self._peak_pending, self.pending_handshakes)
            task = asyncio.create_task(self._serve(client, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def listener_filters(self, generation: Generation) -> list[ListenerFilter]:
        """The listener filters, in order, built once per generation. Filters that must see the raw
        bytes first (a PROXY-protocol header) go before the sniffer; the sniffer is always last."""
        if self._filters is None or self._filters[0] is not generation:
            cfg = self.config
            filters: list[ListenerFilter] = []
            if cfg.proxy_protocol is not None:
                filters.append(ProxyProtocol(cfg.proxy_protocol))
            filters.append(
                Sniff(generation.listener_transports[cfg.name], max_first_record=cfg.max_first_record_bytes)
            )
            self._filters = (generation, filters)
        return self._filters[1]

    # -- one connection, top-down ---------------------------------------------------------------

    def _handshake_over(self) -> None:
        self.pending_handshakes -= 1
        self._handshake_slot.set()
        if self.pending_handshakes == 0 and self._peak_pending >= _TRIM_AFTER_PENDING:
            # A burst of handshakes is over: once their transports are gone (a moment later), give the
            # freed OpenSSL state back to the OS.
            self._peak_pending = 0
            asyncio.get_running_loop().call_later(1.0, release_free_heap)

    async def _serve(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        try:
            established = await self._establish(sock, peer)
        finally:
            self._handshake_over()
        if established is not None:
            await self._run(established)

    async def _establish(self, sock: socket.socket, peer: tuple[str, int]) -> _Established | None:
        """Listener filters, then the transport's handshake: the bounded first phase of a connection."""
        gen, cfg = self.generation, self.config
        conn_id = next_connection_id()
        local = None
        with contextlib.suppress(OSError):
            local = sock.getsockname()
        gen.stats.connections_total.inc((cfg.name,))
        accepted = AcceptedSocket(sock, peer, local)
        started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + cfg.handshake_timeout
        try:
            transport = await self._run_listener_filters(accepted, gen, deadline)
        except HandshakeRefused as exc:
            # The connection's record opens with the client the listener filters found (PROXY protocol).
            events.conn_open(gen.audit, conn_id, cfg.name, accepted.peer, local)
            self._refused(conn_id, accepted, exc)
            if exc.reply:
                await refuse_raw(sock, exc.reply)
            else:
                _close(sock)
            return None
        events.conn_open(gen.audit, conn_id, cfg.name, accepted.peer, local)
        try:
            stream, identity = await self._accept(transport, accepted, deadline)
        except HandshakeRefused as exc:
            self._refused(conn_id, accepted, exc)
            return None
        self._handshake_ok(conn_id, identity, time.monotonic() - started)
        return _Established(conn_id, stream, identity, transport.name, started)

    async def _run(self, established: _Established) -> None:
        """Filter chain match, then the connection until it closes."""
        gen, cfg = self.generation, self.config
        conn_id, stream, identity = established.conn_id, established.stream, established.identity
        chain = gen.select_filter_chain(cfg, identity.sni, established.transport)
        if chain is None:
            self._no_filter_chain(conn_id, stream, time.monotonic() - established.started)
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
        gen.stats.connections_active.inc((cfg.name,))
        try:
            await conn.run(gen.build_filters(chain, identity.alpn))
        finally:
            self.connections.discard(conn)
            gen.stats.connections_active.dec((cfg.name,))
            events.conn_close(
                gen.audit,
                conn_id,
                bytes_received=conn.bytes_received,
                bytes_sent=conn.bytes_sent,
                duration_ms=(time.monotonic() - established.started) * 1000,
                reason=conn.close_reason,
            )

    async def _run_listener_filters(
        self, accepted: AcceptedSocket, gen: Generation, deadline: float
    ) -> ServerTransport:
        listener_filter: ListenerFilter | None = None
        try:
            async with asyncio.timeout_at(deadline):
                for listener_filter in self.listener_filters(gen):
                    await listener_filter.on_accept(accepted)
        except TimeoutError:
            assert listener_filter is not None
            raise listener_filter.timed_out() from None
        assert accepted.transport is not None
        return accepted.transport

    async def _accept(
        self, transport: ServerTransport, accepted: AcceptedSocket, deadline: float
    ) -> tuple[TransportStream, PeerIdentity]:
        """The transport's handshake; from here on the transport owns (and closes) the socket."""
        try:
            async with asyncio.timeout_at(deadline):
                return await transport.accept(accepted)
        except TimeoutError:
            raise HandshakeRefused("handshake_timeout") from None
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
            raise HandshakeRefused("peer_closed", type(exc).__name__, alert_sent=False) from None
        except OSError as exc:
            _close(accepted.sock)
            raise HandshakeRefused("handshake_error", type(exc).__name__) from None

    # -- outcomes -------------------------------------------------------------------------------

    def _handshake_ok(self, conn_id: int, identity: PeerIdentity, elapsed: float) -> None:
        gen, name = self.generation, self.config.name
        gen.stats.handshake_seconds.observe((identity.protocol,), elapsed)
        gen.stats.handshakes.inc((name, identity.protocol, identity.cipher_suite or "-", "success"))
        events.handshake_ok(gen.audit, conn_id, identity, elapsed * 1000)

    def _refused(self, conn_id: int, accepted: AcceptedSocket, refusal: HandshakeRefused) -> None:
        gen, name = self.generation, self.config.name
        gen.stats.handshake_failures.inc((name, refusal.reason))
        gen.stats.handshakes.inc((name, accepted.detected, "-", "failure"))
        handshake_failure(name, refusal.reason, accepted.peer, f"{accepted.detected}: {refusal}")
        events.handshake_fail(
            gen.audit,
            conn_id,
            refusal.reason,
            alert=refusal.alert,
            alert_sent=refusal.alert_sent,
            detail=f"{accepted.detected}: {refusal}",
        )
        events.conn_close(
            gen.audit, conn_id, bytes_received=0, bytes_sent=0, duration_ms=0.0, reason=refusal.reason
        )

    def _no_filter_chain(self, conn_id: int, stream: TransportStream, elapsed: float) -> None:
        gen = self.generation
        gen.stats.handshake_failures.inc((self.config.name, "no_filter_chain"))
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


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
