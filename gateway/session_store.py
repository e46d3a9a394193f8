"""TLCP sessions shared by the workers of a host and, through Redis, by every host of a fleet.

GB/T 38636-2020 6.4.4 resumption works only where the server finds the session ID the client offers.
Behind ``SO_REUSEPORT`` (workers) or a load balancer (hosts) the resuming connection usually lands on
another process than the one that made the session, so each process keeps the engine's own LRU
(:class:`tls.tlcp.SessionCache`) in front of a shared backend:

- :class:`SharedSessionCache` is what the engine sees. ``put`` (called by the engine when a full
  handshake completes) stores locally and writes the sealed session to the backend in the
  background; ``get`` is the engine's local lookup, unchanged.
- Before the engine reads the ClientHello, the listener calls :meth:`SharedSessionCache.prefetch`
  with the socket: it peeks the ClientHello's session ID (nothing is consumed), and when the local
  cache lacks it, fetches it from the backend (bounded by the backend timeout) and puts it in the
  local cache. The engine then resumes as if the session had been made here. The engine needs no
  change: its cache interface stays synchronous and the I/O happens at the edge.
- Entries are sealed by :class:`SessionSealer`: SM4-GCM (tls.crypto) under the configured key, a
  random 96-bit nonce per entry, the namespace (listener) and session ID as associated data, so an
  entry cannot be moved to another ID or listener, and the store never holds a usable master secret.

Backends (:mod:`gateway.session_backends`): a SQLite file in the supervisor's private runtime
directory for the workers of one host, or Redis for a fleet.

TLS 1.3-SM (RFC 8998) resumes from session tickets the server sealed itself, so what its servers
share is the ticket keys (:class:`SharedTicketKeys`, the gateway's side of
:class:`tls.tls13.SessionTicketKeys`): one random key per rotation period (periods counted from the
Unix epoch, so every server agrees which one is current), made by whichever server first needs it
with an add-if-absent write, sealed like a session under the store key, and expiring from the store
with the last ticket it can have sealed. A server reads the current and the next period's key (the
next one early, so a ticket sealed by a server whose clock is a little ahead still opens) and the
ones whose tickets may still be valid: a few store round trips per rotation period per process,
none per handshake. The client certificate chain a ticket resumes (the ticket carries only its
digest) is written through to the store too, and fetched, as TLCP sessions are, by peeking the
ClientHello's first PSK identity before the engine reads it. If the store is out of reach, a
process seals with a key of its own (its tickets resume only there) and asks the store again
after ``_TICKET_KEY_RETRY``; a ticket under a key it does not have gets a full handshake.

This was chosen over a key file (nginx ``ssl_session_ticket_key``, HAProxy ``tls-ticket-keys``)
because operators sharing TLCP sessions already run this store (same ``session_store`` section,
key and Redis), and because the keys then rotate by themselves: a file rotates only when someone
rewrites it on every host and reloads them all, and an unrotated ticket key undoes forward secrecy
for every session resumed under it. Keys are random, not derived from the store key, so one leaked
period key exposes that period's tickets and no other.

Standard TLS 1.2/1.3 through Python's ``ssl`` cannot share sessions, and this module does not try:
``ssl.SSLContext`` offers only ``num_tickets`` and ``session_stats()`` on the server side. There is no
way to set the session-ticket keys (OpenSSL's ``SSL_CTX_set_tlsext_ticket_key_evp_cb`` or
``SSL_CTRL_SET_TLSEXT_TICKET_KEYS``) nor to hook the server session cache
(``SSL_CTX_sess_set_new_cb``/``get_cb``). OpenSSL makes a random ticket key per ``SSL_CTX``, so a TLS
client resumes (by ticket in TLS 1.3, by ticket or session ID in 1.2) only on the worker whose
context issued the ticket, only until that worker's next reload (which builds a new context), and
never on another host. Behind ``--workers N`` about 1/N of TLS resumptions succeed; behind an L4
balancer, source-address affinity is the only help.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import secrets
import socket
from base64 import b64decode, b64encode
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from certs import Certificate, CertificateError
from gateway.fleet_config import SessionStoreConfig
from gateway.logs.rate_limit import RateLimitedLog
from gateway.logs.setup import get_logger
from gateway.session_backends import RedisSessionBackend, SqliteSessionBackend
from tls.crypto import SM4GCM, CryptoError
from tls.tlcp import CipherSuite, SessionCache, TLCPSession
from tls.tlcp.buffer import Buffer, BufferReadError
from tls.tls13 import SessionTicketKeys, TLS13Alert
from tls.tls13.messages import ExtensionType, pull_client_hello, pull_offered_psks
from tls.tls13.tickets import KEY_NAME_LENGTH, TicketKey, sealing_period

SEAL_VERSION = 1
_NONCE_SIZE = 12
#: Record header (5) + handshake header (4) + client_version (2) + random (32) + session_id length (1).
_SESSION_ID_OFFSET = 44
_MAX_SESSION_ID = 32

log = RateLimitedLog(get_logger("session_store"), rate=1.0, burst=5)


class SessionBackend(Protocol):
    """Where sealed entries live; errors are the backend's to log and swallow (resumption is optional)."""

    async def fetch(self, key: str) -> bytes | None: ...
    async def store(self, key: str, value: bytes, ttl: float) -> None: ...
    async def add(self, key: str, value: bytes, ttl: float) -> bytes | None:
        """Store ``value`` unless ``key`` holds a live value; the live value after that."""
        ...

    async def close(self) -> None: ...


