"""Raw HTTP/2 peers for tests, on the ``h2`` library (h2c with prior knowledge).

:class:`RawH2Client` opens streams, sends what a test needs frame by frame and keeps every event per
stream, so a test sees GOAWAYs, resets, trailers and DATA exactly as the gateway sent them.
:class:`RawH2Server` is an upstream that reports what it received: each request's head, body and
trailers come back as JSON; ``/hang`` is never answered; every RST_STREAM it gets is kept.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

Headers = tuple[tuple[str, str], ...]


class RawH2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.events: dict[int, list[h2.events.Event]] = defaultdict(list)
        self.goaways: list[h2.events.ConnectionTerminated] = []
        self.remote_settings: dict[int, int] = {}
        self.closed = False
        self._changed = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, port: int) -> RawH2Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.h2.initiate_connection()
        client.flush()
        client._reader_task = asyncio.create_task(client._read())
        await client.wait_for(lambda: bool(client.remote_settings))
        return client

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for event in self.h2.receive_data(data):
                    self._record(event)
                self.flush()
                self._changed.set()
        except (ConnectionError, OSError):
            pass
        self.closed = True
        self._changed.set()

    def _record(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaways.append(event)
            # Keep the connection usable as a client racing the GOAWAY would (h2 would refuse to send).
            self.h2.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings.update({k: v.new_value for k, v in event.changed_settings.items()})
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
            self.events[event.stream_id].append(event)
        else:
            stream_id = getattr(event, "stream_id", None)
            if stream_id:
                self.events[stream_id].append(event)

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                if self.closed and not condition():
                    raise ConnectionError("the connection closed first")
                self._changed.clear()
                await self._changed.wait()

    def request(self, path: str, method: str = "GET", headers: Headers = (), end_stream: bool = True) -> int:
        stream_id: int = self.h2.get_next_available_stream_id()
        base = [(":method", method), (":scheme", "http"), (":authority", "localhost"), (":path", path)]
        self.h2.send_headers(stream_id, base + list(headers), end_stream=end_stream)
        self.flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.h2.send_data(stream_id, data, end_stream=end_stream)
        self.flush()

    async def send_all(self, stream_id: int, data: bytes) -> None:
        """DATA frames as the peer's windows and frame size allow, waiting for WINDOW_UPDATEs."""
        while data:
            size = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if size <= 0:
                await self.wait_for(lambda: self.h2.local_flow_control_window(stream_id) > 0)
                continue
            self.send(stream_id, data[:size])
            data = data[size:]

    def send_trailers(self, stream_id: int, trailers: Headers) -> None:
        self.h2.send_headers(stream_id, list(trailers), end_stream=True)
        self.flush()

    # what arrived on a stream

    def response(self, stream_id: int) -> h2.events.ResponseReceived | None:
        return next((e for e in self.events[stream_id] if isinstance(e, h2.events.ResponseReceived)), None)

    def status(self, stream_id: int) -> int | None:
        response = self.response(stream_id)
        if response is None:
            return None
        return int(self.headers(stream_id)[":status"])

    def headers(self, stream_id: int) -> dict[str, str]:
        """The response head's fields (the client decodes them as UTF-8)."""
        response = self.response(stream_id)
        return {} if response is None else {str(k): str(v) for k, v in response.headers or ()}

    def body(self, stream_id: int) -> bytes:
        return b"".join(e.data for e in self.events[stream_id] if isinstance(e, h2.events.DataReceived))

    def ended(self, stream_id: int) -> bool:
        return any(
            isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) for e in self.events[stream_id]
        )

    def reset_code(self, stream_id: int) -> int | None:
        reset = next((e for e in self.events[stream_id] if isinstance(e, h2.events.StreamReset)), None)
        return None if reset is None else int(reset.error_code or 0)

    async def close(self) -> None:
        self.writer.close()
        if self._reader_task is not None:
            await self._reader_task


class RawH2Server:
    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        #: (stream id, error code) of every RST_STREAM received.
        self.resets: list[tuple[int, int]] = []
        self.requests: list[dict[str, object]] = []

    async def start(self, port: int) -> RawH2Server:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        seen: dict[int, dict[str, Any]] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    self._on_event(conn, event, seen)
                writer.write(conn.data_to_send())
        except (ConnectionError, OSError):
            pass
        writer.close()

    def _on_event(
        self, conn: h2.connection.H2Connection, event: h2.events.Event, seen: dict[int, dict[str, Any]]
    ) -> None:
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None
            seen[event.stream_id] = {"headers": [[str(k), str(v)] for k, v in event.headers or ()], "body": 0}
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            seen[event.stream_id]["body"] += len(event.data or b"")
            conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            assert event.stream_id is not None
            seen[event.stream_id]["trailers"] = [[str(k), str(v)] for k, v in event.headers or ()]
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            self.resets.append((event.stream_id, int(event.error_code or 0)))
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            request = seen.pop(event.stream_id)
            self.requests.append(request)
            if (":path", "/hang") in [tuple(h) for h in request["headers"]]:
                return
            body = json.dumps(request).encode()
            conn.send_headers(event.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
            conn.send_data(event.stream_id, body, end_stream=True)
