"""The codec interface (MOSN-style): a protocol turns bytes into request/response stream events.

A codec is sans-I/O, like h11: ``receive_data(bytes)`` then ``next_event()`` until :data:`NEED_DATA`;
``encode_*`` methods return bytes for the caller to write. The HTTP connection manager and the router
only see :class:`RequestHead` (method, authority, path, headers — the routing attributes, matched by
the same route configuration for every protocol), :class:`Body` and :class:`EndOfStream`.

A new protocol plugs in by implementing :class:`CodecFactory` (one :class:`ServerCodec` per downstream
connection, one :class:`ClientCodec` per upstream connection) and naming it in the listener's
``http_connection_manager.codec`` as ``module:Class``; ``examples/rpc_codec.py`` is a worked example.

Errors carry a direction, as h11's do: :class:`CodecProtocolError` is the peer's fault (the server
answers its ``status``), :class:`LocalProtocolError` is ours (we asked a codec to send something its
protocol cannot carry).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from enum import Enum

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request's routing attributes; header names are lower case."""

    method: str
    authority: str
    path: str
    headers: Headers = ()
    #: Declared body length (``None``: unknown/streamed, ``0``: no body).
    content_length: int | None = 0

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def with_changes(
        self,
        *,
        authority: str | None = None,
        path: str | None = None,
        add: Headers = (),
        remove: tuple[str, ...] = (),
    ) -> RequestHead:
        drop = {n.lower() for n in remove} | {k for k, _ in add}
        headers = tuple((k, v) for k, v in self.headers if k not in drop) + add
        return replace(
            self,
            authority=self.authority if authority is None else authority,
            path=self.path if path is None else path,
            headers=headers,
        )


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: Headers = ()
    reason: str = ""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes


@dataclass(frozen=True, slots=True)
class ResponseTrailers:
    """Trailer fields after a response body (gRPC's ``grpc-status``); an :class:`EndOfStream` follows."""

    headers: Headers


@dataclass(frozen=True, slots=True)
class EndOfStream:
    pass


class Signal(Enum):
    NEED_DATA = "need_data"
    #: The peer's next message waits until the current exchange finishes (HTTP/1.1 without pipelining).
    PAUSED = "paused"


NEED_DATA = Signal.NEED_DATA
PAUSED = Signal.PAUSED

ServerEvent = RequestHead | Body | EndOfStream | Signal
ClientEvent = ResponseHead | Body | ResponseTrailers | EndOfStream | Signal


class CodecProtocolError(Exception):
    """The peer broke the protocol; ``status`` is the response a server should answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class LocalProtocolError(Exception):
    """We asked the codec to send what the protocol cannot carry (a field with CR/LF, a wrong body length)."""


class ServerCodec(ABC):
    """Downstream side: decodes requests, encodes responses."""

    @abstractmethod
    def receive_data(self, data: bytes) -> None:
        """Feed bytes; ``b""`` means the peer closed its side."""

    @abstractmethod
    def next_event(self) -> ServerEvent: ...

    @abstractmethod
    def encode_response_head(self, head: ResponseHead) -> bytes: ...

    @abstractmethod
    def encode_body(self, data: bytes) -> bytes: ...

    @abstractmethod
    def encode_end(self) -> bytes: ...

    def encode_trailers(self, headers: Headers) -> bytes:
        """Response trailers, sent with the end of the response; a protocol without trailers drops them."""
        return b""

    def switch_protocols(self, head: ResponseHead) -> tuple[bytes, bytes]:
        """HTTP/1.1 Upgrade accepted: the ``101`` response's bytes, and the bytes the client sent after its
        request (the first bytes of the new protocol)."""
        raise CodecProtocolError("this protocol cannot switch protocols", 501)

    def encode_held(self) -> bytes:
        """What an ``encode_*`` call held back to see what follows (HTTP/2 holds a response head to send
        it with END_STREAM when the end comes next); called once the upstream has nothing more now."""
        return b""

    @abstractmethod
    def local_reply(
        self, status: int, body: bytes, content_type: str = "text/plain", headers: Headers = ()
    ) -> bytes:
        """A complete response generated by the gateway itself (errors, direct responses, redirects)."""

    def encode_continue(self) -> bytes:
        """Bytes telling a waiting client to send its body (HTTP ``100 Continue``); most protocols: none."""
        return b""

    @abstractmethod
    def keep_alive(self) -> bool:
        """Whether another request may follow on this connection once the current exchange ends."""

    @abstractmethod
    def start_next_cycle(self) -> None: ...

    def request_close(self) -> None:
        """Tell the peer, in the next response, that the connection closes after it (draining)."""
        return None

    def must_close(self) -> bool:
        """The exchange is over and the connection cannot carry another one (``Connection: close``)."""
        return False


class ClientCodec(ABC):
    """Upstream side: encodes requests, decodes responses."""

    @abstractmethod
    def encode_request_head(self, head: RequestHead) -> bytes: ...

    @abstractmethod
    def encode_body(self, data: bytes) -> bytes: ...

    @abstractmethod
    def encode_end(self) -> bytes: ...

    def set_trailers(self, headers: Headers) -> bool:
        """Request trailers, to be sent by :meth:`encode_end`; ``False`` when this request cannot carry
        any (they are then dropped): the default, for protocols without trailers."""
        return False

    @abstractmethod
    def receive_data(self, data: bytes) -> None: ...

    @abstractmethod
    def next_event(self) -> ClientEvent: ...

    @abstractmethod
    def reusable(self) -> bool:
        """Whether the upstream connection can carry another request (pooling)."""

    @abstractmethod
    def start_next_cycle(self) -> None: ...


class CodecFactory(ABC):
    #: Protocol name used in metrics, audit records and upstream pool keys.
    protocol: str = "unknown"

    @abstractmethod
    def server_codec(self, max_header_bytes: int, max_body_bytes: int | None = None) -> ServerCodec:
        """A codec for one downstream connection.

        ``max_body_bytes`` (``None``: unbounded) lets a codec refuse a body with 413 as soon as its
        declared size exceeds the limit (an HTTP/1.1 chunk size), before any of it is read.
        """

    @abstractmethod
    def client_codec(self) -> ClientCodec: ...
