"""TLS 1.3-SM session tickets beyond one process: ticket keys (and resumable client chains) shared
through the session store, by two workers of ``smgate serve`` (host store) and by two gateways
sharing a real redis-server; an unknown or tampered key costs a full handshake, never an error."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import socket
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.session_backends import SqliteSessionBackend
from gateway.session_store import SessionSealer, SharedTicketKeys, client_hello_psk_identity
from tests.gateway.conftest import write_config
from tests.gateway.process import GatewayProcess
from tests.gateway.test_session_store import _wait, redis_server  # noqa: F401 (fixture)
from tests.gateway.test_tls13_sm import _demo_client_credential, _doc, _sm_client, _sm_get
from tests.ports import free_port
from tls.tls13 import CipherSuite, TLS13Configuration, TLS13Connection, TLS13Session
from tls.tls13.tickets import TicketState

pytestmark = pytest.mark.xdist_group("supervisor")

HOUR = dt.timedelta(hours=1)
T0 = dt.datetime(2027, 6, 1, 10, 20, tzinfo=dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _keys(backend, sealer: SessionSealer, clock: Clock, **overrides) -> SharedTicketKeys:
    settings: dict = {"rotation_interval": HOUR, "ticket_lifetime": 2 * HOUR, "clock": clock}
    settings.update(overrides)
    return SharedTicketKeys(backend, sealer, "listeners[0].tls", **settings)


def _state(issued_at: dt.datetime = T0, digest: bytes = b"") -> TicketState:
    return TicketState(
        cipher_suite=CipherSuite.TLS_SM4_GCM_SM3,
        resumption_psk=bytes(32),
        issued_at=issued_at,
        lifetime=7200,
        age_add=7,
        server_name="localhost",
        alpn_protocol=None,
        client_chain_digest=digest,
    )


# -- in one process, on a real SQLite store ----------------------------------------------------------


async def test_two_processes_keys_agree_and_rotate(tmp_path) -> None:
    sealer = SessionSealer(secrets.token_bytes(16))
    clock = Clock()
    first = _keys(SqliteSessionBackend(tmp_path / "s.sqlite3"), sealer, clock)
    second = _keys(SqliteSessionBackend(tmp_path / "s.sqlite3"), sealer, clock)
    await first.refresh(clock.now)
    await second.refresh(clock.now)
    assert (first.keys_installed, second.keys_installed) == (2, 2)  # this period's and the next one's
    ticket = first.seal(_state(), clock.now, secrets.token_bytes)
    assert second.open(ticket, clock.now) == _state()
    assert len(second) == 2  # opened with the shared key: it made none of its own
    # Next period: both seal with the key made early; tickets of the last one still open.
    clock.now = T0 + HOUR
    await first.refresh(clock.now)
    await second.refresh(clock.now)
    later = second.seal(_state(clock.now), clock.now, secrets.token_bytes)
    assert later[:16] != ticket[:16] and first.open(later, clock.now) is not None
    assert first.open(ticket, clock.now) is not None
    # A process started later reads the keys whose tickets may still be valid.
    third = _keys(SqliteSessionBackend(tmp_path / "s.sqlite3"), sealer, clock)
    await third.refresh(clock.now)
    assert third.open(ticket, clock.now) is not None and third.open(later, clock.now) is not None


async def test_tampered_or_foreign_keys_and_a_dead_store_mean_own_keys(tmp_path) -> None:
    clock = Clock()
    path = tmp_path / "s.sqlite3"
    sealer = SessionSealer(secrets.token_bytes(16))
    first = _keys(SqliteSessionBackend(path), sealer, clock)
    await first.refresh(clock.now)
    ticket = first.seal(_state(), clock.now, secrets.token_bytes)
    other_key = _keys(SqliteSessionBackend(path), SessionSealer(secrets.token_bytes(16)), clock)
    await other_key.refresh(clock.now)  # entries sealed under another store key: refused
    assert other_key.keys_installed == 0 and other_key.open(ticket, clock.now) is None
    own = other_key.seal(_state(), clock.now, secrets.token_bytes)
    assert other_key.open(own, clock.now) is not None  # it still issues tickets it resumes itself
    intact = _keys(SqliteSessionBackend(path), sealer, clock)
    await intact.refresh(clock.now)
    assert intact.open(ticket, clock.now) is not None
    with sqlite3.connect(path) as db:
        db.execute("UPDATE sessions SET value = substr(value, 1, length(value) - 1) || x'00'")
    tampered = _keys(SqliteSessionBackend(path), sealer, clock)  # the right store key, altered entries
    await tampered.refresh(clock.now)
    assert tampered.keys_installed == 0 and tampered.open(ticket, clock.now) is None

    class Down:
        async def fetch(self, key: str) -> bytes | None:
            raise ConnectionError("store down")

        async def add(self, key: str, value: bytes, ttl: float) -> bytes | None:
            raise ConnectionError("store down")

    cut_off = _keys(Down(), SessionSealer(secrets.token_bytes(16)), clock)
    await cut_off.refresh(clock.now)
    assert cut_off.open(ticket, clock.now) is None
    assert cut_off.open(cut_off.seal(_state(), clock.now, secrets.token_bytes), clock.now) is not None


async def test_a_burst_of_handshakes_reads_the_store_once_per_key(tmp_path) -> None:
    class Counting:
        """The SQLite store, counting the calls a ticket key ring makes."""

        def __init__(self, inner: SqliteSessionBackend) -> None:
            self.inner = inner
            self.calls = 0

        async def add(self, key: str, value: bytes, ttl: float) -> bytes | None:
            self.calls += 1
            await asyncio.sleep(0.01)  # a store round trip: the other handshakes arrive meanwhile
            return await self.inner.add(key, value, ttl)

        async def fetch(self, key: str) -> bytes | None:
            self.calls += 1
            return await self.inner.fetch(key)

    clock = Clock()
    backend = Counting(SqliteSessionBackend(tmp_path / "s.sqlite3"))
    keys = _keys(backend, SessionSealer(secrets.token_bytes(16)), clock)
    left, right = socket.socketpair()
    with left, right:
        await asyncio.gather(*(keys.prepare(left) for _ in range(20)))
    assert backend.calls == 4  # this period and the next (created), the two before (read)
    assert keys.keys_installed == 2


def test_psk_identity_is_read_from_a_real_client_hello(demo_pki) -> None:
    session = TLS13Session(
        ticket=b"T" * 150,
        resumption_psk=bytes(32),
        cipher_suite=_state().cipher_suite,
        ticket_lifetime=7200,
        ticket_age_add=0,
        received_at=dt.datetime.now(dt.UTC),
        server_name="localhost",
        alpn_protocol=None,
        peer_certificates=(),
    )
    client = TLS13Connection(_sm_client(demo_pki, session=session, verify_peer=False))
    client.start_handshake()
    record = client.data_to_send()
    assert client_hello_psk_identity(record) == b"T" * 150
    assert client_hello_psk_identity(record[:-1]) is None  # cut short: no look-ahead
    fresh = TLS13Connection(_sm_client(demo_pki))
    fresh.start_handshake()
    assert client_hello_psk_identity(fresh.data_to_send()) is None


# -- real processes ---------------------------------------------------------------------------------


def _serve_doc(demo_pki, port: int, session_store: dict | None, client_auth: str = "none") -> dict:
    doc = _doc(demo_pki, client_auth=client_auth)
    doc["listeners"][0]["port"] = port
    doc["listeners"][0]["tls"]["protocols"] = ["tls1.3-sm"]
    doc["clusters"] = []
    doc["route_configs"][0]["virtual_hosts"][0]["routes"] = [
        {"name": "ok", "match": {"prefix": "/"}, "direct_response": {"status": 200, "body": "ok"}}
    ]
    doc["session_store"] = session_store
    doc["logging"] = {"format": "json"}
    return doc


async def _first_session(port: int, configuration: TLS13Configuration) -> TLS13Session:
    status, _, stream = await _sm_get(port, configuration, "/")
    assert status == 200 and not stream.handshake.session_resumed and stream.session is not None
    return stream.session


async def _resumed(
    port: int, configuration: TLS13Configuration, session: TLS13Session, connections: int
) -> list[bool]:
    """Whether each of ``connections`` handshakes offering ``session`` resumed (and still got its 200)."""
    outcomes = []
    for _ in range(connections):
        status, _, stream = await _sm_get(port, replace(configuration, session=session), "/")
        assert status == 200
        outcomes.append(stream.handshake.session_resumed)
    return outcomes


async def _workers_resumptions(demo_pki, tmp_path: Path, session_store: dict | None) -> list[bool]:
    port = free_port()
    tmp_path.mkdir()
    config = write_config(tmp_path / "gw.yaml", _serve_doc(demo_pki, port, session_store))
    gw = await asyncio.to_thread(
        GatewayProcess, ["serve", str(config), "--workers", "2"], "smgate supervisor ready"
    )
    try:
        await asyncio.sleep(0.5)  # both workers listening (the supervisor's line comes when they are)
        configuration = _sm_client(demo_pki)
        session = await _first_session(port, configuration)
        # SO_REUSEPORT spreads 16 connections over both workers.
        return await _resumed(port, configuration, session, 16)
    finally:
        assert await asyncio.to_thread(gw.stop) == 0, gw.output()


async def test_two_workers_resume_each_others_tickets_only_with_a_store(demo_pki, tmp_path) -> None:
    without = await _workers_resumptions(demo_pki, tmp_path / "without", None)
    # Per-process keys: only the connections that land on the issuing worker resume (about half;
    # all 16 on one worker has probability 2^-16).
    assert 0 < sum(without) < 16, without
    with_store = await _workers_resumptions(demo_pki, tmp_path / "with", {"backend": "host"})
    assert all(with_store), with_store


async def test_two_gateways_sharing_redis_resume_with_the_client_identity(
    demo_pki,
    tmp_path,
    redis_server,  # noqa: F811 (the fixture)
) -> None:
    redis_port, redis_client = redis_server
    key = tmp_path / "session.key"
    key.write_text(secrets.token_hex(16))
    store = {"backend": "redis", "key_file": str(key), "redis": {"port": redis_port}}
    ports = free_port(), free_port()
    gateways = []
    for name, port in zip("ab", ports, strict=True):
        doc = _serve_doc(demo_pki, port, store, client_auth="required")
        config = write_config(tmp_path / f"{name}.yaml", doc)
        gateways.append(await asyncio.to_thread(GatewayProcess, ["serve", str(config)]))
    try:
        configuration = _sm_client(demo_pki, _demo_client_credential(demo_pki))
        session = await _first_session(ports[0], configuration)
        assert await asyncio.to_thread(_wait, lambda: bool(redis_client.keys("*tls13-client-chain*")))
        assert await _resumed(ports[1], configuration, session, 2) == [True, True]
        # B resumed with the client chain A verified (the listener requires a verified client).
        ticket_keys = redis_client.keys("smgate:tlcp:*tls13-ticket-key*")
        assert len(ticket_keys) == 2  # this period's and the next period's, nothing per ticket
        for stored in [*ticket_keys, *redis_client.keys("*tls13-client-chain*")]:
            value = redis_client.get(stored)
            assert session.resumption_psk not in value
            redis_client.set(stored, value[:-1] + bytes([value[-1] ^ 1]))
        # A third gateway reading the tampered store: a full handshake, and a log line.
        port_c = free_port()
        config = write_config(
            tmp_path / "c.yaml", _serve_doc(demo_pki, port_c, store, client_auth="required")
        )
        gateways.append(await asyncio.to_thread(GatewayProcess, ["serve", str(config)]))
        assert await _resumed(port_c, configuration, session, 1) == [False]
        assert await asyncio.to_thread(gateways[2].wait_for_output, "session store entry refused")
    finally:
        for gw in gateways:
            assert await asyncio.to_thread(gw.stop) == 0, gw.output()
    refused = [json.loads(line) for line in gateways[2].lines if "session store entry refused" in line]
    assert refused and "tls13-ticket-key" in refused[0]["key"]
