"""TLCP sessions beyond one process: the SM4-GCM sealer, the ClientHello peek, resumption across two
workers (host store) and across two gateway processes sharing a real redis-server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import redis

from gateway.session_store import SessionSealer, client_hello_session_id, load_session_key
from tests.gateway.conftest import write_config
from tests.gateway.process import GatewayProcess
from tests.gateway.test_tlcp import client_config, gateway_doc, tlcp_listener
from tests.ports import free_port, free_ports
from tls.tlcp import CipherSuite, TLCPConfiguration, TLCPConnection, TLCPSession
from tls.tlcp.aio import tlcp_connect

pytestmark = pytest.mark.xdist_group("supervisor")


def _session(demo_pki, session_id: bytes = b"\x01" * 32) -> TLCPSession:
    client = demo_pki.client_certificate_set()
    return TLCPSession(
        session_id=session_id,
        cipher_suite=CipherSuite.ECC_SM4_GCM_SM3,
        master_secret=secrets.token_bytes(48),
        server_name="localhost",
        peer_certificates=(client.sign_cert, client.enc_cert),
        peer_sign_cert=client.sign_cert,
        peer_enc_cert=client.enc_cert,
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


def test_sealed_sessions_round_trip_and_hide_the_master_secret(demo_pki):
    sealer = SessionSealer(secrets.token_bytes(16))
    session = _session(demo_pki)
    sealed = sealer.seal("listeners[0].tls", session)
    assert session.master_secret not in sealed and session.master_secret.hex().encode() not in sealed
    opened = sealer.open("listeners[0].tls", session.session_id, sealed)
    assert opened == session
    assert sealer.seal("listeners[0].tls", session) != sealed  # a fresh nonce each time


def test_sealed_sessions_refuse_tampering_moves_and_other_keys(demo_pki):
    sealer = SessionSealer(secrets.token_bytes(16))
    session = _session(demo_pki)
    sealed = sealer.seal("a", session)
    for i in (0, 5, 20, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        assert sealer.open("a", session.session_id, bytes(tampered)) is None
    assert sealer.open("b", session.session_id, sealed) is None  # another listener
    assert sealer.open("a", b"\x02" * 32, sealed) is None  # another session ID
    assert SessionSealer(secrets.token_bytes(16)).open("a", session.session_id, sealed) is None
    assert sealer.open("a", session.session_id, sealed[:20]) is None


def test_session_key_file_forms(tmp_path):
    raw = tmp_path / "raw.key"
    raw.write_bytes(b"k" * 16)
    hexed = tmp_path / "hex.key"
    hexed.write_text("00112233445566778899aabbccddeeff\n")
    assert load_session_key(raw) == b"k" * 16
    assert load_session_key(hexed) == bytes.fromhex("00112233445566778899aabbccddeeff")
    (tmp_path / "bad.key").write_text("short")
    with pytest.raises(ValueError, match="16 raw bytes or 32 hex digits"):
        load_session_key(tmp_path / "bad.key")


def test_client_hello_session_id_from_a_real_hello(demo_pki):
    session = _session(demo_pki, b"\x07" * 32)
    conn = TLCPConnection(
        TLCPConfiguration(is_client=True, verify_peer=False, session=session, server_name="localhost")
    )
    conn.start_handshake()
    hello = conn.data_to_send()
    assert client_hello_session_id(hello) == b"\x07" * 32
    assert client_hello_session_id(hello[:50]) is None  # not all of the ID yet
    fresh = TLCPConnection(TLCPConfiguration(is_client=True, verify_peer=False))
    fresh.start_handshake()
    assert client_hello_session_id(fresh.data_to_send()) is None  # nothing offered
    assert client_hello_session_id(b"GET / HTTP/1.1\r\n" * 4) is None


# -- real processes ---------------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path):
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed (Debian package redis-server, listed in .ci/apt-packages)"
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield port, client
    client.close()
    proc.terminate()
    proc.wait(10)


def _tlcp_doc(demo_pki, port: int, session_store: dict, admin_port: int | None = None) -> dict:
    doc = gateway_doc(demo_pki, 9, listener=tlcp_listener(demo_pki, port=port))
    doc["route_configs"][0]["virtual_hosts"][0]["routes"][0] = {
        "name": "ok",
        "direct_response": {"status": 200, "body": "ok"},
    }
    doc["clusters"] = []
    doc["admin"] = {"port": admin_port} if admin_port else None
    doc["session_store"] = session_store
    doc["logging"] = {"format": "json"}
    return doc


async def _handshake(port: int, demo_pki, session: TLCPSession | None = None):
    config = client_config(demo_pki)
    config.session = session
    stream = await tlcp_connect("127.0.0.1", port, config, handshake_timeout=5)
    stream.close()
    return stream


async def _resumed_count(port: int, demo_pki, session: TLCPSession, connections: int) -> int:
    resumed = 0
    for _ in range(connections):
        stream = await _handshake(port, demo_pki, session)
        resumed += stream.handshake.session_resumed
    return resumed


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _host_store_rows(gw: GatewayProcess) -> int:
    """Rows in the supervisor's SQLite store (its runtime directory is in the "supervisor ready" line)."""
    ready = next(json.loads(x) for x in gw.lines if '"supervisor ready"' in x)
    with sqlite3.connect(Path(ready["runtime_dir"]) / "tlcp-sessions.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM sessions").fetchone()[0])


