"""Fixtures for gateway tests: a test PKI, a WebSocket echo upstream and a config writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from websockets.asyncio.server import ServerConnection, serve

from tests.gateway.pki import TestPKI, make_test_pki
from tests.ports import free_port


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def write_config(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def demo_pki(tmp_path_factory: pytest.TempPathFactory):
    """The certs package's demo PKI (SM2 pairs, RSA, ECDSA), made once per session."""
    from certs.demo import ensure_demo_pki

    return ensure_demo_pki(tmp_path_factory.mktemp("demo"))


async def _websocket_echo(ws: ServerConnection) -> None:
    async for message in ws:
        if message == "close-please":
            await ws.close(4000, "asked to")
            return
        await ws.send(message)


@pytest.fixture
async def ws_upstream() -> AsyncIterator[int]:
    """A ``websockets`` server echoing each message (``close-please``: it closes with code 4000)."""
    port = free_port()
    async with serve(_websocket_echo, "127.0.0.1", port):
        yield port
