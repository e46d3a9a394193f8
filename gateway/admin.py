"""The admin HTTP endpoint, loopback only: /ready, /stats, /metrics, /config, /certs, /clusters, /reload.

A minimal h11 server: one request per connection, small bodies. It reads the live gateway through the
:class:`AdminBackend` protocol so it never reaches into listener internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Protocol

import h11


class AdminBackend(Protocol):
    def ready(self) -> bool: ...
    def stats_json(self) -> dict[str, Any]: ...
    def metrics_text(self) -> bytes: ...
    def config_json(self) -> dict[str, Any]: ...
    def certs_json(self) -> dict[str, Any]: ...
    def clusters_json(self) -> list[dict[str, object]]: ...
    async def admin_reload(self) -> list[str]: ...


class AdminServer:
    def __init__(self, backend: AdminBackend, address: str, port: int) -> None:
        self.backend = backend
        self.address = address
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self, sock: Any = None) -> None:
        if sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=sock)
        else:
            self._server = await asyncio.start_server(self._handle, self.address, self.port)
        name = self._server.sockets[0].getsockname()
        self.port = name[1] if isinstance(name, tuple) else 0  # 0: a worker's control socket (AF_UNIX)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
        try:
            async with asyncio.timeout(10):
                request: h11.Request | None = None
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                        continue
                    if isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
                if request is None:
                    return
                status, content_type, body = await self._route(request)
        except (h11.RemoteProtocolError, TimeoutError, ConnectionError):
            status, content_type, body = 400, "text/plain", b"bad request\n"
        headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        with contextlib.suppress(h11.LocalProtocolError, ConnectionError, OSError):
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
            writer.write(conn.send(h11.Data(data=body)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _route(self, request: h11.Request) -> tuple[int, str, bytes]:
        path = request.target.decode("latin-1").split("?", 1)[0]
        method = request.method.decode("ascii")
        b = self.backend

        def js(value: object, status: int = 200) -> tuple[int, str, bytes]:
            return (
                status,
                "application/json",
                json.dumps(value, indent=2, sort_keys=True, default=str).encode(),
            )

        if path == "/reload":
            if method != "POST":
                return 405, "text/plain", b"use POST\n"
            errors = await b.admin_reload()
            return js({"reloaded": not errors, "errors": errors}, 200 if not errors else 400)
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/ready":
            return (200, "text/plain", b"ready\n") if b.ready() else (503, "text/plain", b"not ready\n")
        if path == "/stats":
            return js(b.stats_json())
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", b.metrics_text()
        if path == "/config":
            return js(b.config_json())
        if path == "/certs":
            return js(b.certs_json())
        if path == "/clusters":
            return js(b.clusters_json())
        return (
            404,
            "text/plain",
            b"unknown admin path; try /ready /stats /metrics /config /certs /clusters /reload\n",
        )
