"""The optimised processor pipeline against a straightforward reference computation.

The reference is written from the specification only: ``json.dumps`` with the canonical options (ASCII
form for lone surrogates), the documented conversions for non-JSON values, ``repr`` plus ``audit_error``
for unserialisable fields, and a fresh ``cryptography`` HMAC-SM3 per record over the stored line up to
its ``mac`` member (format 2: the canonical body with ``"prev"`` appended).
Every canonical byte, MAC and line of the pipeline must equal it, for flat gateway-like events (shapes
repeat with changing value types, as memoised per-shape state sees them) and for nested and odd inputs.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import json
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.typing import EventDict

from audit.canonical import canonical_bytes, to_jsonable
from audit.format import GENESIS
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

KEY = bytes(range(32))
REDACTION_KEY = b"r" * 32
CONTEXT_FIELDS = ("ts", "id", "instance", "pid", "seq", "format")


class Colour(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class Mode(enum.StrEnum):
    FAST = "fa\u00e9st"


class Ratio(float):
    pass


class Opaque:
    """Not serialisable; a stable ``repr`` so the reference and the pipeline agree on the fallback."""

    def __repr__(self) -> str:
        return "Opaque()"


class Backwards(str):
    """A ``str`` subclass that sorts in reverse: ``json`` with ``sort_keys`` follows its ``__lt__``."""

    def __lt__(self, other: object) -> bool:
        return str.__gt__(self, other)  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        return str.__lt__(self, other)  # type: ignore[operator]

    __hash__ = str.__hash__


# --------------------------------------------------------------------------------------------- reference


def reference_default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return to_jsonable(value)


def reference_canonical(record: Mapping[str, Any]) -> bytes:
    options: dict[str, Any] = {
        "sort_keys": True,
        "separators": (",", ":"),
        "allow_nan": False,
        "default": reference_default,
    }
    text = json.dumps(record, ensure_ascii=False, **options)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, ensure_ascii=True, **options).encode("ascii")


def reference_linked(prev: bytes, canonical: bytes) -> bytes:
    """The canonical body with its ``prev`` member: what the MAC covers (and a signature, if any)."""
    return canonical[:-1] + b',"prev":"' + prev.hex().encode() + b'"'


def reference_mac(prev: bytes, canonical: bytes) -> bytes:
    ctx = crypto_hmac.HMAC(KEY, hashes.SM3())
    ctx.update(reference_linked(prev, canonical))
    return ctx.finalize()


def reference_body(fields: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The public fields the pipeline must have canonicalised (fields are redaction-neutral here)."""
    body = {
        key: value
        for key, value in fields.items()
        if key[:1] != "_" and key not in ("prev", "signature", "mac")
    }
    body.update({name: context[name] for name in CONTEXT_FIELDS})
    try:
        reference_canonical(body)
    except (TypeError, ValueError) as exc:

        def lenient(value: object) -> Any:
            try:
                converted = to_jsonable(value)
                reference_canonical({"value": converted})
            except (TypeError, ValueError):
                return repr(value)
            return converted

        body = {key: lenient(value) for key, value in body.items()}
        body["audit_error"] = f"unserialisable field: {exc}"
    return body


def check_against_reference(
    events: list[dict[str, Any]], processors: Callable[[], list[Any]] | None = None
) -> None:
    """Run ``events`` through a fresh pipeline and compare every output byte with the reference; where
    the pipeline raises (an int too long for ``repr``, a cycle), the reference must raise the same error."""
    pipeline = (processors or default_processors)()
    prev = GENESIS
    for index, fields in enumerate(events):
        emit_ns = 1_764_000_000_123_456_789 + index * 1_234_567
        try:
            out = run_processors(pipeline, {**fields, EMIT_NS: emit_ns})
        except (TypeError, ValueError, RecursionError) as exc:  # e.g. a cycle: to_jsonable recurses
            context = {"ts": "", "id": "", "instance": "gw", "pid": 7, "seq": index + 1, "format": 2}
            with pytest.raises(type(exc)) as expected:
                reference_canonical(reference_body(fields, context))
            if not isinstance(exc, RecursionError):  # its message names where the limit struck
                assert str(expected.value) == str(exc)
            continue
        assert out["ts"] == format_timestamp(emit_ns)
        parsed_id = uuid.UUID(out["id"])
        assert str(parsed_id) == out["id"] and parsed_id.version == 7 and parsed_id.variant == uuid.RFC_4122
        assert uuid7_timestamp_ms(parsed_id) == emit_ns // 1_000_000
        assert (out["instance"], out["pid"], out["seq"], out["format"]) == ("gw", 7, index + 1, 2)
        canonical = reference_canonical(reference_body(fields, out))
        mac = reference_mac(prev, canonical)
        line = reference_linked(prev, canonical) + b',"mac":"' + mac.hex().encode() + b'"}'
        assert out[CANONICAL] == canonical
        assert out["prev"] == prev.hex()
        assert out["mac"] == mac.hex()
        assert out[LINE] == line
        prev = mac