class SessionSealer:
    """Seal and open :class:`TLCPSession` values with SM4-GCM under one key.

    Sealed form: ``version(1) || nonce(12) || SM4-GCM(key, nonce, plaintext, aad)``; the plaintext
    is a small JSON document (suite, master secret, SNI, peer certificates as DER, creation time) and
    ``aad = namespace || 0x00 || session_id``.
    """

    def __init__(self, key: bytes, random: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._aead = SM4GCM(key)
        self._random = random

    def seal_value(self, aad: bytes, plaintext: bytes) -> bytes:
        nonce = self._random(_NONCE_SIZE)
        return bytes([SEAL_VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open_value(self, aad: bytes, sealed: bytes) -> bytes | None:
        """The plaintext, or ``None`` for an entry that is not ours or was tampered with."""
        if len(sealed) < 1 + _NONCE_SIZE + 16 or sealed[0] != SEAL_VERSION:
            return None
        nonce, body = sealed[1 : 1 + _NONCE_SIZE], sealed[1 + _NONCE_SIZE :]
        try:
            return self._aead.decrypt(nonce, body, aad)
        except CryptoError:
            return None

    def seal(self, namespace: str, session: TLCPSession) -> bytes:
        certs = list(session.peer_certificates)
        document = {
            "suite": int(session.cipher_suite),
            "ms": session.master_secret.hex(),
            "sni": session.server_name,
            "created": session.created_at.timestamp(),
            "certs": [b64encode(c.der).decode("ascii") for c in certs],
            "sign": _index(certs, session.peer_sign_cert),
            "enc": _index(certs, session.peer_enc_cert),
        }
        plaintext = json.dumps(document, separators=(",", ":")).encode()
        return self.seal_value(_aad(namespace, session.session_id), plaintext)

    def open(self, namespace: str, session_id: bytes, sealed: bytes) -> TLCPSession | None:
        """The session, or ``None`` for an entry that is not ours, was tampered with or is malformed."""
        plaintext = self.open_value(_aad(namespace, session_id), sealed)
        if plaintext is None:
            return None
        try:
            return _session_from(session_id, json.loads(plaintext))
        except (CertificateError, ValueError, KeyError, TypeError):
            return None


def _aad(namespace: str, session_id: bytes) -> bytes:
    return namespace.encode() + b"\x00" + session_id


def _index(certs: list[Certificate], cert: Certificate | None) -> int:
    return -1 if cert is None else certs.index(cert)


def _session_from(session_id: bytes, doc: dict[str, Any]) -> TLCPSession:
    certs = tuple(Certificate.from_der(b64decode(c, validate=True)) for c in doc["certs"])
    master_secret = bytes.fromhex(doc["ms"])
    if len(master_secret) != 48:
        raise ValueError("master secret must be 48 bytes")
    sni = doc["sni"]
    if sni is not None and not isinstance(sni, str):
        raise TypeError("sni")

    def pick(index: int) -> Certificate | None:
        if not isinstance(index, int) or not -1 <= index < len(certs):
            raise ValueError("certificate index")
        return None if index < 0 else certs[index]

    return TLCPSession(
        session_id=session_id,
        cipher_suite=CipherSuite(doc["suite"]),
        master_secret=master_secret,
        server_name=sni,
        peer_certificates=certs,
        peer_sign_cert=pick(doc["sign"]),
        peer_enc_cert=pick(doc["enc"]),
        created_at=dt.datetime.fromtimestamp(float(doc["created"]), dt.UTC),
    )


def client_hello_session_id(data: bytes) -> bytes | None:
    """The session ID of the TLCP ClientHello at the start of ``data`` (a record, possibly cut short).

    ``None`` when there is none to look up: not enough bytes yet, not a handshake record carrying a
    ClientHello, or an empty or over-long ID (the engine itself rejects malformed hellos)."""
    if len(data) <= _SESSION_ID_OFFSET or data[0] != 0x16 or data[5] != 0x01:
        return None
    length = data[_SESSION_ID_OFFSET - 1]
    if not 0 < length <= _MAX_SESSION_ID or len(data) < _SESSION_ID_OFFSET + length:
        return None
    return bytes(data[_SESSION_ID_OFFSET : _SESSION_ID_OFFSET + length])


class SharedSessionCache(SessionCache):
    """The engine's LRU, written through to a shared backend and filled from it by :meth:`prefetch`."""

    def __init__(
        self,
        backend: SessionBackend,
        sealer: SessionSealer,
        namespace: str,
        *,
        max_size: int = 1024,
        lifetime: dt.timedelta = dt.timedelta(hours=2),
        timeout: float = 0.2,
    ) -> None:
        super().__init__(max_size=max_size, lifetime=lifetime)
        self.backend = backend
        self.sealer = sealer
        self.namespace = namespace
        self.timeout = timeout
        self.fetched = 0
        self._writes: set[asyncio.Task[None]] = set()

    def key(self, session_id: bytes) -> str:
        return f"{self.namespace}:{session_id.hex()}"

    def put(self, session: TLCPSession) -> None:
        super().put(session)
        sealed = self.sealer.seal(self.namespace, session)
        task = asyncio.get_running_loop().create_task(
            self._store(self.key(session.session_id), sealed, self.lifetime.total_seconds())
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _store(self, key: str, sealed: bytes, ttl: float) -> None:
        try:
            async with asyncio.timeout(self.timeout * 5):
                await self.backend.store(key, sealed, ttl)
        except Exception as exc:  # any backend failure only costs a later full handshake
            log.warning("session store write failed", reason=type(exc).__name__, detail=str(exc)[:200])

    async def fetch(self, session_id: bytes) -> bool:
        """Bring ``session_id`` into the local cache from the backend; whether it is there now."""
        now = dt.datetime.now(dt.UTC)
        if super().get(session_id, now) is not None:
            return True
        try:
            async with asyncio.timeout(self.timeout):
                sealed = await self.backend.fetch(self.key(session_id))
        except Exception as exc:  # resumption is an optimisation; fall back to a full handshake
            log.warning("session store read failed", reason=type(exc).__name__, detail=str(exc)[:200])
            return False
        if sealed is None:
            return False
        session = self.sealer.open(self.namespace, session_id, sealed)
        if session is None:
            log.warning(
                "session store entry refused", reason="unauthentic_or_malformed", key=self.key(session_id)
            )
            return False
        super().put(session)
        self.fetched += 1
        return super().get(session_id, now) is not None

    async def prefetch(self, sock: socket.socket) -> None:
        """Peek the ClientHello on ``sock`` and fetch its offered session, if any (nothing consumed)."""
        session_id = await _peek_session_id(sock)
        if session_id is not None:
            await self.fetch(session_id)

    async def drain_writes(self) -> None:
        """Wait for background writes (tests, shutdown)."""
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)


async def _peek_session_id(sock: socket.socket, attempts: int = 5) -> bytes | None:
    """The offered session ID, peeked; a hello split over segments gets a few short waits."""
    for _ in range(attempts):
        try:
            data = sock.recv(_SESSION_ID_OFFSET + _MAX_SESSION_ID, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            data = b""
        except OSError:
            return None
        if data[:1] not in (b"", b"\x16"):
            return None
        if len(data) > _SESSION_ID_OFFSET and len(data) >= _SESSION_ID_OFFSET + data[_SESSION_ID_OFFSET - 1]:
            return client_hello_session_id(data)
        await asyncio.sleep(0.002)
    return None


# -- TLS 1.3-SM ticket keys -----------------------------------------------------------------------

#: After a failed store read, seal with a key of our own and ask the store again this much later.
_TICKET_KEY_RETRY = dt.timedelta(seconds=10)
_TICKET_KEY_AAD = b"smgate tls13 ticket key\x00"
_CLIENT_CHAIN_AAD = b"smgate tls13 client chain\x00"
_RECORD_HEADER = 5
_MAX_RECORD = 5 + (1 << 14)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SharedTicketKeys(SessionTicketKeys):
    """TLS 1.3-SM ticket keys (and resumable client chains) shared through the session store.

    :meth:`prepare` is the listener's step before the engine reads a ClientHello: it brings the
    keys up to date once per rotation period and, with ``client_chains``, fetches the client chain
    the offered ticket resumes when this process does not hold it. The engine's side stays
    synchronous: it seals and opens with whatever keys are installed.
    """

    def __init__(
        self,
        backend: SessionBackend,
        sealer: SessionSealer,
        namespace: str,
        *,
        rotation_interval: dt.timedelta,
        ticket_lifetime: dt.timedelta,
        timeout: float = 0.2,
        client_chains: bool = False,
        clock: Callable[[], dt.datetime] = _utcnow,
        random: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        super().__init__(rotation_interval=rotation_interval, ticket_lifetime=ticket_lifetime)
        self.backend = backend
        self.sealer = sealer
        self.namespace = namespace
        self.timeout = timeout
        self.client_chains = client_chains
        self._clock = clock
        self._random = random
        self._periods_read: set[int] = set()
        self._refresh_at = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._writes: set[asyncio.Task[None]] = set()
        self._refreshing = asyncio.Lock()  # a burst of handshakes at a period's start reads the store once
        #: keys installed from the store, and client chains fetched from it (for tests and stats)
        self.keys_installed = 0
        self.chains_fetched = 0

    # keys

    async def prepare(self, sock: socket.socket) -> None:
        """Before a handshake: keys up to date, and the offered ticket's client chain at hand."""
        now = self._clock()
        if now >= self._refresh_at:
            async with self._refreshing:
                if now >= self._refresh_at:
                    await self.refresh(now)
        if self.client_chains:
            identity = _peek_psk_identity(sock)
            if identity is not None:
                await self._fetch_client_chain(identity, now)

    async def refresh(self, now: dt.datetime) -> None:
        """Install the store's keys of the current and next period and of those whose tickets live on."""
        period, start = sealing_period(now, self.rotation_interval)
        lookback = math.ceil(self.ticket_lifetime / self.rotation_interval)
        wanted = [period, period + 1, *range(period - 1, period - lookback - 1, -1)]
        self._periods_read = {index for index in self._periods_read if index >= period - lookback}
        for index in wanted:
            if index in self._periods_read:
                continue
            try:
                async with asyncio.timeout(self.timeout):
                    key = await self._read_key(index, create=index >= period)
            except Exception as exc:  # the store is optional: seal with our own key meanwhile
                log.warning("ticket key store read failed", reason=type(exc).__name__, detail=str(exc)[:200])
                self._refresh_at = now + _TICKET_KEY_RETRY
                return
            self._periods_read.add(index)
            if key is not None and self.install(key, now):
                self.keys_installed += 1
        self._refresh_at = start + self.rotation_interval

    async def _read_key(self, period: int, *, create: bool) -> TicketKey | None:
        seconds = self.rotation_interval.total_seconds()
        seals_from = dt.datetime.fromtimestamp(period * seconds, dt.UTC)
        store_key = f"{self.namespace}:tls13-ticket-key:{int(seconds)}:{period}"
        aad = _TICKET_KEY_AAD + store_key.encode()
        if create:
            ttl = (seals_from + self.rotation_interval + self.ticket_lifetime - self._clock()).total_seconds()
            fresh = TicketKey.generate(seals_from, self._random)
            sealed = await self.backend.add(
                store_key, self.sealer.seal_value(aad, fresh.name + fresh.secret), ttl
            )
        else:
            sealed = await self.backend.fetch(store_key)
        if sealed is None:
            return None
        material = self.sealer.open_value(aad, sealed)
        if material is None or len(material) != KEY_NAME_LENGTH + 16:
            log.warning("session store entry refused", reason="unauthentic_or_malformed", key=store_key)
            return None
        return TicketKey(material[:KEY_NAME_LENGTH], material[KEY_NAME_LENGTH:], seals_from)

    # client chains

    def _chain_key(self, digest: bytes) -> str:
        return f"{self.namespace}:tls13-client-chain:{digest.hex()}"

    def remember_client_chain(self, chain: Sequence[Certificate]) -> bytes:
        known = super().remember_client_chain(chain)
        store_key = self._chain_key(known)
        plaintext = b"".join(len(c.der).to_bytes(3, "big") + c.der for c in chain)
        sealed = self.sealer.seal_value(_CLIENT_CHAIN_AAD + store_key.encode(), plaintext)
        ttl = (self.rotation_interval + self.ticket_lifetime).total_seconds()
        task = asyncio.get_running_loop().create_task(self._store(store_key, sealed, ttl))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return known

    async def _store(self, key: str, sealed: bytes, ttl: float) -> None:
        try:
            async with asyncio.timeout(self.timeout * 5):
                await self.backend.store(key, sealed, ttl)
        except Exception as exc:  # only costs a full handshake on another process
            log.warning("session store write failed", reason=type(exc).__name__, detail=str(exc)[:200])

    async def _fetch_client_chain(self, ticket: bytes, now: dt.datetime) -> None:
        state = self.open(ticket, now)
        if state is None or not state.client_chain_digest or self.client_chain(state.client_chain_digest):
            return
        store_key = self._chain_key(state.client_chain_digest)
        try:
            async with asyncio.timeout(self.timeout):
                sealed = await self.backend.fetch(store_key)
        except Exception as exc:  # a full handshake re-authenticates the client
            log.warning("session store read failed", reason=type(exc).__name__, detail=str(exc)[:200])
            return
        if sealed is None:
            return
        plaintext = self.sealer.open_value(_CLIENT_CHAIN_AAD + store_key.encode(), sealed)
        chain = _chain_from(plaintext) if plaintext is not None else None
        if chain is None or SessionTicketKeys.remember_client_chain(self, chain) != state.client_chain_digest:
            log.warning("session store entry refused", reason="unauthentic_or_malformed", key=store_key)
            return
        self.chains_fetched += 1

    async def drain_writes(self) -> None:
        """Wait for background writes (tests, shutdown)."""
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)


def _chain_from(plaintext: bytes) -> tuple[Certificate, ...] | None:
    buf = Buffer(plaintext)
    chain: list[Certificate] = []
    try:
        while not buf.eof():
            chain.append(Certificate.from_der(buf.pull_bytes(int.from_bytes(buf.pull_bytes(3), "big"))))
    except (BufferReadError, CertificateError, ValueError):
        return None
    return tuple(chain) or None


def client_hello_psk_identity(record: bytes) -> bytes | None:
    """The first PSK identity (a ticket) offered by the TLS 1.3 ClientHello record ``record``.

    ``None`` when there is none or the hello does not fit in this one record (the engine itself
    rejects malformed hellos; this is only a look-ahead)."""
    if len(record) < _RECORD_HEADER or record[0] != 0x16:
        return None
    length = int.from_bytes(record[3:5], "big")
    if len(record) < _RECORD_HEADER + length:
        return None
    try:
        hello = pull_client_hello(Buffer(record[_RECORD_HEADER : _RECORD_HEADER + length]))
        psk_data = hello.extension(ExtensionType.PRE_SHARED_KEY)
        return pull_offered_psks(psk_data).identities[0].identity if psk_data is not None else None
    except (BufferReadError, TLS13Alert, ValueError, IndexError):
        return None


def _peek_psk_identity(sock: socket.socket) -> bytes | None:
    """The offered ticket, peeked (the sniffer has already waited for the whole ClientHello record)."""
    try:
        return client_hello_psk_identity(sock.recv(_MAX_RECORD, socket.MSG_PEEK))
    except (BlockingIOError, InterruptedError, OSError):
        return None


# -- the process-wide store ------------------------------------------------------------------------

_store: tuple[SessionBackend, SessionSealer, SessionStoreConfig] | None = None


def configure_session_store(
    config: SessionStoreConfig | None, key: bytes | None, runtime_dir: Path | None
) -> None:
    """Set up this process's backend (``serve`` calls it once); ``None``: per-process caches only.

    ``key`` is the supervisor's per-run key, used when the config names no ``key_file``. A ``host``
    store needs the supervisor's runtime directory: a lone process has no one to share with."""
    global _store
    if config is None or (config.backend == "host" and runtime_dir is None):
        _store = None
        return
    sealer = SessionSealer(load_session_key(config.key_file) if config.key_file is not None else _need(key))
    if config.backend == "redis":
        assert config.redis is not None
        backend: SessionBackend = RedisSessionBackend(config.redis, config.prefix)
    else:
        assert runtime_dir is not None
        backend = SqliteSessionBackend(runtime_dir / "tlcp-sessions.sqlite3")
    _store = (backend, sealer, config)


def _need(key: bytes | None) -> bytes:
    if key is None:
        raise ValueError("session_store without key_file needs the supervisor's key")
    return key


def load_session_key(path: Path) -> bytes:
    """16 raw bytes, or 32 hex digits (optionally with a trailing newline)."""
    raw = path.read_bytes()
    if len(raw) == 16:
        return raw
    text = raw.strip()
    if len(text) == 32:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise ValueError(f"{path}: an SM4 key is 16 raw bytes or 32 hex digits")


def session_cache_for(namespace: str, max_size: int) -> SessionCache:
    """The cache a TLCP listener's engine uses: shared when a store is configured, else its own LRU."""
    if _store is None:
        return SessionCache(max_size=max_size)
    backend, sealer, config = _store
    timeout = config.redis.timeout if config.redis is not None else 0.2
    return SharedSessionCache(
        backend,
        sealer,
        namespace,
        max_size=max_size,
        lifetime=dt.timedelta(seconds=config.lifetime),
        timeout=timeout,
    )


def ticket_keys_for(
    namespace: str,
    *,
    rotation_interval: dt.timedelta,
    ticket_lifetime: dt.timedelta,
    client_chains: bool,
) -> SessionTicketKeys:
    """The ticket keys a TLS 1.3-SM listener uses: shared when a store is configured, else its own."""
    if _store is None:
        return SessionTicketKeys(rotation_interval=rotation_interval, ticket_lifetime=ticket_lifetime)
    backend, sealer, config = _store
    return SharedTicketKeys(
        backend,
        sealer,
        namespace,
        rotation_interval=rotation_interval,
        ticket_lifetime=ticket_lifetime,
        timeout=config.redis.timeout if config.redis is not None else 0.2,
        client_chains=client_chains,
    )


async def close_session_store() -> None:
    global _store
    if _store is not None:
        await _store[0].close()
        _store = None
