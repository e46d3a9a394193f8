"""The sniffer (Envoy's ``tls_inspector``): the listener filter that chooses a connection's transport.

It reads the first record with ``MSG_PEEK``, so every transport still sees the original bytes. A
record header is ``type(1) version(2) length(2)``: a handshake record with TLCP's version 0x0101
(GB/T 38636-2020 6.3.3.1) goes to TLCP; 0x0300..0x0304 is a TLS ClientHello, whose SNI the sniffer reads
(for the certificate set and the filter chain match) and checks: a host name that is not printable
ASCII is refused with ``unrecognized_name`` here, before OpenSSL (RFC 6066 3: ASCII host names only).
A TLS 1.3 hello offering an RFC 8998 suite and the curveSM2 group goes to ``tls13_sm`` (the project's
engine; OpenSSL 3.0 has no SM suites in TLS 1.3) as the listener's ``tls13_sm.selection`` says; every
other TLS hello goes to OpenSSL as before.
Anything else is plaintext where the listener allows it, else refused: plain HTTP on a TLS/TLCP-only
port gets a short 400 saying so (as nginx does), garbage and oversized records are just closed.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from gateway.config import Tls13SmSelection
from gateway.listener_filters.base import ListenerFilter
from gateway.transports import tls
from gateway.transports.base import AcceptedSocket, HandshakeRefused, ServerTransport
from gateway.transports.tls13_sm import Tls13SmTransport
from tls.tlcp import TLCP_VERSION
from tls.tls13 import TLS13_VERSION, CipherSuite, NamedGroup

RECORD_HEADER_LEN = 5
CONTENT_TYPE_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 1
EXTENSION_SERVER_NAME = 0
EXTENSION_SUPPORTED_GROUPS = 10
EXTENSION_SUPPORTED_VERSIONS = 43
#: Suites that say nothing about the cipher: renegotiation_info and fallback SCSVs (RFC 5746, RFC 7507).
SIGNALLING_SUITES = frozenset((0x00FF, 0x5600))
SM_SUITES = frozenset(int(suite) for suite in CipherSuite)
MAX_RECORD_PAYLOAD = 16384 + 2048
#: How often a partly arrived first record is peeked again (a readable socket would wake at once).
_PEEK_INTERVAL = 0.005

_HTTP_REQUEST_LINE = re.compile(rb"[A-Z]{3,10} [!-~]")
_PLAIN_HTTP_REFUSAL_BODY = b"This port speaks TLS/TLCP only: plain HTTP was sent to it.\n"
PLAIN_HTTP_REFUSAL = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n%s" % (len(_PLAIN_HTTP_REFUSAL_BODY), _PLAIN_HTTP_REFUSAL_BODY)
)


class FirstRecord(Enum):
    TLCP = "tlcp"
    TLS = "tls"
    PLAIN = "plain"
    OVERSIZED = "oversized_first_record"
    GARBAGE = "garbage_first_record"


def classify(header: bytes, *, max_record: int = MAX_RECORD_PAYLOAD) -> FirstRecord:
    """Classify the first ``RECORD_HEADER_LEN`` bytes of a connection."""
    if len(header) < RECORD_HEADER_LEN:
        raise ValueError("need the full 5-byte record header")
    if header[0] != CONTENT_TYPE_HANDSHAKE:
        return FirstRecord.PLAIN if header[0] >= 0x20 else FirstRecord.GARBAGE
    version = int.from_bytes(header[1:3], "big")
    length = int.from_bytes(header[3:5], "big")
    if length == 0:
        return FirstRecord.GARBAGE
    if length > max_record:
        return FirstRecord.OVERSIZED
    if version == TLCP_VERSION:
        return FirstRecord.TLCP
    if 0x0300 <= version <= 0x0304:
        return FirstRecord.TLS
    return FirstRecord.GARBAGE


def _grease(value: int) -> bool:
    """RFC 8701 GREASE values (0x0A0A, 0x1A1A, ...): placeholders that select nothing."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


