"""Server session tickets: resumption state sealed with rotated SM4-GCM keys (RFC 8446 4.6.1, RFC 5077 4).

A ticket is ``key_name(16) || nonce(12) || SM4-GCM(key, nonce, state, aad=key_name)``.  Everything
needed to resume (suite, resumption PSK, SNI, ALPN, issue time, whether the client chain was verified
against trust anchors) is inside the sealed `TicketState`, except the client's certificate chain: the
ticket carries only its SM3 digest, and the chains (parsed) live in a bounded table beside the keys.  Tickets stay small (about 150 bytes) because GmSSL 3's client copies a
ticket into a 512-byte stack buffer and crashes on a larger one; a chain that has left the table (or
a ticket from another process) only costs a full handshake.

`SessionTicketKeys` rotates: the newest key seals, and a key stays able to open tickets for the ticket
lifetime after it stopped sealing, so every ticket it issued can be used until it expires and none
longer.  Time and randomness are passed in by the connection (its configuration's `now` and `random`),
so the keys never read a clock or `os.urandom` themselves.  The ring is shared by every connection of
a server (one asyncio thread), like `tls.tlcp.SessionCache`.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from certs import Certificate
from tls.crypto import SM4GCM, DecryptionError, TongsuoSM4GCM, keyed_sm4_gcm, sm3
from tls.tlcp.buffer import Buffer, BufferReadError, pull_opaque

from .suites import CipherSuite

KEY_NAME_LENGTH = 16
_NONCE_LENGTH = 12
_STATE_VERSION = 2
_FLAG_PEER_VERIFIED = 0x01
#: RFC 8446 4.6.1: lifetimes above seven days are not allowed.
MAX_TICKET_LIFETIME = timedelta(days=7)
#: Largest ticket we try to open (a state with a client chain of a few certificates fits).
MAX_TICKET_LENGTH = 1 << 15


#: version, cipher suite, issue time (ms since the epoch), lifetime, age_add
_STATE_HEADER = struct.Struct(">BHQII")


def _opaque8(value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError("ticket state field longer than 255 bytes")
    return bytes((len(value),)) + value


@dataclass(frozen=True)
class TicketState:
    """What a ticket carries (sealed, so only this server can read it)."""

    cipher_suite: CipherSuite
    resumption_psk: bytes = field(repr=False)
    issued_at: datetime
    lifetime: int
    age_add: int
    server_name: str | None
    alpn_protocol: str | None
    client_chain_digest: bytes = b""
    #: the client chain was validated against the server's trust anchors in the original handshake
    peer_verified: bool = False

    def encode(self) -> bytes:
        server_name = (self.server_name or "").encode("ascii")
        alpn = (self.alpn_protocol or "").encode("latin-1")
        return b"".join(
            (
                _STATE_HEADER.pack(
                    _STATE_VERSION,
                    self.cipher_suite,
                    int(self.issued_at.timestamp() * 1000),
                    self.lifetime,
                    self.age_add,
                ),
                _opaque8(self.resumption_psk),
                len(server_name).to_bytes(2, "big"),
                server_name,
                _opaque8(alpn),
                _opaque8(self.client_chain_digest),
                bytes((_FLAG_PEER_VERIFIED if self.peer_verified else 0,)),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> TicketState | None:
        """The state, or None if the bytes are not one (an old format, say)."""
        buf = Buffer(data)
        try:
            if buf.pull_uint8() != _STATE_VERSION:
                return None
            suite = CipherSuite(buf.pull_uint16())
            issued_ms = buf.pull_uint64()
            lifetime = buf.pull_uint32()
            age_add = buf.pull_uint32()
            psk = pull_opaque(buf, 1, minimum=1)
            server_name = pull_opaque(buf, 2).decode("ascii")
            alpn = pull_opaque(buf, 1).decode("latin-1")
            chain_digest = pull_opaque(buf, 1)
            flags = buf.pull_uint8()
            if flags & ~_FLAG_PEER_VERIFIED or not buf.eof():
                return None
            issued_at = datetime.fromtimestamp(issued_ms / 1000, tz=UTC)
        except (BufferReadError, ValueError, OverflowError, OSError):
            return None
        return cls(
            suite,
            psk,
            issued_at,
            lifetime,
            age_add,
            server_name or None,
            alpn or None,
            chain_digest,
            peer_verified=bool(flags & _FLAG_PEER_VERIFIED),
        )


@dataclass
class _TicketKey:
    name: bytes
    cipher: SM4GCM | TongsuoSM4GCM = field(repr=False)
    created_at: datetime


class SessionTicketKeys:
    """Rotated ticket-sealing keys.

    rotation_interval: how long one key seals new tickets.
    ticket_lifetime: the lifetime announced in NewSessionTicket and enforced on resumption (<= 7 days).
    max_client_chains: client certificate chains remembered for resumption (least recently used go).
    """

    def __init__(
        self,
        *,
        rotation_interval: timedelta = timedelta(hours=1),
        ticket_lifetime: timedelta = timedelta(hours=2),
        max_client_chains: int = 4096,
    ) -> None:
        if rotation_interval <= timedelta(0):
            raise ValueError("rotation_interval must be positive")
        if not timedelta(0) < ticket_lifetime <= MAX_TICKET_LIFETIME:
            raise ValueError("ticket_lifetime must be within (0, 7 days]")
        self.rotation_interval = rotation_interval
        self._ticket_lifetime = ticket_lifetime
        self._lifetime_seconds = int(ticket_lifetime.total_seconds())
        self._keys: list[_TicketKey] = []
        self._client_chains: OrderedDict[bytes, tuple[Certificate, ...]] = OrderedDict()
        self.max_client_chains = max_client_chains

    def remember_client_chain(self, chain: Sequence[Certificate]) -> bytes:
        """Keep a client's chain for resumption; returns the digest a ticket carries instead."""
        digest = sm3(b"".join(len(c.der).to_bytes(3, "big") + c.der for c in chain))
        self._client_chains[digest] = tuple(chain)
        self._client_chains.move_to_end(digest)
        while len(self._client_chains) > self.max_client_chains:
            self._client_chains.popitem(last=False)
        return digest

    def client_chain(self, digest: bytes) -> tuple[Certificate, ...] | None:
        chain = self._client_chains.get(digest)
        if chain is not None:
            self._client_chains.move_to_end(digest)
        return chain

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def ticket_lifetime(self) -> timedelta:
        return self._ticket_lifetime

    @property
    def lifetime_seconds(self) -> int:
        """The lifetime announced in NewSessionTicket, in seconds."""
        return self._lifetime_seconds

    def rotate(self, now: datetime, random: Callable[[int], bytes]) -> None:
        """Start sealing with a fresh key now; retire keys whose tickets have all expired."""
        self._keys.insert(0, _TicketKey(random(KEY_NAME_LENGTH), keyed_sm4_gcm(random(16)), now))
        self._retire(now)

    def _retire(self, now: datetime) -> None:
        keep = self.rotation_interval + self._ticket_lifetime
        self._keys = [self._keys[0]] + [key for key in self._keys[1:] if now < key.created_at + keep]

    def seal(self, state: TicketState, now: datetime, random: Callable[[int], bytes]) -> bytes:
        if not self._keys or now >= self._keys[0].created_at + self.rotation_interval:
            self.rotate(now, random)
        key = self._keys[0]
        nonce = random(_NONCE_LENGTH)
        return key.name + nonce + key.cipher.encrypt(nonce, state.encode(), key.name)

    def open(self, ticket: bytes, now: datetime) -> TicketState | None:
        """The state inside `ticket`, or None: unknown or retired key, tampered, malformed or expired."""
        if not KEY_NAME_LENGTH + _NONCE_LENGTH + 16 < len(ticket) <= MAX_TICKET_LENGTH:
            return None
        name = ticket[:KEY_NAME_LENGTH]
        keep = self.rotation_interval + self._ticket_lifetime
        for key in self._keys:
            if key.name != name:
                continue
            if now >= key.created_at + keep:
                return None
            nonce = ticket[KEY_NAME_LENGTH : KEY_NAME_LENGTH + _NONCE_LENGTH]
            try:
                plaintext = key.cipher.decrypt(nonce, ticket[KEY_NAME_LENGTH + _NONCE_LENGTH :], name)
            except DecryptionError:
                return None
            state = TicketState.decode(plaintext)
            if state is None:
                return None
            age = now - state.issued_at
            if age < timedelta(seconds=-60) or age > timedelta(
                seconds=min(state.lifetime, self.lifetime_seconds)
            ):
                return None
            return state
        return None
