"""`TLS13Connection`: the sans-I/O TLS 1.3 (RFC 8998) endpoint, in the style of `tls.tlcp.TLCPConnection`.

The caller owns the transport: it feeds received bytes to `receive_data()`, which returns events, and
sends whatever `data_to_send()` returns.  Nothing here reads a socket, a clock or `os.urandom`.

Errors: a protocol violation raises a `TLS13Alert` somewhere below; it is caught once here, the alert
is queued (encrypted under our current keys, as 6 requires), an `AlertSent` event is returned and the
connection is closed for good.  Any other exception escaping the engine is treated the same way with
internal_error, so hostile input never raises out of `receive_data`.  Caller misuse raises
`LocalProtocolError`.

Record-level rules enforced here (RFC 8446 5, 6, D.4): handshake and alert records may not be empty;
an alert record holds exactly one alert; a change_cipher_spec record is dropped only if it is the
single byte 0x01 and arrives before the handshake completes (anything else is unexpected_message);
handshake messages may not span a key change (the record that ends a key-changing message must end
with it); application data before the handshake completes is unexpected_message.

After the handshake: KeyUpdate both ways (4.6.3; we also update our own key after
`KEY_UPDATE_AFTER_RECORDS` records), NewSessionTicket to a client (4.6.1, reported as
`SessionTicketReceived`); anything else, a post-handshake CertificateRequest included (we never offer
post_handshake_auth), is unexpected_message.

Closing (6.1): the peer's close_notify is `AlertReceived` + `ConnectionClosed` and ends our read
side; our write side follows `configuration.half_close` exactly as in the TLCP engine.  user_canceled
is reported and otherwise ignored; every other alert is fatal whatever its level.
"""

from __future__ import annotations

from datetime import datetime

from tls.tlcp.buffer import Buffer, BufferReadError

from ..connection_shell import ConnectionShell
from .alerts import (
    AlertDescription,
    AlertLevel,
    DecodeError,
    IllegalParameter,
    LocalProtocolError,
    TLS13Alert,
    UnexpectedMessage,
    alert_name,
)
from .client import ClientHandshake
from .config import TLS13Configuration, TLS13Session
from .events import (
    AlertReceived,
    AlertSent,
    ApplicationData,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    KeyUpdated,
    SessionTicketReceived,
)
from .handshake import Handshake, TrafficSecrets
from .keyschedule import Secret, next_traffic_secret, resumption_psk
from .messages import (
    HANDSHAKE_HEADER_LENGTH,
    MAX_HANDSHAKE_MESSAGE_LENGTH,
    HandshakeType,
    KeyUpdate,
    KeyUpdateRequest,
    NewSessionTicket,
    encode_new_session_ticket,
    pull_key_update,
    pull_new_session_ticket,
    push_key_update,
)
from .record import KEY_UPDATE_AFTER_RECORDS, ContentType, RecordProtection, RecordReader, RecordWriter
from .server import ServerHandshake
from .tickets import TicketState

#: Tickets a client accepts per connection; more are ignored (a server could send them forever).
MAX_TICKETS_KEPT = 8


