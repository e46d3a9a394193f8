"""The stream both of the project's own engines run under: TLCP (``tls.tlcp``) and TLS 1.3-SM (``tls.tls13``).

The two engines have one sans-I/O face (``start_handshake``, ``receive_data`` returning events,
``data_to_send``, ``send_application_data``, ``close``) and events of the same names, but each its own
classes. :class:`EngineStream` drives either: records in from the transport, plaintext out to the
receiver, the engine's output flushed after every call, a fatal alert (sent or received) a refusal.
A transport module names its engine package (:meth:`EngineEvents.of`, shared with ``tls.engine_aio``) and
says which received alerts are fatal; the rest reads the same for both.

Half-close as TCP has it (the engines' ``half_close``): ``write_eof`` sends our close_notify and keeps
reading; the peer's close_notify is EOF for the reader while we may still write.
"""

from __future__ import annotations

import asyncio
import socket
from abc import abstractmethod
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from gateway.transports.base import Alert, HandshakeRefused, SessionStream
from tls.engine_aio import EngineEvents, SansIoEngine

#: Plaintext handed to the engine per call, so one huge write does not double its memory at once.
WRITE_SLICE = 256 * 1024


class NegotiatedHandshake(Protocol):
    """The part of an engine's ``HandshakeComplete`` the stream reads."""

    @property
    def alpn_protocol(self) -> str | None: ...


EngineT = TypeVar("EngineT", bound=SansIoEngine)
HandshakeT = TypeVar("HandshakeT", bound=NegotiatedHandshake)


class EngineStream(SessionStream, Generic[EngineT, HandshakeT]):
    """A :class:`SessionStream` over one sans-I/O engine connection (``engine``), whose handshake ends
    with a ``HandshakeT`` (``handshake_event``)."""

    #: How log lines and refusals name the engine ("TLCP", "TLS 1.3-SM").
    engine_name: ClassVar[str]
    events: ClassVar[EngineEvents]

    def __init__(self, engine: EngineT, *, is_client: bool) -> None:
        super().__init__()
        self.engine = engine
        self.is_client = is_client
        self.handshake_event: HandshakeT | None = None

    # -- engine specifics ------------------------------------------------------------------------

    @abstractmethod
    def _is_fatal(self, alert: Any) -> bool:
        """Whether a received alert ends the connection (close_notify comes as ``connection_closed``)."""

    def _on_handshake(self, event: HandshakeT) -> None:
        """The handshake completed with ``event`` (before the waiter hears of it)."""

    def _on_other_event(self, event: Any) -> None:
        """An event of the engine's own (a TLS 1.3 session ticket); ignored unless overridden."""

    async def serve_handshake(self, sock: socket.socket) -> HandshakeT:
        """Take over an accepted socket and run the server side of the handshake to its end."""
        await asyncio.get_running_loop().connect_accepted_socket(lambda: self, sock)
        await self.handshake()
        assert self.handshake_event is not None
        return self.handshake_event

    # -- records in, events out ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.is_client:
            self.engine.start_handshake()
            self._flush()

    def _receive_records(self, data: bytes) -> None:
        kinds = self.events
        try:
            events = self.engine.receive_data(data)
        except kinds.local_protocol_error as exc:
            self._refuse(
                HandshakeRefused("handshake_error", f"{self.engine_name} engine refused input: {exc}")
            )
            return
        self._flush()
        for event in events:
            if isinstance(event, kinds.application_data):
                self._plaintext(event.data)
            elif isinstance(event, kinds.handshake_complete):
                self.handshake_event = event
                self._on_handshake(event)
                self._handshake_complete()
            elif isinstance(event, kinds.connection_closed):
                self._peer_closed()
            elif isinstance(event, kinds.alert_sent):
                self._refuse(
                    HandshakeRefused(
                        "handshake_error",
                        f"sent fatal alert {event.name}: {event.reason}",
                        alert=Alert(event.name, event.description),
                    )
                )
            elif isinstance(event, kinds.alert_received):
                if self._is_fatal(event):
                    self._refuse(
                        HandshakeRefused(
                            "handshake_error",
                            f"received fatal alert {event.name}",
                            alert=Alert(event.name, event.description),
                            alert_sent=False,
                        )
                    )
            else:
                self._on_other_event(event)

    @property
    def alpn_protocol(self) -> str | None:
        event = self.handshake_event
        return event.alpn_protocol if event is not None else None

    # -- records out -----------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.engine.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _write_plaintext(self, data: bytes) -> None:
        if self.engine.close_notify_sent:
            raise ConnectionResetError("cannot write after close_notify")
        view = memoryview(data)
        for offset in range(0, len(view), WRITE_SLICE):
            self.engine.send_application_data(bytes(view[offset : offset + WRITE_SLICE]))
        self._flush()

    def _send_close_notify(self) -> None:
        self.engine.close()
        self._flush()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self.handshaken and not self._lingering and not self.is_closing():
            self._send_close_notify()