def default_processors() -> list[Any]:
    return build_processors(
        redactor=Redactor(REDACTION_KEY),
        context=ContextAdder(instance="gw", pid=7),
        chain=HmacChain(KEY),
    )


# --------------------------------------------------------------------------------------------- strategies


def not_secret(name: str) -> bool:
    """Names redaction leaves alone (the Redactor always drops these; its output is tested elsewhere)."""
    lowered = name.lower()
    markers = ("secret", "password", "private_key", "passphrase", "psk", "key_block", "audit_key")
    return not any(marker in lowered for marker in markers)


#: names that never trigger redaction (no secret markers) but cover sorting, escaping and non-ASCII
NAMES = st.sampled_from(
    [
        "attempt",
        "bytes_sent",
        "cluster",
        "conn_id",
        "duration_ms",
        "event",
        "host",
        "method",
        "path",
        "status",
        "upstream",
        "verdict",
        "Zeta",
        "a b",
        'quo"te',
        "back\\slash",
        "pct%s",
        "{brace}",
        "\u00e9t\u00e9",
        "\u2603",
        "\U0001f600",
        "ctl\x01",
        "_internal",
        "seq",
        "id",
        "prev",
        "mac",
        "signature",
        "format",
    ]
)
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)  # lone surrogates too
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(4400, 4500).map(lambda digits: -(10**digits))  # beyond the int -> str limit: both raise
    | st.floats()  # NaN and infinities: the error path
    | ANY_TEXT
    | st.sampled_from([Colour.RED, Level.HIGH, Mode.FAST, Ratio(2.5), Ratio(math.nan), Opaque()])
    | st.binary(max_size=6)
    | st.datetimes(timezones=st.just(dt.UTC))
    | st.datetimes()  # naive: an error
    | st.uuids()
    | st.ip_addresses()
)
PLAIN = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
)
NESTED = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.frozensets(st.integers(0, 9), max_size=3)
        | st.dictionaries(st.text(max_size=6).filter(not_secret), children, max_size=3)
    ),
    max_leaves=8,
)


# --------------------------------------------------------------------------------------------- tests


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(NAMES, PLAIN, min_size=1, max_size=14), min_size=1, max_size=6))
def test_flat_events_match_reference(events: list[dict[str, Any]]) -> None:
    """Flat events over a small name pool: shapes repeat with other value types (bool after int, None
    after str, ...), which per-shape memos (redaction plans, internal-key checks) must not confuse."""
    check_against_reference(events)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(NAMES, NESTED, max_size=8), min_size=1, max_size=4))
def test_nested_and_odd_events_match_reference(events: list[dict[str, Any]]) -> None:
    check_against_reference(events)


GATEWAY_ROUTE = {
    "attempt": 1,
    "cluster": "echo",
    "codec": "http1",
    "conn_id": "1",
    "event": "route.decision",
    "method": "GET",
    "path": "/anything",
    "reason": "forward",
    "request_id": "1-1",
    "route": "all",
    "upstream": "127.0.0.1:38891",
    "verdict": "allow",
}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"attempt": True},
        {"attempt": Level.HIGH},
        {"attempt": 10**5000},
        {"attempt": 1.5},
        {"upstream": None},
        {"upstream": Mode.FAST},
        {"upstream": 7},
        {"path": "/caf\u00e9"},
        {"path": "/\udcff"},
        {"duration_ms": 1.25},
        {"duration_ms": math.nan},
        {"duration_ms": -math.inf},
        {"duration_ms": Ratio(1.0)},
        {"duration_ms": Ratio(math.inf)},
        {"duration_ms": 3},
        {"reason": {"b": [1, {"z": None, "a": True}], "a": b"\x00"}},
        {"reason": Opaque()},
        {"reason": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)},
        {"reason": ipaddress.ip_address("2001:db8::1")},
        {"_private": "dropped"},
        {"prev": "caller", "mac": "caller"},
    ],
)
def test_gateway_shape_with_changed_values_matches_reference(changes: dict[str, Any]) -> None:
    """One gateway event shape, first plain, then with one value of another kind."""
    check_against_reference([GATEWAY_ROUTE, {**GATEWAY_ROUTE, **changes}, GATEWAY_ROUTE])


def test_circular_value_fails_as_the_reference_does() -> None:
    loop: dict[str, Any] = {"x": 1}
    loop["self"] = loop
    check_against_reference([GATEWAY_ROUTE, {**GATEWAY_ROUTE, "reason": loop}])