class TLS13Connection(ConnectionShell[Event]):
    """One TLS 1.3 connection, client or server according to `configuration.is_client`."""

    alert_exception = TLS13Alert
    alert_descriptions = AlertDescription
    local_protocol_error = LocalProtocolError
    buffer_read_error = BufferReadError
    alert_sent_event = AlertSent
    connection_closed_event = ConnectionClosed

    configuration: TLS13Configuration
    _reader: RecordReader
    _writer: RecordWriter
    _handshake: Handshake | None

    def __init__(self, configuration: TLS13Configuration) -> None:
        reader, writer = RecordReader(), RecordWriter(configuration.max_fragment_size)
        handshake_class = ClientHandshake if configuration.is_client else ServerHandshake
        super().__init__(configuration, reader, writer, handshake_class(configuration, reader, writer))
        self._secrets: TrafficSecrets | None = None
        self._read_secret: Secret | None = None
        self._write_secret: Secret | None = None
        self._tickets_received = 0
        #: Client: the newest resumable session (from the last NewSessionTicket).
        self.session: TLS13Session | None = None
        #: The HandshakeComplete event, kept for adapters that need the peer identity later.
        self.handshake_event: HandshakeComplete | None = None

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

    def send_application_data(self, data: bytes) -> None:
        """Queue application data; after `KEY_UPDATE_AFTER_RECORDS` records under one key, a KeyUpdate."""
        super().send_application_data(data)
        if data and self._writer.records_under_current_key >= KEY_UPDATE_AFTER_RECORDS:
            self._send_key_update(KeyUpdateRequest.update_not_requested)

    def update_keys(self, *, request_peer_update: bool = True) -> None:
        """Send KeyUpdate and switch to our next application traffic secret (RFC 8446 4.6.3)."""
        if not self.handshake_complete:
            raise LocalProtocolError("handshake not complete")
        if self.closed or self._close_sent:
            raise LocalProtocolError("connection is closed")
        request = (
            KeyUpdateRequest.update_requested
            if request_peer_update
            else KeyUpdateRequest.update_not_requested
        )
        self._send_key_update(request)

    # records

    def _handle_record(self, content_type: int, payload: bytes, events: list[Event]) -> None:
        if content_type == ContentType.APPLICATION_DATA:
            if not self.handshake_complete:
                raise UnexpectedMessage("application data before the handshake completed")
            if payload:
                events.append(ApplicationData(payload))
            return
        if content_type == ContentType.CHANGE_CIPHER_SPEC:
            self._handle_change_cipher_spec(payload)
            return
        if not payload:
            raise UnexpectedMessage("empty handshake or alert record")
        if content_type == ContentType.HANDSHAKE:
            self._handshake_buffer += payload
            self._process_handshake_messages(events)
        else:
            self._handle_alert(payload, events)

    def _handle_change_cipher_spec(self, payload: bytes) -> None:
        # D.4: dropped when it is the compatibility record, between the first ClientHello and the handshake's end
        if payload != b"\x01" or self.handshake_complete or self._handshake is None:
            raise UnexpectedMessage("change_cipher_spec outside middlebox compatibility")
        if not self.configuration.is_client and not self._handshake.messages_received:
            raise UnexpectedMessage("change_cipher_spec before the ClientHello")

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
            key_changed = self._handle_handshake_message(raw[0], raw, events)
            if key_changed and buffer:
                raise UnexpectedMessage("handshake message spans a key change")
            if self.closed or self.peer_closed:
                return

    def _handle_handshake_message(self, message_type: int, raw: bytes, events: list[Event]) -> bool:
        """Dispatch one message; True when it changed the read keys (it must end its record)."""
        handshake = self._handshake
        if handshake is None:
            return self._handle_post_handshake_message(message_type, raw, events)
        handshake.handle_message(message_type, raw)
        events.extend(handshake.events)
        handshake.events.clear()
        key_changed = handshake.read_key_changed
        handshake.read_key_changed = False
        if handshake.complete:
            assert handshake.secrets is not None
            self._secrets = handshake.secrets
            if self.configuration.is_client:
                self._read_secret = handshake.secrets.server_application
                self._write_secret = handshake.secrets.client_application
            else:
                self._read_secret = handshake.secrets.client_application
                self._write_secret = handshake.secrets.server_application
            self.handshake_complete = True
            event = events[-1]
            assert isinstance(event, HandshakeComplete)
            self.handshake_event = event
            self._handshake = None
            if not self.configuration.is_client:
                self._send_session_tickets()
        return key_changed

    # post-handshake messages

    def _handle_post_handshake_message(self, message_type: int, raw: bytes, events: list[Event]) -> bool:
        if message_type == HandshakeType.KEY_UPDATE:
            self._handle_key_update(raw, events)
            return True
        if message_type == HandshakeType.NEW_SESSION_TICKET and self.configuration.is_client:
            self._handle_new_session_ticket(raw, events)
            return False
        raise UnexpectedMessage(f"handshake message {message_type} after the handshake")

    def _handle_key_update(self, raw: bytes, events: list[Event]) -> None:
        message = pull_key_update(Buffer(raw))
        assert self._secrets is not None
        assert self._read_secret is not None
        self._read_secret = Secret(next_traffic_secret(self._read_secret))
        self._reader.set_protection(RecordProtection(self._secrets.cipher_suite, self._read_secret))
        requested = message.request_update is KeyUpdateRequest.update_requested
        events.append(KeyUpdated(requested))
        if requested and not self._close_sent:
            self._send_key_update(KeyUpdateRequest.update_not_requested)

    def _send_key_update(self, request: KeyUpdateRequest) -> None:
        assert self._secrets is not None
        buf = Buffer()
        push_key_update(buf, KeyUpdate(request))
        self._writer.write(ContentType.HANDSHAKE, buf.data)
        assert self._write_secret is not None
        self._write_secret = Secret(next_traffic_secret(self._write_secret))
        self._writer.set_protection(RecordProtection(self._secrets.cipher_suite, self._write_secret))

    def _handle_new_session_ticket(self, raw: bytes, events: list[Event]) -> None:
        message = pull_new_session_ticket(Buffer(raw))
        if message.ticket_lifetime > 7 * 24 * 3600:
            raise IllegalParameter("ticket lifetime over seven days")
        self._tickets_received += 1
        if self._tickets_received > MAX_TICKETS_KEPT or message.ticket_lifetime == 0:
            return
        assert self._secrets is not None and self.handshake_event is not None
        assert self._secrets.resumption_master is not None  # a client always derives it
        handshake = self.handshake_event
        self.session = TLS13Session(
            ticket=message.ticket,
            resumption_psk=resumption_psk(self._secrets.resumption_master, message.ticket_nonce),
            cipher_suite=self._secrets.cipher_suite,
            ticket_lifetime=message.ticket_lifetime,
            ticket_age_add=message.ticket_age_add,
            received_at=self.configuration.now(),
            server_name=handshake.server_name,
            alpn_protocol=handshake.alpn_protocol,
            peer_certificates=handshake.peer_certificates,
            peer_verified=handshake.peer_verified,
        )
        events.append(SessionTicketReceived(self.session))

    def _send_session_tickets(self) -> None:
        config = self.configuration
        keys = config.ticket_keys
        assert self._secrets is not None and self.handshake_event is not None
        resumption_master = self._secrets.resumption_master
        if keys is None or resumption_master is None:
            return  # derived only when tickets go out: ticket keys, new_session_tickets, client's psk_dhe_ke
        event = self.handshake_event
        now: datetime = config.now()
        chain_digest = b""
        if event.peer_certificates:
            chain_digest = keys.remember_client_chain(event.peer_certificates)
        for index in range(config.new_session_tickets):
            nonce = index.to_bytes(1, "big")
            age_add = int.from_bytes(config.random(4), "big")
            state = TicketState(
                cipher_suite=self._secrets.cipher_suite,
                resumption_psk=resumption_psk(resumption_master, nonce),
                issued_at=now,
                lifetime=keys.lifetime_seconds,
                age_add=age_add,
                server_name=event.server_name,
                alpn_protocol=event.alpn_protocol,
                client_chain_digest=chain_digest,
                peer_verified=event.peer_verified,
            )
            ticket = NewSessionTicket(
                keys.lifetime_seconds, age_add, nonce, keys.seal(state, now, config.random)
            )
            self._writer.write(ContentType.HANDSHAKE, encode_new_session_ticket(ticket))

    # alerts

    def _handle_alert(self, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 2:
            raise DecodeError("malformed alert")
        level, description = payload[0], payload[1]
        if level not in (AlertLevel.WARNING, AlertLevel.FATAL):
            raise DecodeError("unknown alert level")
        events.append(AlertReceived(level, description, alert_name(description)))
        if description == AlertDescription.user_canceled:
            return
        if description == AlertDescription.close_notify:
            self._peer_sent_close_notify(events)
            return
        self.closed = True  # every other alert is fatal in TLS 1.3 (6.2)
        self._handshake = None
