"""Each processor dict-in, dict-out; then the assembled pipeline."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.typing import EventDict

from audit.format import GENESIS, MAC_TAIL_BYTES, split_sealed
from audit.ids import uuid7_timestamp_ms
from audit.processors import (
    CANONICAL,
    EMIT_NS,
    LINE,
    ContextAdder,
    HmacChain,
    Redactor,
    build_processors,
    canonicalise,
    format_timestamp,
    run_processors,
)
from tls.crypto import SM2PrivateKey, hmac_sm3

KEY = bytes(range(32))
REDACTION_KEY = b"r" * 32


def _mac_is_over_the_line(line: bytes, key: bytes = KEY) -> bool:
    """Format 2: the MAC covers the stored line up to its ``,"mac":"`` member."""
    return hmac_sm3(key, line[:-MAC_TAIL_BYTES]).hex() == json.loads(line)["mac"]


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


def test_redact_query_parameters_of_request_targets_like_headers() -> None:
    redactor = Redactor(
        REDACTION_KEY, hash_paths=["query.token", "query.Account"], drop_paths=["query.debug"]
    )
    target = "/pay?token=a%20b&page=2&DEBUG=1&account=42&flag&session_password=x&token=c+d"
    out = redactor(None, "emit", {"event": "http.request", "path": target})
    hashed = "hmac-sm3:" + hmac_sm3(REDACTION_KEY, b"a b").hex()
    again = "hmac-sm3:" + hmac_sm3(REDACTION_KEY, b"c d").hex()
    account = "hmac-sm3:" + hmac_sm3(REDACTION_KEY, b"42").hex()
    assert out["path"] == f"/pay?token={hashed}&page=2&account={account}&flag&token={again}"
    decision = redactor(None, "emit", {"event": "route.decision", "path": "/x?debug=1"})
    assert decision["path"] == "/x"
    certificate = redactor(None, "emit", {"event": "cert.loaded", "path": "/etc/c.pem?token=1"})
    assert certificate["path"] == "/etc/c.pem?token=1"  # a file name, not a request target


def test_redact_every_query_parameter_with_a_wildcard() -> None:
    out = Redactor(REDACTION_KEY, hash_paths=["query.*"])(
        None, "emit", {"event": "http.request", "path": "/a?x=1&y=&z"}
    )
    empty = "hmac-sm3:" + hmac_sm3(REDACTION_KEY, b"").hex()
    assert out["path"] == f"/a?x=hmac-sm3:{hmac_sm3(REDACTION_KEY, b'1').hex()}&y={empty}&z"


def test_redact_leaves_none_alone() -> None:
    out = Redactor(REDACTION_KEY, hash_paths=["sni"])(None, "emit", {"sni": None})
    assert out == {"sni": None}


def test_add_context_sets_time_ids_and_sequence() -> None:
    adder = ContextAdder(instance="gw-1", pid=4242, next_seq=7)
    emit_ns = 1_764_000_000_123_456_789
    first = adder(
        None,
        "emit",
        {
            "event": "conn.open",
            EMIT_NS: emit_ns,
            "seq": 999,
            "prev": "x",
            "mac": "y",
            "signature": "z",
            "format": 9,
        },
    )
    assert "prev" not in first and "mac" not in first and "signature" not in first
    assert first["format"] == 2
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


def test_chain_links_prev_and_macs_the_line_up_to_its_mac_member() -> None:
    chain = HmacChain(KEY)
    first = chain(None, "emit", {"event": "x", CANONICAL: b'{"seq":1}'})
    assert first["prev"] == GENESIS.hex()
    assert first[LINE].startswith(b'{"seq":1,"prev":"' + b"00" * 32 + b'","mac":"')
    assert first["mac"] == hmac_sm3(KEY, b'{"seq":1,"prev":"' + b"00" * 32 + b'"').hex()
    second = chain(None, "emit", {"event": "x", CANONICAL: b'{"seq":2}'})
    assert second["prev"] == first["mac"]
    assert chain.prev.hex() == second["mac"]
    assert _mac_is_over_the_line(second[LINE])


def test_chain_signs_checkpoints_between_link_and_mac() -> None:
    private_key = SM2PrivateKey.generate()

    class Signer:
        def sign(self, data: bytes) -> bytes:
            return private_key.sign(data)

    chain = HmacChain(KEY, signer=Signer())
    plain = chain(None, "emit", {"event": "conn.open", CANONICAL: b'{"seq":1}'})
    assert "signature" not in plain and split_sealed(plain[LINE]).signed_input is None
    checkpoint = chain(None, "emit", {"event": "audit.checkpoint", CANONICAL: b'{"seq":2}'})
    sealed = split_sealed(checkpoint[LINE])
    assert sealed.signed_input == b'{"seq":2,"prev":"' + plain["mac"].encode() + b'"'
    assert sealed.signature_b64 == checkpoint["signature"]
    assert sealed.signature is not None and sealed.signed_input is not None
    private_key.public_key().verify(sealed.signature, sealed.signed_input)
    assert _mac_is_over_the_line(checkpoint[LINE])


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
    assert record["seq"] == 1 and record["prev"] == GENESIS.hex() and record["format"] == 2
    assert _mac_is_over_the_line(out[LINE])
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
    assert _mac_is_over_the_line(out[LINE])
    assert split_sealed(out[LINE]).prev_hex == GENESIS.hex()


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
    assert _mac_is_over_the_line(out[LINE])
