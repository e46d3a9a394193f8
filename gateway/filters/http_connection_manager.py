"""HTTP connection manager (terminal): decodes requests with the configured codec and runs each
through the router (:mod:`gateway.proxy`), one exchange at a time, keep-alive between them.

Bytes arrive through ``on_data``; request heads start a request task, body chunks go through a bounded
channel (the read loop waits while the upstream is slow: backpressure). Malformed requests get the
codec's status (400, 431, ...) and the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from gateway import audit_events as events
from gateway.codec.base import (
    NEED_DATA,
    PAUSED,
    Body,
    CodecFactory,
    CodecProtocolError,
    EndOfStream,
    RequestHead,
)
from gateway.config import HttpConnectionManagerFilter
from gateway.filters.base import FilterStatus, NetworkFilter
from gateway.proxy import BodyChannel, RequestContext, handle_request
from gateway.router import RouteTable

if TYPE_CHECKING:
    from gateway.connection import Connection


class HttpConnectionManager(NetworkFilter):
    def __init__(
        self, config: HttpConnectionManagerFilter, codec_factory: CodecFactory, routes: RouteTable
    ) -> None:
        self.config = config
        self.codec_factory = codec_factory
        self.codec = codec_factory.server_codec(
            config.max_request_headers_bytes, config.max_request_body_bytes
        )
        self.routes = routes
        self._task: asyncio.Task[None] | None = None
        self._body: BodyChannel | None = None
        self._head_started: float | None = None
        self._requests = 0

    async def on_data(self, conn: Connection, data: bytes, end_stream: bool) -> FilterStatus:
        try:
            self.codec.receive_data(data)
            while True:
                event = self.codec.next_event()
                if event is NEED_DATA:
                    if end_stream:
                        self._abort_body()
                    elif self._task is None and self._head_started is None:
                        self._head_started = time.monotonic()
                    return FilterStatus.STOP_ITERATION
                if event is PAUSED:
                    await self._finish_exchange(conn)
                    if conn.closing:
                        return FilterStatus.STOP_ITERATION
                    continue
                if isinstance(event, RequestHead):
                    self._head_started = None
                    self._requests += 1
                    self._body = BodyChannel(self.config.max_request_body_bytes)
                    ctx = RequestContext(
                        conn,
                        self.codec,
                        self.codec_factory,
                        self.config,
                        self.routes,
                        event,
                        self._body,
                        index=self._requests,
                    )
                    conn.idle = False
                    self._task = asyncio.create_task(handle_request(ctx))
                    self._task.add_done_callback(lambda _task: self._exchange_done(conn))
                elif isinstance(event, Body):
                    if self._body is not None:
                        await self._body.put(event.data)
                elif isinstance(event, EndOfStream):
                    if self._body is None or self._body.ended or end_stream:
                        self._abort_body()
                        conn.closing = True
                        return FilterStatus.STOP_ITERATION
                    await self._body.end()
                    if self._task is not None and self._task.done():
                        self._exchange_done(conn)
        except CodecProtocolError as exc:
            await self._protocol_error(conn, exc)
        return FilterStatus.STOP_ITERATION

    def _exchange_done(self, conn: Connection) -> None:
        """The response is written: close now if the connection cannot carry another exchange."""
        conn.mark_idle()
        if self.codec.must_close() or (
            conn.draining.is_set() and self._body is not None and self._body.ended
        ):
            conn.close()

    async def _protocol_error(self, conn: Connection, exc: CodecProtocolError) -> None:
        events.http_request(
            conn.generation.audit,
            conn.id,
            f"{conn.id}-{self._requests + 1}",
            method="-",
            host=None,
            path="-",
            status=exc.status,
            bytes_received=0,
            bytes_sent=0,
            duration_ms=0.0,
            error=str(exc)[:200],
        )
        if self._task is not None:
            if self._body is not None and not self._body.ended:
                self._body.refuse(exc)  # the request task answers exc.status
            with contextlib.suppress(Exception):
                await self._task
        else:
            conn.generation.stats.requests.labels("-", str(exc.status)).inc()
            with contextlib.suppress(OSError, ConnectionError):
                await conn.write(self.codec.local_reply(exc.status, f"{exc}\n".encode()))
        conn.closing = True

    async def _finish_exchange(self, conn: Connection) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)
            self._task = None
            self._body = None
        conn.idle = True
        if conn.closing or conn.draining.is_set() or not self.codec.keep_alive():
            conn.closing = True
            return
        self.codec.start_next_cycle()

    def _abort_body(self) -> None:
        if self._body is not None and not self._body.ended:
            self._body.abort()

    def read_timeout(self) -> float | None:
        if self._task is not None:
            return None
        if self._head_started is not None:
            return self.config.request_headers_timeout
        return self.config.idle_timeout

    async def on_idle(self, conn: Connection) -> bool:
        if self._head_started is not None:
            with contextlib.suppress(OSError, ConnectionError):
                await conn.write(self.codec.local_reply(408, b"request timeout\n"))
        return False

    async def on_close(self, conn: Connection) -> None:
        if self._task is not None:
            self._abort_body()
            with contextlib.suppress(Exception):
                await self._task