@dataclass(frozen=True, slots=True)
class ClientHelloInfo:
    """What the sniffer needs from a TLS ClientHello (RFC 8446 4.1.2); ``server_name`` raw, if sent."""

    #: The offered cipher suites as on the wire (two bytes each), decoded only when asked.
    cipher_suites_raw: bytes
    server_name: bytes | None
    supported_groups: tuple[int, ...] = ()
    supported_versions: tuple[int, ...] = ()

    @property
    def offers_rfc8998(self) -> bool:
        """TLS 1.3 with an RFC 8998 suite and the curveSM2 group: what the SM engine can answer."""
        return (
            TLS13_VERSION in self.supported_versions
            and NamedGroup.curveSM2 in self.supported_groups
            and any(suite in SM_SUITES for suite in self.cipher_suites)
        )

    @property
    def offers_standard_suite(self) -> bool:
        """Any suite OpenSSL could choose (neither RFC 8998's, a signalling suite nor GREASE)."""
        return any(
            suite not in SM_SUITES and suite not in SIGNALLING_SUITES and not _grease(suite)
            for suite in self.cipher_suites
        )

    def selects_tls13_sm(self, selection: Tls13SmSelection) -> bool:
        if not self.offers_rfc8998:
            return False
        return selection is Tls13SmSelection.PREFER_SM or not self.offers_standard_suite

    @property
    def cipher_suites(self) -> tuple[int, ...]:
        raw = self.cipher_suites_raw
        return tuple(int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw) - 1, 2))

    def offers(self, suite: int) -> bool:
        return suite in self.cipher_suites


class _Truncated(Exception):
    pass


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Truncated
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> _Cursor:
        return _Cursor(self.take(self.uint(length_bytes)))

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def parse_client_hello(record_payload: bytes, *, sm_fields: bool = True) -> ClientHelloInfo | None:
    """The cipher suites, SNI, groups and versions of a ClientHello that fits in the first record, else
    ``None``. Without ``sm_fields`` (no RFC 8998 transport to choose) it stops reading at the SNI.

    ``None`` leaves every judgement to the engine (a malformed hello gets OpenSSL's alert; one split
    over several records is served with the default certificate set).
    """
    try:
        message = _Cursor(record_payload)
        if message.uint(1) != HANDSHAKE_CLIENT_HELLO:
            return None
        body = _Cursor(message.take(message.uint(3)))
        body.take(2 + 32)  # legacy_version, random
        body.vector(1)  # legacy_session_id
        cipher_suites = body.vector(2).data
        body.vector(1)  # legacy_compression_methods
        server_name = None
        groups: tuple[int, ...] = ()
        versions: tuple[int, ...] = ()
        if not body.done:
            extensions = body.vector(2)
            while not extensions.done and (server_name is None or (sm_fields and not (groups and versions))):
                kind, data = extensions.uint(2), extensions.vector(2)
                if kind == EXTENSION_SERVER_NAME:
                    names = data.vector(2)
                    while not names.done:
                        name_type, host = names.uint(1), names.vector(2)
                        if name_type == 0:
                            server_name = host.data
                            break
                elif kind == EXTENSION_SUPPORTED_GROUPS:
                    groups = _uint16s(data.vector(2))
                elif kind == EXTENSION_SUPPORTED_VERSIONS:
                    versions = _uint16s(data.vector(1))
    except _Truncated:
        return None
    return ClientHelloInfo(cipher_suites, server_name, groups, versions)


