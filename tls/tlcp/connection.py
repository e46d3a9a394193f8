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

from ..connection_shell import ConnectionShell
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


class TLCPConnection(ConnectionShell[Event]):
    """One TLCP connection, client or server according to `configuration.is_client`."""

    alert_exception = TLCPAlert
    alert_descriptions = AlertDescription
    local_protocol_error = LocalProtocolError
    buffer_read_error = BufferReadError
    alert_sent_event = AlertSent
    connection_closed_event = ConnectionClosed

    configuration: TLCPConfiguration
    _reader: RecordReader
    _writer: RecordWriter
    _handshake: Handshake | None

    def __init__(self, configuration: TLCPConfiguration) -> None:
        reader, writer = RecordReader(), RecordWriter(configuration.max_fragment_size)
        handshake_class = ClientHandshake if configuration.is_client else ServerHandshake
        handshake = handshake_class(configuration, reader, writer)
        super().__init__(configuration, reader, writer, handshake)
        #: The session established (client: keep it to offer for resumption).
        self.session: TLCPSession | None = None
        #: The HandshakeComplete event, kept for adapters that need the peer identity later.
        self.handshake_event: HandshakeComplete | None = None
        #: Client: what the handshake sent and in which dialect; outlives a failed handshake to explain it.
        self.client_progress: ClientProgress | None = (
            handshake.progress if isinstance(handshake, ClientHandshake) else None
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
            self._process_handshake_messages(payload, events)
        elif content_type == ContentType.CHANGE_CIPHER_SPEC:
            if payload != b"\x01":
                raise DecodeError("malformed ChangeCipherSpec")
            if self._handshake is None or self._handshake_buffer:
                raise UnexpectedMessage("unexpected ChangeCipherSpec")
            self._handshake.handle_change_cipher_spec()
        else:
            self._handle_alert(payload, events)

    def _process_handshake_messages(self, payload: bytes, events: list[Event]) -> None:
        """Handle each whole handshake message of the buffered bytes plus `payload`; keep the rest.

        Messages usually arrive whole, one or several per record: they are then sliced from the
        record's plaintext, and only a message split across records goes through the buffer.
        """
        buffer = self._handshake_buffer
        if buffer:
            buffer += payload
            data = bytes(buffer)
            buffer.clear()
        else:
            data = payload
        offset, size = 0, len(data)
        while size - offset >= HANDSHAKE_HEADER_LENGTH:
            length = data[offset + 1] << 16 | data[offset + 2] << 8 | data[offset + 3]
            if length > MAX_HANDSHAKE_MESSAGE_LENGTH:
                raise DecodeError("handshake message too long")
            end = offset + HANDSHAKE_HEADER_LENGTH + length
            if end > size:
                break
            raw = data if offset == 0 and end == size else data[offset:end]
            offset = end
            self._handle_handshake_message(raw[0], raw, offset < size, events)
            if self.closed:
                return
        if offset < size:
            buffer += data[offset:]

    def _handle_handshake_message(
        self, message_type: int, raw: bytes, more_follow: bool, events: list[Event]
    ) -> None:
        """`more_follow`: bytes of further handshake messages are already here (after this one)."""
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
        if handshake.events:
            events.extend(handshake.events)
            handshake.events.clear()
        if handshake.complete:
            if more_follow:
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
            self._peer_sent_close_notify(events)
        elif level == AlertLevel.FATAL:
            self.closed = True
            self._handshake = None
