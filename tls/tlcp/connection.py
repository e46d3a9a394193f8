"""`TLCPConnection`: the sans-I/O TLCP endpoint (h11/aioquic style).

The caller owns the transport: it feeds received bytes to `receive_data()`,
which returns events, and sends whatever `data_to_send()` returns.  Nothing
here reads a socket, a clock or `os.urandom`; randomness and time come from
the `TLCPConfiguration`.

Errors: a protocol violation raises a `TLCPAlert` somewhere below; it is
caught once here, the fatal alert record is queued, an `AlertSent` event is
returned and the connection is closed for good (further input is ignored).
Any other exception escaping the handshake code (a bug, or a provider
failure) is treated the same way with `internal_error`, so hostile input can
never raise out of `receive_data`.  Misuse by the caller raises
`LocalProtocolError`.

Record-level rules enforced here (GB/T 38636-2020 6.3, RFC 5246 6.2.1):
zero-length handshake/alert/ChangeCipherSpec records are rejected,
zero-length application_data records are accepted and dropped (Tongsuo sends
one before every write), ChangeCipherSpec may not split a handshake message,
renegotiation is refused with `no_renegotiation`.

Closing (RFC 5246 7.2.1, GB/T 38636-2020 6.3.4): the peer's close_notify is
reported as `AlertReceived` + `ConnectionClosed` and ends our read side; any
input after it is ignored.  What happens to our write side depends on
`configuration.half_close`: without it our close_notify reply is queued at
once and the connection is `closed`; with it we may still send application
data, and `close()` queues our close_notify (then the connection is `closed`).
Our own `close()` ends our write side only; we keep reading until the peer's
close_notify.
"""

from __future__ import annotations

from .alerts import (
    AlertDescription,
    AlertLevel,
    DecodeError,
    IllegalParameter,
    LocalProtocolError,
    NoRenegotiation,
    TLCPAlert,
    UnexpectedMessage,
    alert_name,
)
from .buffer import BufferReadError
from .client import ClientHandshake
from .config import TLCPConfiguration, TLCPSession
from .dialect import ClientProgress
from .events import AlertReceived, AlertSent, ApplicationData, ConnectionClosed, Event, HandshakeComplete
from .handshake import Handshake
from .messages import HANDSHAKE_HEADER_LENGTH, MAX_HANDSHAKE_MESSAGE_LENGTH, HandshakeType
from .record import ContentType, RecordReader, RecordWriter
from .server import ServerHandshake


