"""Each processor dict-in, dict-out; then the assembled pipeline."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.typing import EventDict

from audit.canonical import canonical_bytes, split_line
from audit.ids import uuid7_timestamp_ms
from audit.processors import (
    CANONICAL,
    EMIT_NS,
    GENESIS,
    LINE,
    ContextAdder,
    HmacChain,
    Redactor,
    build_processors,
    canonicalise,
    format_timestamp,
    run_processors,
)
from tls.crypto import HMACSM3, hmac_sm3

KEY = bytes(range(32))
REDACTION_KEY = b"r" * 32


def test_format_timestamp_rfc3339_microseconds() -> None:
    assert format_timestamp(1_764_000_000_123_456_789) == "2025-11-24T16:00:00.123456Z"
    assert format_timestamp(0) == "1970-01-01T00:00:00.000000Z"


def test_redact_hashes_and_drops_configured_paths_case_insensitively() -> None:
    redactor = Redactor(
        REDACTION_KEY, hash_paths=["headers.authorization", "client_addr"], drop_paths=["headers.x-trace"]
    )
    out = redactor(
        None,
        "emit",
        {
            "event": "http.request",
            "client_addr": "10.0.0.1:5000",
            "headers": {"Authorization": "Bearer abc", "X-Trace": "t", "Accept": "*/*"},
        },
    )
    expected_auth = "hmac-sm3:" + hmac_sm3(REDACTION_KEY, b"Bearer abc").hex()
    assert out == {
        "event": "http.request",
        "client_addr": "hmac-sm3:" + hmac_sm3(REDACTION_KEY, b"10.0.0.1:5000").hex(),
        "headers": {"Authorization": expected_auth, "Accept": "*/*"},
    }


def test_redact_always_drops_secrets_and_key_objects() -> None:
    class FakeKey:
        def scalar_bytes(self) -> bytes:
            return b"k" * 32

    out = Redactor(REDACTION_KEY)(
        None,
        "emit",
        {
            "event": "admin.action",
            "password": "p",
            "client_secret": "s",
            "nested": {"master_secret": "m", "ok": 1},
            "key": FakeKey(),
            "kept": "yes",
        },
    )
    assert out == {"event": "admin.action", "nested": {"ok": 1}, "kept": "yes"}


def test_redact_leaves_none_alone() -> None:
    out = Redactor(REDACTION_KEY, hash_paths=["sni"])(None, "emit", {"sni": None})
    assert out == {"sni": None}


def test_add_context_sets_time_ids_and_sequence() -> None:
    adder = ContextAdder(instance="gw-1", pid=4242, next_seq=7)
    emit_ns = 1_764_000_000_123_456_789
    first = adder(None, "emit", {"event": "conn.open", EMIT_NS: emit_ns, "seq": 999, "prev": "x", "mac": "y"})
    assert "prev" not in first and "mac" not in first
    second = adder(None, "emit", {"event": "conn.open", EMIT_NS: emit_ns})
    assert first["ts"] == "2025-11-24T16:00:00.123456Z"
    assert first["instance"] == "gw-1" and first["pid"] == 4242
    assert (first["seq"], second["seq"], adder.next_seq) == (7, 8, 9)
    assert re.fullmatch(r"[0-9a-f-]{36}", first["id"]) and first["id"] != second["id"]
    import uuid

    assert uuid7_timestamp_ms(uuid.UUID(first["id"])) == emit_ns // 1_000_000


def test_canonicalise_produces_canonical_bytes_and_drops_internal_keys() -> None:
    out = canonicalise(None, "emit", {"b": 2, "a": b"\x01", EMIT_NS: 5})
    assert out[CANONICAL] == b'{"a":"01","b":2}'
    assert out[EMIT_NS] == 5 and "_canonical" not in json.loads(out[CANONICAL])


def test_canonicalise_keeps_record_when_a_field_cannot_be_serialised() -> None:
    out = canonicalise(None, "emit", {"event": "conn.open", "weird": object(), "nan": float("nan"), "ok": 1})
    body = json.loads(out[CANONICAL])
    assert body["ok"] == 1 and body["event"] == "conn.open"
    assert body["weird"].startswith("<object object")
    assert body["nan"] == "nan"
    assert body["audit_error"].startswith("unserialisable field")


def test_chain_macs_prev_then_canonical_and_advances() -> None:
    chain = HmacChain(KEY)
    first = chain(None, "emit", {CANONICAL: b'{"seq":1}'})
    assert first["prev"] == GENESIS.hex()
    assert first["mac"] == hmac_sm3(KEY, GENESIS + b'{"seq":1}').hex()
    second = chain(None, "emit", {CANONICAL: b'{"seq":2}'})
    assert second["prev"] == first["mac"]
    assert chain.prev.hex() == second["mac"]
    record = json.loads(second[LINE])
    body, prev, mac = split_line(record)
    assert HMACSM3(KEY).compute(bytes.fromhex(prev), canonical_bytes(body)).hex() == mac


def test_chain_rejects_short_key() -> None:
    import pytest

    with pytest.raises(ValueError, match="16 bytes"):
        HmacChain(b"short")


def test_pipeline_order_and_output_line() -> None:
    processors = build_processors(
        redactor=Redactor(REDACTION_KEY, hash_paths=["sni"]),
        context=ContextAdder(instance="gw", pid=1),
        chain=HmacChain(KEY),
    )
    out = run_processors(processors, {"event": "conn.open", "sni": "example.com", EMIT_NS: 10**18})
    record = json.loads(out[LINE])
    assert record["sni"].startswith("hmac-sm3:")
    assert record["seq"] == 1 and record["prev"] == GENESIS.hex()
    body, _prev, mac = split_line(record)
    assert hmac_sm3(KEY, GENESIS + canonical_bytes(body)).hex() == mac
    assert not any(key.startswith("_") for key in record)


def test_context_timestamp_cache_matches_plain_formatting() -> None:
    adder = ContextAdder(instance="gw", pid=1)
    for emit_ns in (1_764_000_000_000_000_001, 1_764_000_000_999_999_999, 1_764_000_001_000_000_000, 5):
        assert adder.timestamp(emit_ns) == format_timestamp(emit_ns)


def test_redaction_memo_is_bounded_for_client_chosen_header_names() -> None:
    redactor = Redactor(REDACTION_KEY, hash_paths=["headers.authorization"])
    headers = {f"x-h{index}": "v" for index in range(5000)} | {"Authorization": "secret"}
    out = redactor(None, "emit", {"headers": headers})
    assert out["headers"]["Authorization"].startswith("hmac-sm3:")
    assert out["headers"]["x-h4999"] == "v"
    assert sum(len(names) for names in redactor._actions.values()) <= 4096


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    fields=st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda name: not name.startswith("_")),
        json_values,
        max_size=6,
    )
)
def test_stored_line_reverifies_for_arbitrary_field_values(fields: dict[str, object]) -> None:
    processors = build_processors(
        redactor=Redactor(REDACTION_KEY), context=ContextAdder(instance="gw", pid=1), chain=HmacChain(KEY)
    )
    out = run_processors(processors, {**fields, "event": "admin.action", EMIT_NS: 10**18})
    record = json.loads(out[LINE])
    body, prev, mac = split_line(record)
    assert hmac_sm3(KEY, bytes.fromhex(prev) + canonical_bytes(body)).hex() == mac


def test_processors_run_unchanged_under_structlog() -> None:
    import structlog

    class Collector:
        def __init__(self) -> None:
            self.records: list[EventDict] = []

        def msg(self, event_dict: EventDict) -> None:
            self.records.append(event_dict)

    def hand_over(logger: object, method_name: str, event_dict: EventDict) -> tuple[Any, ...]:
        return (event_dict,), {}

    collector = Collector()
    processors = build_processors(
        redactor=Redactor(REDACTION_KEY), context=ContextAdder(instance="gw", pid=1), chain=HmacChain(KEY)
    )
    logger = structlog.wrap_logger(
        collector, processors=[*processors, hand_over], wrapper_class=structlog.BoundLogger
    )
    logger.bind(conn_id="c1").msg("conn.open", listener="l", client_addr="192.0.2.1:1", password="p")
    (out,) = collector.records
    record = json.loads(out[LINE])
    assert record["event"] == "conn.open" and record["conn_id"] == "c1" and "password" not in record
    body, prev, mac = split_line(record)
    assert hmac_sm3(KEY, bytes.fromhex(prev) + canonical_bytes(body)).hex() == mac
