"""What a pending TLS handshake costs the gateway, on stock asyncio and on uvloop.

A client that sends its ClientHello and then nothing keeps a handshake pending until
``handshake_timeout``; thousands of them are a cheap attack. The TLS transport holds only the engine's
state for one (no 256 KB read buffer as asyncio's SSL transport keeps, on either loop), so Python's own
allocations per pending handshake stay small. Measured with tracemalloc in the gateway's process;
OpenSSL's allocations are not Python's and are not counted here.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import tracemalloc
from collections.abc import Callable

import pytest

from gateway.echo import EchoService
from tests.gateway.helpers import base_doc, running
from tests.gateway.test_transport_refusals import client_hello

PENDING = 60
#: Python-heap bytes one pending handshake may hold (the pre-transport gateway held 180-300 KB on
#: stock asyncio).
BOUND = 24 * 1024


async def pending_handshake_bytes(pki) -> float:
    echo = await EchoService().start()
    loop = asyncio.get_running_loop()
    doc = base_doc(pki, echo.port, protocols=("tls1.3", "tls1.2"))
    doc["listeners"][0]["handshake_timeout"] = 30
    hello = client_hello("localhost")
    async with running(doc) as gw:
        port = gw.listener_port("main")

        async def open_pending() -> socket.socket:
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, hello)
            await loop.sock_recv(sock, 65536)  # the server's flight: it now waits for the client's
            return sock

        (await open_pending()).close()  # warm up: caches, first-use allocations
        await asyncio.sleep(0.1)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        clients = [await open_pending() for _ in range(PENDING)]
        await asyncio.sleep(0.2)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert len(gw.connections) == 0  # all still in their handshakes
        for sock in clients:
            sock.close()
    await echo.close()
    return (after - before) / PENDING


def _loops() -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]]:
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [("asyncio", asyncio.new_event_loop)]
    uvloop = pytest.importorskip("uvloop")
    loops.append(("uvloop", uvloop.new_event_loop))
    return loops


@pytest.mark.parametrize(("name", "loop_factory"), _loops())
def test_a_pending_tls_handshake_holds_little_python_memory(pki, name, loop_factory):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        per_handshake = runner.run(pending_handshake_bytes(pki))
    print(f"{name}: {per_handshake:.0f} bytes per pending handshake")
    assert per_handshake < BOUND, f"{name}: {per_handshake:.0f} bytes per pending handshake"


def test_the_client_hello_used_is_a_complete_tls_record():
    hello = client_hello("localhost", version=ssl.TLSVersion.TLSv1_3)
    assert hello[0] == 0x16 and int.from_bytes(hello[3:5], "big") == len(hello) - 5


async def test_pending_handshakes_are_capped_per_listener(pki):
    echo = await EchoService().start()
    doc = base_doc(pki, echo.port, protocols=("tls1.3",))
    doc["listeners"][0]["max_pending_handshakes"] = 2
    doc["listeners"][0]["handshake_timeout"] = 30
    async with running(doc) as gw:
        listener = gw.listeners["main"]
        port = gw.listener_port("main")

        def accepted() -> float:
            return gw.stats.as_json().get("smgate_downstream_connections_total{listener=main}", 0.0)

        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await asyncio.sleep(0.2)
        assert (listener.pending_handshakes, accepted()) == (2, 2)  # the third waits in the accept queue
        silent[0][1].close()  # the first one's handshake ends (peer closed): a slot frees
        for _ in range(100):
            if accepted() == 3:
                break
            await asyncio.sleep(0.05)
        assert (listener.pending_handshakes, accepted()) == (2, 3)
        for _, writer in silent[1:]:
            writer.close()
    await echo.close()
