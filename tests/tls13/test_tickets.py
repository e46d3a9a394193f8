"""Session ticket sealing: SM4-GCM under rotated keys, lifetimes enforced, anything altered refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.interop.identities import TONGSUO_PKI
from tls.tls13 import CipherSuite, SessionTicketKeys
from tls.tls13.tickets import TicketState

from .conftest import SeededRandom

T0 = datetime(2027, 6, 1, tzinfo=UTC)


def state(issued_at: datetime = T0, lifetime: int = 7200, *, peer_verified: bool = True) -> TicketState:
    return TicketState(
        cipher_suite=CipherSuite.TLS_SM4_CCM_SM3,
        resumption_psk=bytes(range(32)),
        issued_at=issued_at,
        lifetime=lifetime,
        age_add=0x01020304,
        server_name="localhost",
        alpn_protocol="h2",
        client_chain_digest=bytes(32),
        peer_verified=peer_verified,
    )


@pytest.mark.parametrize("peer_verified", [True, False])
def test_round_trip_keeps_every_field(peer_verified: bool) -> None:
    keys = SessionTicketKeys()
    ticket = keys.seal(state(peer_verified=peer_verified), T0, SeededRandom(1))
    assert keys.open(ticket, T0 + timedelta(minutes=5)) == state(peer_verified=peer_verified)


def test_state_with_unknown_flags_or_an_old_version_is_not_a_state() -> None:
    encoded = state().encode()
    assert TicketState.decode(encoded) == state()
    assert TicketState.decode(encoded[:-1] + b"\x02") is None
    assert TicketState.decode(b"\x01" + encoded[1:-1]) is None  # version 1 had no flags


def test_rotation_keeps_old_tickets_until_they_expire() -> None:
    keys = SessionTicketKeys(rotation_interval=timedelta(hours=1), ticket_lifetime=timedelta(hours=2))
    random = SeededRandom(2)
    old = keys.seal(state(), T0, random)
    later = T0 + timedelta(minutes=90)
    new = keys.seal(state(issued_at=later), later, random)
    assert len(keys) == 2 and old[:16] != new[:16]  # a second key took over sealing
    assert keys.open(old, later) is not None and keys.open(new, later) is not None
    assert keys.open(old, T0 + timedelta(hours=2, minutes=1)) is None  # past its lifetime
    much_later = T0 + timedelta(hours=4)
    keys.rotate(much_later, random)
    assert len(keys) == 2  # the first key is retired: nothing it sealed can still be valid


@pytest.mark.parametrize("position", [0, 16, 30, -1])
def test_altered_tickets_are_refused(position: int) -> None:
    keys = SessionTicketKeys()
    ticket = bytearray(keys.seal(state(), T0, SeededRandom(3)))
    ticket[position] ^= 0x40
    assert keys.open(bytes(ticket), T0) is None


def test_foreign_short_and_future_tickets_are_refused() -> None:
    keys = SessionTicketKeys()
    ticket = keys.seal(state(), T0, SeededRandom(4))
    assert SessionTicketKeys().open(ticket, T0) is None
    assert keys.open(ticket[:40], T0) is None
    assert keys.open(b"x" * 100_000, T0) is None
    future = keys.seal(state(issued_at=T0 + timedelta(hours=1)), T0, SeededRandom(5))
    assert keys.open(future, T0) is None


def test_tickets_stay_small_and_chains_are_remembered_by_digest() -> None:
    pki = TONGSUO_PKI
    chains = [
        (pki.client_set.sign_cert, *pki.client_set.chain),
        (pki.server_set.sign_cert,),
        (pki.client_set.enc_cert,),
    ]
    keys = SessionTicketKeys(max_client_chains=2)
    digests = [keys.remember_client_chain(chain) for chain in chains]
    assert len(set(digests)) == 3
    assert keys.client_chain(digests[0]) is None  # least recently used, dropped
    assert keys.client_chain(digests[2]) == chains[2]
    assert len(keys.seal(state(), T0, SeededRandom(6))) < 200  # GmSSL's client copies tickets to 512 bytes


def test_lifetime_limits() -> None:
    with pytest.raises(ValueError):
        SessionTicketKeys(ticket_lifetime=timedelta(days=8))
    with pytest.raises(ValueError):
        SessionTicketKeys(rotation_interval=timedelta(0))
