"""First-record sniffing and refusal of garbage, oversized, truncated and slow first records."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.echo import EchoService
from gateway.listener_filters.sniff import FirstRecord, classify
from tests.gateway.helpers import base_doc, running


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        (b"\x16\x01\x01\x00\x80", FirstRecord.TLCP),
        (b"\x16\x03\x01\x02\x00", FirstRecord.TLS),
        (b"\x16\x03\x03\x00\x40", FirstRecord.TLS),
        (b"GET / ", FirstRecord.PLAIN),
        (b"\x16\x03\x01\xff\xff", FirstRecord.OVERSIZED),
        (b"\x16\x03\x01\x00\x00", FirstRecord.GARBAGE),
        (b"\x16\x09\x09\x00\x10", FirstRecord.GARBAGE),
        (b"\x00\x01\x02\x03\x04", FirstRecord.GARBAGE),
    ],
)
def test_classify(header, kind):
    assert classify(header) is kind


def failures(gw) -> dict[str, float]:
    prefix = "smgate_handshake_failures_total{listener=main,reason="
    return {k[len(prefix) : -1]: v for k, v in gw.stats.as_json().items() if k.startswith(prefix)}


async def _send_and_wait_close(port: int, chunks: list[bytes], pause: float = 0.0) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)
        async with asyncio.timeout(10):
            while await reader.read(1024):
                pass
    except ConnectionError:
        pass
    writer.close()
    return time.monotonic() - started


async def test_bad_first_records_are_closed_with_counted_reasons(pki):
    echo = await EchoService().start()
    doc = base_doc(pki, echo.port, protocols=("tls1.3", "tls1.2"))
    doc["listeners"][0]["handshake_timeout"] = 1.0
    async with running(doc) as gw:
        port = gw.listener_port("main")
        await _send_and_wait_close(port, [b"\x00\x01\x02\x03\x04\x05"])
        await _send_and_wait_close(port, [b"\x16\x03\x01\xff\xff" + b"\x00" * 10])
        await _send_and_wait_close(port, [b"GET / HTTP/1.1\r\n\r\n"])  # plain not allowed here
        await _send_and_wait_close(port, [b"\x16\x03"])  # truncated header, then silence
        await _send_and_wait_close(port, [b"\x16\x03\x01\x01\x00" + b"\x01" * 20])  # truncated hello
        elapsed = await _send_and_wait_close(port, [b"\x16", b"\x03", b"\x01"], pause=0.4)  # slow loris
        assert elapsed < 3.0
        counted = failures(gw)
    await echo.close()
    assert counted["garbage_first_record"] == 1
    assert counted["oversized_first_record"] == 1
    assert counted["protocol_not_allowed"] == 1
    assert counted["handshake_timeout"] >= 2
    assert sum(counted.values()) == 6


async def test_tlcp_hello_refused_when_listener_has_no_tlcp(pki):
    echo = await EchoService().start()
    async with running(base_doc(pki, echo.port)) as gw:
        await _send_and_wait_close(gw.listener_port("main"), [b"\x16\x01\x01\x00\x05\x01\x00\x00\x01\x00"])
        assert failures(gw) == {"protocol_not_allowed": 1.0}
    await echo.close()