async def test_resumption_across_two_workers(demo_pki, tmp_path):
    port, admin_port = free_ports(2)
    config = write_config(tmp_path / "gw.yaml", _tlcp_doc(demo_pki, port, {"backend": "host"}, admin_port))
    gw = await asyncio.to_thread(
        GatewayProcess, ["serve", str(config), "--workers", "2"], "smgate supervisor ready"
    )
    try:
        first = await _handshake(port, demo_pki)
        assert not first.handshake.session_resumed and first.session is not None
        assert await asyncio.to_thread(_wait, lambda: _host_store_rows(gw) == 1)
        # SO_REUSEPORT spreads 12 connections over both workers; each must find the session.
        assert await _resumed_count(port, demo_pki, first.session, 12) == 12
    finally:
        assert await asyncio.to_thread(gw.stop) == 0, gw.output()


async def test_resumption_across_two_gateways_sharing_redis(demo_pki, tmp_path, redis_server):
    redis_port, redis_client = redis_server
    key = tmp_path / "session.key"
    key.write_text(secrets.token_hex(16))
    store = {"backend": "redis", "key_file": str(key), "redis": {"port": redis_port}}
    port_a, port_b = free_ports(2)
    gateways = []
    for name, port in (("a", port_a), ("b", port_b)):
        config = write_config(tmp_path / f"{name}.yaml", _tlcp_doc(demo_pki, port, store))
        gateways.append(await asyncio.to_thread(GatewayProcess, ["serve", str(config)]))
    try:
        first = await _handshake(port_a, demo_pki)
        assert first.session is not None and not first.handshake.session_resumed
        # The store is written in the background after the handshake: wait for that write.
        assert await asyncio.to_thread(_wait, lambda: bool(redis_client.keys("smgate:tlcp:*")))
        assert await _resumed_count(port_b, demo_pki, first.session, 3) == 3
        keys = redis_client.keys("smgate:tlcp:*")
        assert len(keys) == 1 and first.session.session_id.hex() in keys[0].decode()
        value = redis_client.get(keys[0])
        assert first.session.master_secret not in value
        assert first.session.master_secret.hex().encode() not in value

        # An entry someone else wrote (or altered) is refused: a full handshake, and a log line.
        redis_client.set(keys[0], value[:-1] + bytes([value[-1] ^ 1]))
        other = await _handshake(port_a, demo_pki)  # makes a new session on A...
        assert other.session is not None
        assert await asyncio.to_thread(_wait, lambda: len(redis_client.keys("smgate:tlcp:*")) == 2)
        forged = redis_client.keys(f"*{other.session.session_id.hex()}")[0]
        redis_client.set(forged, value)  # ...whose entry is replaced by the other session's sealed bytes
        stream = await _handshake(port_b, demo_pki, other.session)
        assert not stream.handshake.session_resumed
        assert await asyncio.to_thread(gateways[1].wait_for_output, "session store entry refused")
    finally:
        for gw in gateways:
            assert await asyncio.to_thread(gw.stop) == 0, gw.output()


async def test_redis_down_means_full_handshakes_not_failures(demo_pki, tmp_path):
    key = tmp_path / "session.key"
    key.write_bytes(secrets.token_bytes(16))
    store = {"backend": "redis", "key_file": str(key), "redis": {"port": free_port(), "timeout": 0.1}}
    port = free_port()
    config = write_config(tmp_path / "gw.yaml", _tlcp_doc(demo_pki, port, store))
    gw = await asyncio.to_thread(GatewayProcess, ["serve", str(config)])
    try:
        first = await _handshake(port, demo_pki)
        assert first.session is not None
        # The local cache still resumes in this process; the store's failure is only logged.
        assert await _resumed_count(port, demo_pki, first.session, 2) == 2
        assert await asyncio.to_thread(gw.wait_for_output, "session store write failed")
    finally:
        assert await asyncio.to_thread(gw.stop) == 0, gw.output()
