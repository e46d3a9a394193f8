from __future__ import annotations

import time
import uuid

import pytest

from audit.ids import new_connection_id, uuid7, uuid7_timestamp_ms


def test_uuid7_layout_and_timestamp() -> None:
    now_ns = 1_764_000_000_123_456_789
    value = uuid7(now_ns)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert uuid7_timestamp_ms(value) == now_ns // 1_000_000


def test_uuid7_sorts_by_time_and_is_unique() -> None:
    earlier = uuid7(1_000_000_000_000_000)
    later = uuid7(1_000_000_001_000_000)
    assert str(earlier) < str(later)
    assert len({uuid7(5_000_000) for _ in range(200)}) == 200


def test_uuid7_default_is_now() -> None:
    before = time.time_ns() // 1_000_000
    stamp = uuid7_timestamp_ms(uuid7())
    assert before <= stamp <= time.time_ns() // 1_000_000


def test_uuid7_rejects_negative_time() -> None:
    with pytest.raises(ValueError, match="negative"):
        uuid7(-1)


def test_connection_id_is_uuid7_text() -> None:
    assert uuid.UUID(new_connection_id()).version == 7


def test_uuid7_text_matches_uuid_rendering() -> None:
    from audit.ids import uuid7_text

    text = uuid7_text(1_764_000_000_123_456_789)
    parsed = uuid.UUID(text)
    assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert uuid7_timestamp_ms(parsed) == 1_764_000_000_123
    assert len({uuid7_text(0) for _ in range(1000)}) == 1000
