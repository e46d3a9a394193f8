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

Servers that should resume each other's tickets (the workers of a host, the hosts behind a balancer)
share the keys themselves: `install` adds a `TicketKey` made elsewhere, for the sealing period
`sealing_period` numbers, and it seals in its period in preference to a key of this ring's own (which
the ring makes only when it has no installed key for now, so a server that could not reach the
others still issues tickets it can resume itself).  Where the keys come from is the caller's business
(`gateway.session_store.SharedTicketKeys` keeps them in the gateway's session store).
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


@dataclass(frozen=True)
class TicketKey:
    """A ticket-sealing key as servers share it: it seals from `seals_from` for one rotation interval."""

    name: bytes
    secret: bytes = field(repr=False)
    seals_from: datetime

    def __post_init__(self) -> None:
        if len(self.name) != KEY_NAME_LENGTH or len(self.secret) != 16:
            raise ValueError("a ticket key is a 16-byte name and a 16-byte SM4 key")

    @classmethod
    def generate(cls, seals_from: datetime, random: Callable[[int], bytes]) -> TicketKey:
        return cls(random(KEY_NAME_LENGTH), random(16), seals_from)


def sealing_period(now: datetime, rotation_interval: timedelta) -> tuple[int, datetime]:
    """(index, start) of the rotation period `now` falls in, counted from the Unix epoch.

    Servers sharing keys agree on periods without talking to each other: period ``n`` starts at
    ``n * rotation_interval`` after 1970-01-01 UTC.
    """
    seconds = rotation_interval.total_seconds()
    index = int(now.timestamp() // seconds)
    return index, datetime.fromtimestamp(index * seconds, tz=UTC)


@dataclass
class _TicketKey:
    name: bytes
    cipher: SM4GCM | TongsuoSM4GCM = field(repr=False)
    created_at: datetime
    #: installed from a `TicketKey` shared with other servers (preferred for sealing in its period)
    shared: bool = False


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
        """Start sealing with a fresh key of our own now; retire keys whose tickets have all expired."""
        self._add(_TicketKey(random(KEY_NAME_LENGTH), keyed_sm4_gcm(random(16)), now), now)

    def install(self, key: TicketKey, now: datetime) -> bool:
        """Add a key shared with other servers; whether it was new (and not already retired)."""
        if self.has_key(key.name):
            return False
        self._add(_TicketKey(key.name, keyed_sm4_gcm(key.secret), key.seals_from, shared=True), now)
        return self.has_key(key.name)

    def has_key(self, name: bytes) -> bool:
        return any(key.name == name for key in self._keys)

    def _add(self, key: _TicketKey, now: datetime) -> None:
        self._keys.append(key)
        self._keys.sort(key=lambda known: known.created_at, reverse=True)
        keep = self.rotation_interval + self._ticket_lifetime
        self._keys = [known for known in self._keys if now < known.created_at + keep]

    def _sealing_key(self, now: datetime) -> _TicketKey | None:
        """The shared key of the current period, else our own newest key while it is current."""
        current = [
            key for key in self._keys if key.created_at <= now < key.created_at + self.rotation_interval
        ]
        for key in current:
            if key.shared:
                return key
        return current[0] if current else None

    def seal(self, state: TicketState, now: datetime, random: Callable[[int], bytes]) -> bytes:
        key = self._sealing_key(now)
        if key is None:
            self.rotate(now, random)
            key = self._sealing_key(now)
            assert key is not None
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
