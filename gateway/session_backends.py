"""Where sealed TLCP sessions and TLS 1.3-SM ticket keys live between processes: SQLite on one host,
Redis across hosts.

Both store opaque bytes (already sealed by :class:`gateway.session_store.SessionSealer`) under a
string key with a lifetime (``add`` writes only where no live value is, so that the first of
several servers to make a ticket key wins and the others read its key), and both are optional to
the handshake: a failure is raised to the
cache, which logs it and lets the handshake run in full.

``SqliteSessionBackend`` — a WAL-mode database in the supervisor's private runtime directory (0700),
shared by its workers. Calls are synchronous and short (tens of microseconds on a local file), so
they run on the event loop rather than paying a thread hop; a busy database waits at most 50 ms.
Expired rows are deleted every ``_PURGE_EVERY`` writes.

``RedisSessionBackend`` — ``redis.asyncio`` with ``SET key value PX ttl``/``GET key``; Redis expires
entries itself. The connection pool reconnects after a Redis restart.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.fleet_config import RedisEndpoint

_PURGE_EVERY = 1000


class SqliteSessionBackend:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), timeout=0.05, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL)"
        )
        self._writes = 0

    async def fetch(self, key: str) -> bytes | None:
        row = self._db.execute(
            "SELECT value FROM sessions WHERE key = ? AND expires > ?", (key, time.time())
        ).fetchone()
        return bytes(row[0]) if row is not None else None

    async def store(self, key: str, value: bytes, ttl: float) -> None:
        now = time.time()
        self._db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)", (key, value, now + ttl))
        self._writes += 1
        if self._writes % _PURGE_EVERY == 0:
            self._db.execute("DELETE FROM sessions WHERE expires <= ?", (now,))

    async def add(self, key: str, value: bytes, ttl: float) -> bytes | None:
        now = time.time()
        self._db.execute(
            "INSERT INTO sessions VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE"
            " SET value = excluded.value, expires = excluded.expires WHERE sessions.expires <= ?",
            (key, value, now + ttl, now),
        )
        return await self.fetch(key)

    async def close(self) -> None:
        self._db.close()


class RedisSessionBackend:
    def __init__(self, endpoint: RedisEndpoint, prefix: str) -> None:
        import os

        from redis.asyncio import Redis

        password = os.environ.get(endpoint.password_env) if endpoint.password_env else None
        self.prefix = prefix
        self._redis: Any = Redis(
            host=endpoint.address,
            port=endpoint.port,
            db=endpoint.db,
            password=password,
            socket_timeout=endpoint.timeout,
            socket_connect_timeout=endpoint.timeout,
        )

    async def fetch(self, key: str) -> bytes | None:
        value = await self._redis.get(self.prefix + key)
        return bytes(value) if value is not None else None

    async def store(self, key: str, value: bytes, ttl: float) -> None:
        await self._redis.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))

    async def add(self, key: str, value: bytes, ttl: float) -> bytes | None:
        await self._redis.set(self.prefix + key, value, px=max(1, int(ttl * 1000)), nx=True)
        return await self.fetch(key)

    async def close(self) -> None:
        await self._redis.aclose()
