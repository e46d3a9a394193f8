from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import json

import pytest

from audit.canonical import b64, canonical_bytes, to_jsonable, unb64


class Color(enum.Enum):
    RED = 1


def test_canonical_is_sorted_compact_utf8() -> None:
    assert (
        canonical_bytes({"b": 1, "a": "é", "c": [True, None]}) == '{"a":"é","b":1,"c":[true,null]}'.encode()
    )


def test_canonical_rejects_nan() -> None:
    with pytest.raises(ValueError):
        canonical_bytes({"x": float("nan")})


def test_lone_surrogate_falls_back_to_ascii_deterministically() -> None:
    encoded = canonical_bytes({"sni": "a\udcff"})
    assert encoded == b'{"sni":"a\\udcff"}'
    assert canonical_bytes(json.loads(encoded)) == encoded


def test_to_jsonable_converts_known_types() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    value = to_jsonable(
        {
            "t": moment,
            "b": b"\x01\x02",
            "e": Color.RED,
            "ip": ipaddress.ip_address("::1"),
            "s": {2, 1},
            "tu": (1,),
        }
    )
    assert value == {
        "t": "2026-01-02T03:04:05.000006Z",
        "b": "0102",
        "e": "RED",
        "ip": "::1",
        "s": [1, 2],
        "tu": [1],
    }


def test_to_jsonable_rejects_naive_datetime_and_unknown_objects() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_jsonable(dt.datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="object"):
        to_jsonable(object())


def test_b64_round_trip_and_strictness() -> None:
    assert unb64(b64(b"\x00\xff")) == b"\x00\xff"
    with pytest.raises(ValueError):
        unb64("not base64!")
