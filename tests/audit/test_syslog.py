"""Syslog sink: RFC 5424 format, octet framing, UDP, TLS, and no loss across a receiver kill/restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncio_dgram
import pytest

from audit.log import AuditLog
from audit.sinks.follower import SinkRecord
from audit.sinks.syslog import format_rfc5424, octet_frame, parse_octet_frames
from audit.verify import verify_logs
from certs.demo import DemoPKI
from tests.audit.conftest import AuditKeys, ConfigFactory, read_records
from tests.conftest import REPO
from tests.ports import free_port


def _json_of(message: bytes) -> dict[str, object]:
    start = message.index(b"] {") + 2
    record: dict[str, object] = json.loads(message[start:])
    return record


def test_rfc5424_message_layout() -> None:
    record = SinkRecord(
        seq=7, event="handshake.fail", ts="2026-11-25T10:00:00.123456Z", pid=321, line=b'{"seq":7}'
    )
    message = format_rfc5424(record, facility=13, hostname="gw1", app_name="smgate", sd_id="smgate@32473")
    assert (
        message
        == b'<108>1 2026-11-25T10:00:00.123456Z gw1 smgate 321 handshake.fail [smgate@32473 seq="7"] {"seq":7}'
    )


def test_octet_framing_round_trip() -> None:
    buffer = bytearray(octet_frame(b"hello") + octet_frame(b"w o r l d") + b"12 partial")
    assert parse_octet_frames(buffer) == [b"hello", b"w o r l d"]
    assert buffer == b"12 partial"
    with pytest.raises(ValueError):
        parse_octet_frames(bytearray(b"x" * 20))


async def test_udp_delivery(make_config: ConfigFactory) -> None:
    receiver = await asyncio_dgram.bind(("127.0.0.1", 0))
    port = receiver.sockname[1]
    log = AuditLog.from_config(
        make_config(sinks=[{"type": "syslog", "transport": "udp", "host": "127.0.0.1", "port": port}])
    )
    await log.start()
    for index in range(20):
        log.emit("conn.open", conn_id=f"c{index}", listener="l", client_addr="192.0.2.1:1")
    received: list[dict[str, object]] = []
    while len(received) < 20:
        data, _addr = await asyncio.wait_for(receiver.recv(), timeout=10)
        received.append(_json_of(data))
    await log.aclose()
    receiver.close()
    assert [record["conn_id"] for record in received] == [f"c{index}" for index in range(20)]


async def test_tls_delivery_verifies_the_receiver(make_config: ConfigFactory, demo_pki: DemoPKI) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(str(demo_pki.ecdsa.server.cert), str(demo_pki.ecdsa.server.key))
    frames: list[bytes] = []
    got_all = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        while data := await reader.read(65536):
            buffer.extend(data)
            frames.extend(parse_octet_frames(buffer))
            if len(frames) >= 30:
                got_all.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    sink = {
        "type": "syslog",
        "transport": "tls",
        "host": "127.0.0.1",
        "port": port,
        "tls": {"ca_file": str(demo_pki.ecdsa.ca.cert), "server_name": "localhost"},
    }
    log = AuditLog.from_config(make_config(sinks=[sink]))
    await log.start()
    for index in range(30):
        log.emit("admin.action", action=f"a{index}", actor="t", result="ok")
    await asyncio.wait_for(got_all.wait(), timeout=15)
    await log.aclose()
    server.close()
    actions = [_json_of(frame).get("action") for frame in frames]
    assert actions[:30] == [f"a{index}" for index in range(30)]
    sink_metrics = log.metrics().sinks[0]
    assert sink_metrics.errors == 0 and sink_metrics.acked_seq == sink_metrics.head_seq


@contextlib.contextmanager
def receiver_process(port: int, out: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.syslog_receiver", str(port), str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def test_tcp_receiver_killed_and_restarted_loses_nothing(
    make_config: ConfigFactory, tmp_path: Path, log_dir: Path, audit_keys: AuditKeys
) -> None:
    port = free_port()  # below the ephemeral range: the restarted receiver must get it back
    out = tmp_path / "received.txt"
    sink = {
        "type": "syslog",
        "name": "siem",
        "transport": "tcp",
        "host": "127.0.0.1",
        "port": port,
        "queue_size": 64,  # small: most of the burst is replayed from the file sink
        "reconnect_initial": 0.05,
        "reconnect_max": 0.2,
    }
    log = AuditLog.from_config(
        make_config(sinks=[sink], shutdown_timeout=30, checkpoint={"every_records": 100})
    )
    total = 3000

    async def burst(start: int, stop: int) -> None:
        for index in range(start, stop):
            log.emit(
                "http.request",
                conn_id="c",
                request_id=f"r{index}",
                method="GET",
                host="h",
                path=f"/{index}",
                status=200,
                bytes_received=0,
                bytes_sent=1,
                duration_ms=0.1,
            )
            if index % 50 == 0:
                await asyncio.sleep(0)

    with receiver_process(port, out) as first:
        await log.start()
        await burst(0, 1000)
        for _ in range(500):  # killed mid-burst: after the sink delivered some, before it delivered all
            if out.exists() and out.read_text():
                break
            await asyncio.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    await burst(1000, 2000)  # receiver down: the sink backs off and falls behind
    await log.flush()
    with receiver_process(port, out):
        await burst(2000, total)
        await log.aclose()
        metrics = log.metrics().sinks[0]
    records = read_records(log_dir)
    received = {int(str(_json_of(line.encode())["seq"])) for line in out.read_text().splitlines()}
    missing = sorted({record["seq"] for record in records} - received)
    assert not missing, f"{len(missing)} records never reached the receiver, first {missing[:5]}"
    assert metrics.reconnects >= 1 and metrics.replayed_from_file > 0
    assert metrics.acked_seq == records[-1]["seq"]
    assert json.loads((log_dir / ".cursors" / "siem.cursor").read_text())["acked_seq"] == records[-1]["seq"]
    assert verify_logs([log_dir], key=audit_keys.key).ok


async def test_restarted_gateway_resumes_from_the_saved_cursor(
    make_config: ConfigFactory, tmp_path: Path, log_dir: Path
) -> None:
    port = free_port()  # below the ephemeral range: the restarted receiver must get it back
    out = tmp_path / "received.txt"
    sink = {
        "type": "syslog",
        "name": "siem",
        "transport": "tcp",
        "host": "127.0.0.1",
        "port": port,
        "reconnect_initial": 0.05,
        "reconnect_max": 0.1,
        "replay_overlap": 0,
    }
    config = make_config(sinks=[sink], shutdown_timeout=0.5)
    with receiver_process(port, out):
        log = AuditLog.from_config(config)
        await log.start()
        log.emit("admin.action", action="one", actor="t", result="ok")
        await log.aclose()
    delivered = len(out.read_text().splitlines())
    log = AuditLog.from_config(config)  # receiver down during this whole run
    await log.start()
    log.emit("admin.action", action="two", actor="t", result="ok")
    await log.aclose()
    with receiver_process(port, out):
        log = AuditLog.from_config(config.model_copy(update={"shutdown_timeout": 10.0}))
        await log.start()
        log.emit("admin.action", action="three", actor="t", result="ok")
        await log.aclose()
    seqs = [int(str(_json_of(line.encode())["seq"])) for line in out.read_text().splitlines()]
    all_seqs = [record["seq"] for record in read_records(log_dir)]
    assert delivered == 2
    assert seqs == all_seqs  # in order, once each: run 2's records came from the file on run 3
