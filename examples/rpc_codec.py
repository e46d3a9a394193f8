"""A worked example: plugging a private length-prefixed RPC protocol into smgate's router.

Wire format (both directions), one frame per message::

    uint32 frame_length | uint16 header_length | header (UTF-8 JSON) | body

Request header: ``{"service": "billing", "method": "Charge", "headers": {"k": "v"}}``;
response header: ``{"status": 200, "headers": {...}}``.

The codec maps a request to the router's routing attributes the same way every codec does:
``authority`` = service (so virtual-host ``domains`` select services), ``path`` = ``/service/method``
(so prefix/exact/regex routes select methods), ``method`` = the RPC method, ``headers`` = the header
map. Everything else — routes, clusters, load balancing, retries, access control on client
certificates, TLCP/TLS termination, audit — is the gateway's and works unchanged.

Enable it on a listener::

    filters:
      - name: http_connection_manager
        route_config: rpc
        codec: examples.rpc_codec:RpcCodecFactory

Frames are small by design, so this codec buffers one frame at a time (bounded by ``MAX_FRAME``);
an HTTP codec streams instead.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from gateway.codec.base import (
    NEED_DATA,
    PAUSED,
    Body,
    ClientCodec,
    ClientEvent,
    CodecFactory,
    CodecProtocolError,
    EndOfStream,
    Headers,
    RequestHead,
    ResponseHead,
    ServerCodec,
    ServerEvent,
)

MAX_FRAME = 4 * 1024 * 1024
_LENGTHS = struct.Struct("!IH")


def encode_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return struct.pack("!I", 2 + len(raw) + len(body)) + struct.pack("!H", len(raw)) + raw + body


class FrameReader:
    """Accumulates bytes and pops complete frames as (header, body)."""

    def __init__(self, max_header: int = 65536, max_body: int | None = None) -> None:
        self._buffer = bytearray()
        self._max_header = max_header
        self._max_body = max_body
        self.closed = False

    def feed(self, data: bytes) -> None:
        if not data:
            self.closed = True
        self._buffer += data

    def pop(self) -> tuple[dict[str, Any], bytes] | None:
        if len(self._buffer) < 6:
            if self.closed and self._buffer:
                raise CodecProtocolError("truncated frame", 400)
            return None
        frame_length, header_length = _LENGTHS.unpack_from(self._buffer)
        if frame_length > MAX_FRAME or header_length + 2 > frame_length:
            raise CodecProtocolError("bad frame lengths", 400)
        if header_length > self._max_header:
            raise CodecProtocolError("frame header too large", 431)
        if self._max_body is not None and frame_length - 2 - header_length > self._max_body:
            raise CodecProtocolError("frame body too large", 413)
        if len(self._buffer) < 4 + frame_length:
            if self.closed:
                raise CodecProtocolError("truncated frame", 400)
            return None
        header_raw = bytes(self._buffer[6 : 6 + header_length])
        body = bytes(self._buffer[6 + header_length : 4 + frame_length])
        del self._buffer[: 4 + frame_length]
        try:
            header = json.loads(header_raw)
        except ValueError:
            raise CodecProtocolError("frame header is not JSON", 400) from None
        if not isinstance(header, dict):
            raise CodecProtocolError("frame header is not an object", 400)
        return header, body


def _headers(header: dict[str, Any]) -> Headers:
    raw = header.get("headers", {})
    if not isinstance(raw, dict):
        raise CodecProtocolError("headers must be an object", 400)
    return tuple((str(k).lower(), str(v)) for k, v in raw.items())


class RpcServerCodec(ServerCodec):
    def __init__(self, max_header_bytes: int, max_body_bytes: int | None = None) -> None:
        self._frames = FrameReader(max_header_bytes, max_body_bytes)
        self._pending: list[ServerEvent] = []
        self._in_exchange = False
        self._response: dict[str, Any] = {}
        self._response_body = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._frames.feed(data)

    def next_event(self) -> ServerEvent:
        if self._pending:
            return self._pending.pop(0)
        if self._in_exchange:
            return PAUSED
        frame = self._frames.pop()
        if frame is None:
            return EndOfStream() if self._frames.closed else NEED_DATA
        header, body = frame
        service, method = header.get("service"), header.get("method")
        if not isinstance(service, str) or not isinstance(method, str) or not service or not method:
            raise CodecProtocolError("service and method are required", 400)
        self._in_exchange = True
        self._pending = [Body(body), EndOfStream()] if body else [EndOfStream()]
        return RequestHead(
            method=method,
            authority=service,
            path=f"/{service}/{method}",
            headers=_headers(header),
            content_length=len(body),
        )

    def encode_response_head(self, head: ResponseHead) -> bytes:
        self._response = {"status": head.status, "headers": dict(head.headers)}
        return b""

    def encode_body(self, data: bytes) -> bytes:
        self._response_body += data
        if len(self._response_body) > MAX_FRAME:
            raise CodecProtocolError("response frame too large", 502)
        return b""

    def encode_end(self) -> bytes:
        frame = encode_frame(self._response, bytes(self._response_body))
        self._response_body.clear()
        return frame

    def local_reply(
        self, status: int, body: bytes, content_type: str = "text/plain", headers: Headers = ()
    ) -> bytes:
        return encode_frame(
            {"status": status, "headers": {"content-type": content_type, **dict(headers)}}, body
        )

    def keep_alive(self) -> bool:
        return True

    def start_next_cycle(self) -> None:
        self._in_exchange = False
        self._pending = []


class RpcClientCodec(ClientCodec):
    def __init__(self) -> None:
        self._frames = FrameReader()
        self._request: dict[str, Any] = {}
        self._body = bytearray()
        self._pending: list[ClientEvent] = []
        self._done = False

    def encode_request_head(self, head: RequestHead) -> bytes:
        headers = {k: v for k, v in head.headers if not k.startswith("x-forwarded-") and k != "x-request-id"}
        self._request = {"service": head.authority, "method": head.method, "headers": headers}
        return b""

    def encode_body(self, data: bytes) -> bytes:
        self._body += data
        return b""

    def encode_end(self) -> bytes:
        frame = encode_frame(self._request, bytes(self._body))
        self._body.clear()
        return frame

    def receive_data(self, data: bytes) -> None:
        self._frames.feed(data)

    def next_event(self) -> ClientEvent:
        if self._pending:
            event = self._pending.pop(0)
            self._done = isinstance(event, EndOfStream)
            return event
        frame = self._frames.pop()
        if frame is None:
            if self._frames.closed:
                raise CodecProtocolError("upstream closed the connection", 502)
            return NEED_DATA
        header, body = frame
        status = header.get("status")
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise CodecProtocolError("bad response status", 502)
        self._pending = [Body(body), EndOfStream()] if body else [EndOfStream()]
        return ResponseHead(status=status, headers=_headers(header))

    def reusable(self) -> bool:
        return self._done

    def start_next_cycle(self) -> None:
        self._done = False


class RpcCodecFactory(CodecFactory):
    protocol = "rpc"

    def server_codec(self, max_header_bytes: int, max_body_bytes: int | None = None) -> ServerCodec:
        return RpcServerCodec(max_header_bytes, max_body_bytes)

    def client_codec(self) -> ClientCodec:
        return RpcClientCodec()


async def start_rpc_echo_server(name: str, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """A toy RPC backend: answers every call with its service, method, headers and body length."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader()
        try:
            while True:
                frame = frames.pop()
                if frame is None:
                    data = await reader.read(65536)
                    if not data:
                        break
                    frames.feed(data)
                    continue
                header, body = frame
                reply = {
                    "backend": name,
                    "service": header["service"],
                    "method": header["method"],
                    "headers": header.get("headers", {}),
                    "body_bytes": len(body),
                }
                writer.write(
                    encode_frame({"status": 200, "headers": {"backend": name}}, json.dumps(reply).encode())
                )
                await writer.drain()
        except (CodecProtocolError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


async def rpc_call(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    service: str,
    method: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], bytes]:
    """Send one call over an open connection and wait for its response frame."""
    writer.write(encode_frame({"service": service, "method": method, "headers": headers or {}}, body))
    await writer.drain()
    frames = FrameReader()
    while (frame := frames.pop()) is None:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("closed before the response")
        frames.feed(data)
    header, payload = frame
    return int(header["status"]), dict(header.get("headers", {})), payload
