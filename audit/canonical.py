"""Canonical JSON: the exact bytes the HMAC-SM3 chain and the SM2 checkpoints cover.

Canonical form is ``json.dumps`` with sorted keys, no whitespace, non-ASCII characters kept as UTF-8,
and no NaN/Infinity. Values that are not JSON types are converted first by :func:`to_jsonable`, so the
verifier, which re-parses the stored line, recomputes byte-identical input.

A record line is the canonical object with ``prev`` and ``mac`` appended as its final members
(:func:`seal_line`); :func:`split_line` undoes that for verification.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import ipaddress
import json
import json.encoder
import uuid
from collections.abc import Callable, Mapping
from typing import Any

CHAIN_FIELDS = ("prev", "mac")


def to_jsonable(value: object) -> Any:
    """Convert ``value`` to plain JSON types (str, int, float, bool, None, list, dict with str keys)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [to_jsonable(item) for item in value]
        if isinstance(value, set | frozenset):
            items.sort(key=repr)
        return items
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in audit event")
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    raise TypeError(f"audit field of type {type(value).__name__} is not serialisable")


def _default(value: object) -> Any:
    """``json`` hook for the non-JSON types :func:`to_jsonable` knows (containers recurse in ``json``)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return to_jsonable(value)


_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)


def _dumps_utf8(record: Any) -> str:
    """``json.dumps`` with the canonical options, minus the per-call ``JSONEncoder`` construction.

    It calls the same C encoder ``json.dumps`` uses (built per call: the circular-reference markers are
    per call), so the text is identical; without the C accelerator it is plain ``json.dumps``.
    """
    if _make_c_encoder is None:
        return json.dumps(
            record,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_default,
        )
    encode = _make_c_encoder({}, _default, json.encoder.encode_basestring, None, ":", ",", True, False, False)
    return "".join(encode(record, 0))


_encode_str = json.encoder.encode_basestring


def _value_text(value: Any) -> str:
    """One value exactly as the canonical encoder writes it inside a record (plain values inline; anything
    else through the same C encoder with the same options, so nested members sort and ``_default``
    converts as they would in place). Raises as ``json`` does (NaN, unknown types, circular values)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and value - value == 0:  # not NaN or infinite
        return float.__repr__(value)
    return _dumps_utf8(value)


#: per value type seen when a shape is first compiled: the expression writing slot ``{i}`` (value
#: ``v{i}``). Any other value in that slot goes to :func:`_value_text`, so a record whose value types
#: differ from the first one of its shape (an optional field now ``None``) costs one call, no exception.
#: ``str`` subclasses (``StrEnum`` event types) are written by ``encode_basestring`` as the C encoder
#: writes them; ``bool`` and ``int`` subclasses (``IntEnum``) go to :func:`_value_text`.
_SLOT_EXPRESSIONS = {
    str: "e(v{i}) if isinstance(v{i}, str) else s(v{i})",
    int: "r(v{i}) if type(v{i}) is int else s(v{i})",
    float: "f(v{i}) if type(v{i}) is float and v{i} - v{i} == 0 else s(v{i})",  # NaN, infinities: json
}
_OTHER_SLOT = "s(v{i})"


def _compile_writer(names: tuple[str, ...], types: tuple[type, ...]) -> Callable[[dict[str, Any]], str]:
    """A function writing records of this shape (exact ``str`` field names, in dict order) exactly as the
    sorted C encoder does. The generated source holds only slot numbers: the names and their encoded
    forms are bound as constants, never spliced into code."""
    ranked = sorted(range(len(names)), key=names.__getitem__)
    namespace: dict[str, Any] = {"e": _encode_str, "r": int.__repr__, "f": float.__repr__, "s": _value_text}
    body = []
    pieces = []
    for slot, index in enumerate(ranked):
        namespace[f"k{slot}"] = names[index]
        namespace[f"p{slot}"] = ("{" if slot == 0 else ",") + _encode_str(names[index]) + ":"
        body.append(f"    v{slot} = d[k{slot}]")
        expression = _SLOT_EXPRESSIONS.get(types[index], _OTHER_SLOT)
        pieces += [f"{{p{slot}}}", "{" + expression.format(i=slot) + "}"]
    body.append('    return f"' + "".join(pieces) + '}}"')
    source = "def write(d):\n" + "\n".join(body) + "\n"
    exec(compile(source, "<audit.canonical record writer>", "exec"), namespace)  # noqa: S102
    write: Callable[[dict[str, Any]], str] = namespace["write"]
    return write


#: field names (dict order) -> compiled writer (bounded)
_WRITERS: dict[tuple[str, ...], Callable[[dict[str, Any]], str]] = {}
_WRITERS_MAX = 512
_STR = frozenset({str})


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The canonical encoding of ``record``.

    Non-JSON values are converted as by :func:`to_jsonable` (``str``/``int`` subclasses such as
    ``StrEnum``/``IntEnum`` are written as their plain values), so the canonical form of the parsed line
    is the same bytes. Raises ``TypeError``/``ValueError`` for values that cannot be written (NaN).
    """
    return canonical_bytes_named(record, tuple(record) if type(record) is dict else ())


def canonical_bytes_named(record: Mapping[str, Any], names: tuple[str, ...]) -> bytes:
    """:func:`canonical_bytes` for a caller that already holds ``names == tuple(record)`` (or ``()``).

    A ``dict`` whose names are all exact ``str`` is written by a writer compiled for its names, which
    produces the same text; ``json`` writes anything else, and any record the writer fails on (NaN, an
    unknown type, a cycle), raising exactly as it always did. Exact ``str`` names: a subclass may
    compare, hash or sort unlike its text.
    """
    text = None
    if names and type(record) is dict and _STR.issuperset(map(type, names)):
        writer = _WRITERS.get(names)
        if writer is None and len(_WRITERS) < _WRITERS_MAX:  # shapes are few; never grow without bound
            writer = _WRITERS[names] = _compile_writer(names, tuple(map(type, record.values())))
        if writer is not None:
            try:
                text = writer(record)
            except Exception:  # NaN, unknown type, cycle, too deep: json raises its own error
                text = None
    if text is None:
        text = _dumps_utf8(record)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be UTF-8; the ASCII form is still deterministic for the verifier.
        return json.dumps(
            record,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
            default=_default,
        ).encode("ascii")


def seal_line(canonical: bytes, prev: bytes, mac: bytes) -> bytes:
    """Append the chain members to a canonical object: ``{...,"prev":"<hex>","mac":"<hex>"}``."""
    if not (canonical.startswith(b"{") and canonical.endswith(b"}")):
        raise ValueError("canonical record must be a JSON object")
    separator = b"," if len(canonical) > 2 else b""
    tail = b'"prev":"' + prev.hex().encode() + b'","mac":"' + mac.hex().encode() + b'"}'
    return canonical[:-1] + separator + tail


def split_line(record: Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    """Split a parsed record into (body without chain members, prev hex, mac hex)."""
    body = {key: value for key, value in record.items() if key not in CHAIN_FIELDS}
    prev = record.get("prev")
    mac = record.get("mac")
    if not isinstance(prev, str) or not isinstance(mac, str):
        raise ValueError("record has no prev/mac chain members")
    return body, prev, mac


def b64(data: bytes) -> str:
    """Standard base64 text (used for signatures)."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict inverse of :func:`b64`."""
    return base64.b64decode(text.encode("ascii"), validate=True)