def test_deep_nesting_raises_a_catchable_error_like_json() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    record = {**GATEWAY_ROUTE, "reason": deep}
    with pytest.raises(RecursionError):
        json.dumps(record, sort_keys=True)
    with pytest.raises(RecursionError):
        canonical_bytes(record)
    with pytest.raises(RecursionError):
        canonicalise(None, "emit", record)


@pytest.mark.parametrize(
    "record",
    [
        {Backwards("a"): 1, Backwards("b"): 2},  # sorts in reverse: json follows __lt__
        {"b": 1, Backwards("a"): 2},
        {"a": 1},
        {},
        {"b": 2, "a": 1, "c": {3: "x", 1: "y"}},  # int keys: the Redactor rejects them, json does not
        {"k": Level.HIGH, "s": Mode.FAST, "f": Ratio(0.5), "t": True, "n": None},
    ],
)
def test_canonical_bytes_matches_reference_for_odd_keys_and_shapes(record: dict[Any, Any]) -> None:
    for _ in range(2):  # second round: after any per-shape state the first left
        assert canonical_bytes(record) == reference_canonical(record)


def test_str_subclass_keys_sort_as_json_sorts_them() -> None:
    plain = {"a": 1, "b": 2}
    assert canonical_bytes(plain) == b'{"a":1,"b":2}'
    backwards: dict[str, int] = {Backwards("a"): 1, Backwards("b"): 2}
    assert canonical_bytes(backwards) == reference_canonical(backwards) == b'{"b":2,"a":1}'


def test_chain_continues_from_an_externally_set_prev() -> None:
    chain = HmacChain(KEY)
    chain.prev = bytes([7]) * 32
    out = chain(None, "emit", {CANONICAL: b'{"a":1}'})
    mac = reference_mac(bytes([7]) * 32, b'{"a":1}')
    assert out[LINE] == b'{"a":1,"prev":"' + (b"07" * 32) + b'","mac":"' + mac.hex().encode() + b'"}'
    assert chain.prev == mac and out["prev"] == "07" * 32
    for not_a_body in (b"{}", b"[]"):
        with pytest.raises(ValueError, match="JSON object"):
            chain(None, "emit", {CANONICAL: not_a_body})


def test_redacted_fields_match_reference() -> None:
    redactor = Redactor(REDACTION_KEY, hash_paths=["headers.authorization", "client_addr"])
    processors = build_processors(
        redactor=redactor, context=ContextAdder(instance="gw", pid=7), chain=HmacChain(KEY)
    )
    out = run_processors(
        processors,
        {
            "event": "http.request",
            "client_addr": "192.0.2.1:4",
            "headers": {"Authorization": "Bearer x", "user-agent": "t"},
            "password": "p",
            EMIT_NS: 10**18,
        },
    )

    def hashed(text: str) -> str:
        ctx = crypto_hmac.HMAC(REDACTION_KEY, hashes.SM3())
        ctx.update(text.encode())
        return "hmac-sm3:" + ctx.finalize().hex()

    body: EventDict = {
        "event": "http.request",
        "client_addr": hashed("192.0.2.1:4"),
        "headers": {"Authorization": hashed("Bearer x"), "user-agent": "t"},
        **{name: out[name] for name in CONTEXT_FIELDS},
    }
    assert out[CANONICAL] == reference_canonical(body)


def test_the_comparison_can_fail() -> None:
    """A pipeline that writes unsorted JSON, or MACs without ``prev``, is caught."""

    def unsorted(logger: object, method: str, event_dict: EventDict) -> EventDict:
        event_dict.pop(EMIT_NS, None)
        public = {key: value for key, value in event_dict.items() if key[:1] != "_"}
        text = json.dumps(public, separators=(",", ":"), ensure_ascii=False)
        return {**public, CANONICAL: text.encode()}

    class NoPrev(HmacChain):
        def __call__(self, logger: object, method: str, event_dict: EventDict) -> EventDict:
            out = super().__call__(logger, method, event_dict)
            ctx = crypto_hmac.HMAC(KEY, hashes.SM3())
            ctx.update(event_dict[CANONICAL])
            out["mac"] = ctx.finalize().hex()
            return out

    def broken_canonical() -> list[Any]:
        return [Redactor(REDACTION_KEY), ContextAdder(instance="gw", pid=7), unsorted, HmacChain(KEY)]

    def broken_chain() -> list[Any]:
        return [Redactor(REDACTION_KEY), ContextAdder(instance="gw", pid=7), canonicalise, NoPrev(KEY)]

    for broken in (broken_canonical, broken_chain):
        with pytest.raises(AssertionError):
            check_against_reference([{"b": 1, "a": 2}], broken)
