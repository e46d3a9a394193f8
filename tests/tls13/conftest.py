"""Fixtures of the TLS 1.3 (RFC 8998) engine tests: identities, configurations and free ports."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.interop.identities import PKI, TONGSUO_PKI, smgate_demo_pki
from tls.tls13 import ClientAuth, SessionTicketKeys, SM2Credential, TLS13Configuration, TLS13Session


def free_port() -> int:
    """A free TCP port below 32768 (the ephemeral range starts there; see the brief)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def smgate_pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return smgate_demo_pki(tmp_path_factory.mktemp("smgate-pki"))


def server_credential(pki: PKI = TONGSUO_PKI) -> SM2Credential:
    return SM2Credential.from_certificate_set(pki.server_set)


def client_credential(pki: PKI = TONGSUO_PKI) -> SM2Credential:
    return SM2Credential.from_certificate_set(pki.client_set)


def server_config(pki: PKI = TONGSUO_PKI, **overrides: Any) -> TLS13Configuration:
    settings: dict[str, Any] = {
        "is_client": False,
        "credential": server_credential(pki),
        "trust_store": pki.trust_store,
        "client_auth": ClientAuth.NONE,
        "ticket_keys": SessionTicketKeys(),
    }
    settings.update(overrides)
    return TLS13Configuration(**settings)


def client_config(
    pki: PKI = TONGSUO_PKI, *, session: TLS13Session | None = None, **overrides: Any
) -> TLS13Configuration:
    settings: dict[str, Any] = {
        "is_client": True,
        "trust_store": pki.trust_store,
        "server_name": "localhost",
        "session": session,
    }
    settings.update(overrides)
    return TLS13Configuration(**settings)


class SeededRandom:
    """A reproducible random source for the engine (`TLS13Configuration.random`)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def __call__(self, length: int) -> bytes:
        return self._random.randbytes(length)


def fixed_clock(moment: datetime = datetime(2027, 6, 1, tzinfo=UTC)) -> Callable[[], datetime]:
    return lambda: moment


def pump(client: Any, server: Any, *, rounds: int = 20) -> tuple[list[Any], list[Any]]:
    """Shuttle bytes between two sans-I/O connections until both are quiet; (client events, server events)."""
    client_events: list[Any] = []
    server_events: list[Any] = []
    for _ in range(rounds):
        to_server = client.data_to_send()
        if to_server:
            server_events += server.receive_data(to_server)
        to_client = server.data_to_send()
        if to_client:
            client_events += client.receive_data(to_client)
        if not to_server and not to_client:
            break
    return client_events, server_events
