"""Ticket keys shared between servers: installed `TicketKey`s seal in their period, open everywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tls.tls13 import SessionTicketKeys
from tls.tls13.tickets import TicketKey, sealing_period

from .conftest import SeededRandom
from .test_tickets import state

HOUR = timedelta(hours=1)
T0 = datetime(2027, 6, 1, 10, 20, tzinfo=UTC)  # inside the period that starts at 10:00


def ring() -> SessionTicketKeys:
    return SessionTicketKeys(rotation_interval=HOUR, ticket_lifetime=2 * HOUR)


def test_sealing_periods_are_counted_from_the_unix_epoch() -> None:
    index, start = sealing_period(T0, HOUR)
    assert start == datetime(2027, 6, 1, 10, tzinfo=UTC)
    assert index == int(start.timestamp()) // 3600
    assert sealing_period(start, HOUR) == (index, start)
    assert sealing_period(start - timedelta(microseconds=1), HOUR)[0] == index - 1


def test_a_ticket_sealed_by_one_server_opens_on_another_sharing_the_key() -> None:
    random = SeededRandom(1)
    _, start = sealing_period(T0, HOUR)
    shared = TicketKey.generate(start, random)
    first, second = ring(), ring()
    assert first.install(shared, T0) and second.install(shared, T0)
    assert not first.install(shared, T0)  # already there
    ticket = first.seal(state(issued_at=T0), T0, random)
    assert ticket[:16] == shared.name and len(first) == 1  # sealed with the shared key, none of its own
    assert second.open(ticket, T0 + timedelta(minutes=5)) == state(issued_at=T0)
    assert ring().open(ticket, T0) is None  # a server without the key: a full handshake


def test_own_key_only_while_no_shared_key_is_current() -> None:
    random = SeededRandom(2)
    keys = ring()
    own_ticket = keys.seal(state(issued_at=T0), T0, random)  # nothing shared yet: a key of its own
    _, start = sealing_period(T0, HOUR)
    shared = TicketKey.generate(start, random)
    keys.install(shared, T0)
    later = T0 + timedelta(minutes=1)
    assert keys.seal(state(issued_at=later), later, random)[:16] == shared.name
    assert keys.open(own_ticket, later) is not None  # its own tickets still open


def test_next_periods_key_opens_early_and_seals_on_time() -> None:
    random = SeededRandom(3)
    _, start = sealing_period(T0, HOUR)
    current, following = TicketKey.generate(start, random), TicketKey.generate(start + HOUR, random)
    ahead, behind = ring(), ring()
    for keys in (ahead, behind):
        keys.install(current, T0)
        keys.install(following, T0)
    assert behind.seal(state(issued_at=T0), T0, random)[:16] == current.name
    skewed = start + HOUR + timedelta(seconds=1)  # a server whose clock is past the boundary
    ticket = ahead.seal(state(issued_at=T0), skewed, random)
    assert ticket[:16] == following.name
    assert behind.open(ticket, T0) is not None


def test_shared_keys_retire_with_their_tickets() -> None:
    random = SeededRandom(4)
    _, start = sealing_period(T0, HOUR)
    old = TicketKey.generate(start - 3 * HOUR, random)
    keys = ring()
    keys.install(TicketKey.generate(start, random), T0)
    keys.install(old, T0)  # sealed until start - 2h, its tickets expired by start: dropped at once
    assert not keys.has_key(old.name) and len(keys) == 1


def test_ticket_key_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="16-byte name"):
        TicketKey(b"short", bytes(16), T0)