def _uint16s(vector: _Cursor) -> tuple[int, ...]:
    return tuple(vector.uint(2) for _ in range(len(vector.data) // 2))


def host_name(raw: bytes) -> str | None:
    """The SNI host name if it is printable ASCII without spaces (RFC 6066 3), else ``None``."""
    if not raw or any(b < 0x21 or b > 0x7E for b in raw):
        return None
    return raw.decode("ascii")


async def peek(sock: socket.socket, n: int) -> bytes:
    """Up to ``n`` bytes, not consumed: waits until ``n`` have arrived, the peer closed, or the first byte
    shows that fewer will do (not a handshake record: plaintext or garbage)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = sock.recv(n, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            await _readable(loop, sock)
            continue
        except OSError as exc:
            raise HandshakeRefused("reset", str(exc)) from None
        if not data:
            raise HandshakeRefused("closed_before_hello")
        if len(data) >= n or data[0] != CONTENT_TYPE_HANDSHAKE:
            return data
        # A partial record stays readable: poll instead of spinning on the ready socket.
        await asyncio.sleep(_PEEK_INTERVAL)


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await fut
    finally:
        loop.remove_reader(sock.fileno())


class Sniff(ListenerFilter):
    """Chooses the transport from the first record; reads and checks the SNI of TLS hellos."""

    def __init__(self, transports: Mapping[str, ServerTransport], *, max_first_record: int) -> None:
        self.transports = transports
        self.max_first_record = max_first_record
        sm = transports.get("tls13_sm")
        self.tls13_sm = sm if isinstance(sm, Tls13SmTransport) else None

    async def on_accept(self, accepted: AcceptedSocket) -> None:
        plain = self.transports.get("plain")
        if plain is not None and len(self.transports) == 1:
            accepted.detected = "plain"
            accepted.transport = plain  # nothing to tell apart; server-speaks-first protocols work too
            return
        first = await peek(accepted.sock, RECORD_HEADER_LEN)
        kind = self._classify(first)
        accepted.detected = kind.value
        if kind is FirstRecord.TLS and (self.transports.get("tls") or self.tls13_sm) is not None:
            accepted.transport = await self._tls_transport(accepted, first)
            return
        transport = self.transports.get(kind.value)
        if transport is not None:
            accepted.transport = transport
            return
        if kind is FirstRecord.PLAIN:
            start = await peek(accepted.sock, 16)
            reply = PLAIN_HTTP_REFUSAL if _HTTP_REQUEST_LINE.match(start) else b""
            raise HandshakeRefused("protocol_not_allowed", kind.value, reply=reply)
        if kind in (FirstRecord.TLS, FirstRecord.TLCP):
            raise HandshakeRefused("protocol_not_allowed", kind.value)
        raise HandshakeRefused(kind.value)

    def _classify(self, first: bytes) -> FirstRecord:
        if len(first) >= RECORD_HEADER_LEN:
            kind = classify(first, max_record=self.max_first_record)
        else:
            kind = FirstRecord.PLAIN if first[0] >= 0x20 else FirstRecord.GARBAGE
        if kind is FirstRecord.GARBAGE and "plain" in self.transports and first[0] != CONTENT_TYPE_HANDSHAKE:
            return FirstRecord.PLAIN  # binary plaintext protocols (length-prefixed RPC) are not garbage
        return kind

    async def _tls_transport(self, accepted: AcceptedSocket, header: bytes) -> ServerTransport:
        """OpenSSL, or the RFC 8998 engine for a hello its selection policy gives it."""
        hello = await self._read_client_hello(accepted, header)
        standard, sm = self.transports.get("tls"), self.tls13_sm
        if sm is not None and (
            standard is None or (hello is not None and hello.selects_tls13_sm(sm.policy.selection))
        ):
            accepted.detected = sm.name
            return sm
        if standard is None:
            raise HandshakeRefused("protocol_not_allowed", "tls")
        return standard

    async def _read_client_hello(self, accepted: AcceptedSocket, header: bytes) -> ClientHelloInfo | None:
        length = int.from_bytes(header[3:5], "big")
        record = await peek(accepted.sock, RECORD_HEADER_LEN + length)
        hello = parse_client_hello(record[RECORD_HEADER_LEN:], sm_fields=self.tls13_sm is not None)
        if hello is None or hello.server_name is None:
            return hello
        name = host_name(hello.server_name)
        if name is None:
            refused = tls.alert("unrecognized_name")
            raise HandshakeRefused(
                "invalid_server_name",
                f"SNI is not an ASCII host name: {hello.server_name[:64]!r}",
                alert=refused,
                reply=tls.alert_record(refused),
            )
        accepted.server_name = name
        return hello
