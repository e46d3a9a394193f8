"""`ConnectionShell`: what both sans-I/O engine connections do around their handshakes.

`tls.tlcp.TLCPConnection` and `tls.tls13.TLS13Connection` take received bytes record by record, catch
a protocol violation once and answer it with a fatal alert (`AlertSent`; the connection is then closed
for good and further input ignored), close with close_notify one direction at a time, and queue their
output for the caller.  That shell is here; each engine subclasses it with its record layer, handshake,
alert and event classes, and handles its records (`_handle_record`) and the alerts it receives.

Half-close (RFC 5246 7.2.1, RFC 8446 6.1): the peer's close_notify ends our read side.  Without
``configuration.half_close`` our close_notify reply is queued at once and the connection is `closed`;
with it we may still send application data, and `close()` queues our close_notify.  Our own `close()`
ends our write side only; we keep reading until the peer's close_notify.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar, Generic, Protocol, TypeVar

# The same codes in TLCP (GB/T 38636-2020 6.3) and TLS 1.3 (RFC 8446 B.1, B.2).
_ALERT = 21
_APPLICATION_DATA = 23
_WARNING = 1
_FATAL = 2
_CLOSE_NOTIFY = 0


class ShellConfiguration(Protocol):
    @property
    def is_client(self) -> bool: ...

    @property
    def half_close(self) -> bool: ...


class RecordSource(Protocol):
    def feed(self, data: bytes) -> None: ...

    def next_record(self) -> tuple[int, bytes] | None: ...


class RecordSink(Protocol):
    def write(self, content_type: int, data: bytes) -> None: ...

    def data_to_send(self) -> bytes: ...


EventT = TypeVar("EventT")


class ConnectionShell(Generic[EventT]):
    """One connection of an engine (whose events are ``EventT``), client or server according to
    `configuration.is_client`."""

    # -- engine specifics, set by each engine's subclass -------------------------------------------

    #: the engine's protocol-violation exception (``TLCPAlert``, ``TLS13Alert``), whose `description`
    #: (a member of `alert_descriptions`) is the alert we send
    alert_exception: ClassVar[Any]
    #: the engine's alert description enum (its ``decode_error`` and ``internal_error`` are used here)
    alert_descriptions: ClassVar[type[IntEnum]]
    #: the engine's caller-misuse exception
    local_protocol_error: ClassVar[type[Exception]]
    #: the malformed-message exception of the engine's buffer (answered with decode_error)
    buffer_read_error: ClassVar[type[Exception]]
    #: the engine's event classes
    alert_sent_event: ClassVar[type[Any]]
    connection_closed_event: ClassVar[type[Any]]

    _handshake: object | None

    def __init__(
        self, configuration: ShellConfiguration, reader: RecordSource, writer: RecordSink, handshake: object
    ) -> None:
        self.configuration = configuration
        self._reader = reader
        self._writer = writer
        self._handshake = handshake
        self._handshake_buffer = bytearray()
        self._close_sent = False
        self._started = not configuration.is_client
        #: True once the handshake finished; application data may flow.
        self.handshake_complete = False
        #: True once the connection is over: close_notify sent and received, or a fatal alert either way.
        self.closed = False
        #: True once the peer's close_notify arrived: it sends nothing more, input is ignored.
        self.peer_closed = False

    def __repr__(self) -> str:
        role = "client" if self.configuration.is_client else "server"
        return (
            f"{type(self).__name__}({role}, complete={self.handshake_complete}, "
            f"peer_closed={self.peer_closed}, closed={self.closed})"
        )

    # API

    def receive_data(self, data: bytes) -> list[EventT]:
        """Feed bytes from the peer; returns the events they complete."""
        events: list[EventT] = []
        if self.closed or self.peer_closed:
            return events
        if not self._started:
            raise self.local_protocol_error("start_handshake() first")
        self._reader.feed(data)
        try:
            while not (self.closed or self.peer_closed):
                record = self._reader.next_record()
                if record is None:
                    break
                self._handle_record(record[0], record[1], events)
        except self.alert_exception as alert:
            self._fail(alert.description, str(alert), events)
        except self.buffer_read_error:
            self._fail(self.alert_descriptions["decode_error"], "malformed message", events)
        except Exception as exc:  # hostile input must never raise out of the core
            self._fail(
                self.alert_descriptions["internal_error"], f"internal error ({type(exc).__name__})", events
            )
        return events

    def send_application_data(self, data: bytes) -> None:
        """Queue application data; allowed until `close()` (or, without half_close, the peer's close_notify)."""
        if not self.handshake_complete:
            raise self.local_protocol_error("handshake not complete")
        if self.closed or self._close_sent:
            raise self.local_protocol_error("connection is closed")
        if data:
            self._writer.write(_APPLICATION_DATA, data)

    def close(self) -> None:
        """Queue close_notify (once); no more data may be sent afterwards.

        Before the peer's close_notify this closes our write side only: keep feeding
        `receive_data` until `ConnectionClosed`.  After it (half_close) the connection is
        `closed`.  Nothing is sent after a fatal alert.
        """
        if not self._close_sent and not self.closed:
            self._send_alert(_WARNING, _CLOSE_NOTIFY)
            if self.peer_closed:
                self.closed = True

    @property
    def close_notify_sent(self) -> bool:
        """True once our close_notify is queued: nothing more may be sent."""
        return self._close_sent

    def data_to_send(self) -> bytes:
        return self._writer.data_to_send()

    # records and alerts

    def _handle_record(self, content_type: int, payload: bytes, events: list[EventT]) -> None:
        raise NotImplementedError

    def _peer_sent_close_notify(self, events: list[EventT]) -> None:
        """The peer's close_notify: report it and end our read side (and our write side without half-close)."""
        events.append(self.connection_closed_event())
        self.peer_closed = True
        if not self.handshake_complete:
            self._handshake = None
        if not self._close_sent and self.configuration.half_close and self.handshake_complete:
            return  # our write side stays open until close()
        if not self._close_sent:
            self._send_alert(_WARNING, _CLOSE_NOTIFY)
        self.closed = True

    # output

    def _send_alert(self, level: int, description: int) -> None:
        self._writer.write(_ALERT, bytes((level, description)))
        if description == _CLOSE_NOTIFY:
            self._close_sent = True

    def _fail(self, description: IntEnum, reason: str, events: list[EventT]) -> None:
        self._send_alert(_FATAL, description)
        self.closed = True
        self._handshake = None
        events.append(self.alert_sent_event(int(description), description.name, reason))
