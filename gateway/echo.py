"""The built-in upstream for ``smgate demo``, tests and the bench: an HTTP/1.1 echo service.

``GET /anything`` answers JSON with the method, path, headers and body size it received;
``/status/NNN`` answers that status; ``/bytes/N`` streams N bytes (chunked); ``/delay/MS`` waits first;
``/healthz`` answers 200 (or 503 while ``unhealthy`` is set). A raw TCP echo is :func:`start_tcp_echo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from ssl import SSLContext

import h11


@dataclass
class EchoService:
    name: str = "echo"
    unhealthy: bool = False
    requests: int = 0
    connections: int = 0
    server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl: SSLContext | None = None
    ) -> EchoService:
        self.server = await asyncio.start_server(self._handle, host, port, ssl=ssl)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, size = await self._read_request(conn, reader)
                if request is None:
                    break
                self.requests += 1
                await self._respond(conn, writer, request, size)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, int]:
        request: h11.Request | None = None
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return request, size
            else:
                return None, 0

    async def _respond(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, size: int
    ) -> None:
        path = request.target.decode("latin-1")
        parts = path.split("?", 1)[0].strip("/").split("/")
        status = 200
        if parts[0] == "delay" and len(parts) > 1 and parts[1].isdigit():
            await asyncio.sleep(int(parts[1]) / 1000)
        if parts[0] == "healthz":
            status = 503 if self.unhealthy else 200
        if parts[0] == "status" and len(parts) > 1 and parts[1].isdigit():
            status = int(parts[1])
        if parts[0] == "bytes" and len(parts) > 1 and parts[1].isdigit():
            total = int(parts[1])
            writer.write(
                conn.send(
                    h11.Response(
                        status_code=200,
                        headers=[("content-type", "application/octet-stream"), ("x-upstream", self.name)],
                    )
                )
                or b""
            )
            sent = 0
            while sent < total:
                chunk = min(65536, total - sent)
                writer.write(conn.send(h11.Data(data=b"x" * chunk)) or b"")
                sent += chunk
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            return
        body = (
            json.dumps(
                {
                    "upstream": self.name,
                    "method": request.method.decode(),
                    "path": path,
                    "headers": {k.decode(): v.decode("latin-1") for k, v in request.headers.raw_items()},
                    "body_bytes": size,
                },
                sort_keys=True,
            ).encode()
            + b"\n"
        )
        writer.write(
            conn.send(
                h11.Response(
                    status_code=status,
                    headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                        ("x-upstream", self.name),
                    ],
                )
            )
            or b""
        )
        if request.method != b"HEAD":
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()


async def start_tcp_echo(host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Echo bytes back; on EOF from the client, half-close after echoing everything."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