class TLCPConnection:
    """One TLCP connection, client or server according to `configuration.is_client`."""

    def __init__(self, configuration: TLCPConfiguration) -> None:
        self.configuration = configuration
        self._reader = RecordReader()
        self._writer = RecordWriter(configuration.max_fragment_size)
        handshake_class = ClientHandshake if configuration.is_client else ServerHandshake
        self._handshake: Handshake | None = handshake_class(configuration, self._reader, self._writer)
        self._handshake_buffer = bytearray()
        self._close_sent = False
        self._started = not configuration.is_client
        #: True once the handshake finished; application data may flow.
        self.handshake_complete = False
        #: True once the connection is over: close_notify sent and received, or a fatal alert either way.
        self.closed = False
        #: True once the peer's close_notify arrived: it sends nothing more, input is ignored.
        self.peer_closed = False
        #: The session established (client: keep it to offer for resumption).
        self.session: TLCPSession | None = None
        #: The HandshakeComplete event, kept for adapters that need the peer identity later.
        self.handshake_event: HandshakeComplete | None = None
        #: Client: what the handshake sent and in which dialect; outlives a failed handshake to explain it.
        self.client_progress: ClientProgress | None = (
            self._handshake.progress if isinstance(self._handshake, ClientHandshake) else None
        )

    def __repr__(self) -> str:
        role = "client" if self.configuration.is_client else "server"
        return (
            f"TLCPConnection({role}, complete={self.handshake_complete}, "
            f"peer_closed={self.peer_closed}, closed={self.closed})"
        )

    # API

    def start_handshake(self) -> None:
        """Client: queue the ClientHello."""
        if not self.configuration.is_client:
            raise LocalProtocolError("only a client starts the handshake")
        if self._started:
            raise LocalProtocolError("handshake already started")
        assert isinstance(self._handshake, ClientHandshake)
        self._started = True
        self._handshake.start()

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; returns the events they complete."""
        events: list[Event] = []
        if self.closed or self.peer_closed:
            return events
        if not self._started:
            raise LocalProtocolError("start_handshake() first")
        self._reader.feed(data)
        try:
            while not (self.closed or self.peer_closed):
                record = self._reader.next_record()
                if record is None:
                    break
                self._handle_record(record[0], record[1], events)
        except TLCPAlert as alert:
            self._fail(alert.description, str(alert), events)
        except BufferReadError:
            self._fail(AlertDescription.decode_error, "malformed message", events)
        except Exception as exc:  # hostile input must never raise out of the core
            self._fail(AlertDescription.internal_error, f"internal error ({type(exc).__name__})", events)
        return events

    def send_application_data(self, data: bytes) -> None:
        """Queue application data; allowed until `close()` (or, without half_close, the peer's close_notify)."""
        if not self.handshake_complete:
            raise LocalProtocolError("handshake not complete")
        if self.closed or self._close_sent:
            raise LocalProtocolError("connection is closed")
        if data:
            self._writer.write(ContentType.APPLICATION_DATA, data)

    def close(self) -> None:
        """Queue close_notify (once); no more data may be sent afterwards.

        Before the peer's close_notify this closes our write side only: keep feeding
        `receive_data` until `ConnectionClosed`.  After it (half_close) the connection is
        `closed`.  Nothing is sent after a fatal alert.
        """
        if not self._close_sent and not self.closed:
            self._send_alert(AlertLevel.WARNING, AlertDescription.close_notify)
            if self.peer_closed:
                self.closed = True

    @property
    def close_notify_sent(self) -> bool:
        """True once our close_notify is queued: nothing more may be sent."""
        return self._close_sent

    def data_to_send(self) -> bytes:
        return self._writer.data_to_send()

    # records

    def _handle_record(self, content_type: int, payload: bytes, events: list[Event]) -> None:
        if content_type == ContentType.APPLICATION_DATA:
            if not self.handshake_complete:
                raise UnexpectedMessage("application data before the handshake completed")
            if payload:
                events.append(ApplicationData(payload))
            return
        if not payload:
            raise UnexpectedMessage("empty handshake, alert or ChangeCipherSpec record")
        if content_type == ContentType.HANDSHAKE:
            self._handshake_buffer += payload
            self._process_handshake_messages(events)
        elif content_type == ContentType.CHANGE_CIPHER_SPEC:
            if payload != b"\x01":
                raise DecodeError("malformed ChangeCipherSpec")
            if self._handshake is None or self._handshake_buffer:
                raise UnexpectedMessage("unexpected ChangeCipherSpec")
            self._handshake.handle_change_cipher_spec()
        else:
            self._handle_alert(payload, events)

    def _process_handshake_messages(self, events: list[Event]) -> None:
        buffer = self._handshake_buffer
        while len(buffer) >= HANDSHAKE_HEADER_LENGTH:
            length = int.from_bytes(buffer[1:4], "big")
            if length > MAX_HANDSHAKE_MESSAGE_LENGTH:
                raise DecodeError("handshake message too long")
            end = HANDSHAKE_HEADER_LENGTH + length
            if len(buffer) < end:
                return
            raw = bytes(buffer[:end])
            del buffer[:end]
            self._handle_handshake_message(raw[0], raw, events)
            if self.closed:
                return

    def _handle_handshake_message(self, message_type: int, raw: bytes, events: list[Event]) -> None:
        handshake = self._handshake
        if handshake is None:
            if self.configuration.is_client and message_type == HandshakeType.HELLO_REQUEST:
                raise NoRenegotiation("renegotiation is not supported")
            if not self.configuration.is_client and message_type == HandshakeType.CLIENT_HELLO:
                raise NoRenegotiation("renegotiation is not supported")
            raise UnexpectedMessage("handshake message after the handshake")
        if self.configuration.is_client and message_type == HandshakeType.HELLO_REQUEST:
            # RFC 5246 7.4.1.1: ignored while negotiating, and never part of the transcript
            if len(raw) != HANDSHAKE_HEADER_LENGTH:
                raise DecodeError("HelloRequest with a body")
            return
        handshake.handle_message(message_type, raw)
        events.extend(handshake.events)
        handshake.events.clear()
        if handshake.complete:
            if self._handshake_buffer:
                raise UnexpectedMessage("handshake data after Finished")
            self.handshake_complete = True
            self.session = handshake.session
            event = events[-1]
            assert isinstance(event, HandshakeComplete)
            self.handshake_event = event
            self._handshake = None

    def _handle_alert(self, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 2:
            raise DecodeError("malformed alert")
        level, description = payload[0], payload[1]
        if level not in (AlertLevel.WARNING, AlertLevel.FATAL):
            raise IllegalParameter("unknown alert level")
        events.append(AlertReceived(level, description, alert_name(description)))
        if description == AlertDescription.close_notify:
            events.append(ConnectionClosed())
            self.peer_closed = True
            if not self.handshake_complete:
                self._handshake = None
            if not self._close_sent and self.configuration.half_close and self.handshake_complete:
                return  # our write side stays open until close()
            if not self._close_sent:
                self._send_alert(AlertLevel.WARNING, AlertDescription.close_notify)
            self.closed = True
        elif level == AlertLevel.FATAL:
            self.closed = True
            self._handshake = None

    # output

    def _send_alert(self, level: AlertLevel, description: AlertDescription) -> None:
        self._writer.write(ContentType.ALERT, bytes((level, description)))
        if description == AlertDescription.close_notify:
            self._close_sent = True

    def _fail(self, description: AlertDescription, reason: str, events: list[Event]) -> None:
        self._send_alert(AlertLevel.FATAL, description)
        self.closed = True
        self._handshake = None
        events.append(AlertSent(int(description), description.name, reason))
