"""Canonical JSON: how the pipeline writes a record's body.

Canonical form is ``json.dumps`` with sorted keys, no whitespace, non-ASCII characters kept as UTF-8,
and no NaN/Infinity. Values that are not JSON types are converted first by :func:`to_jsonable`.

Format 2 (:mod:`audit.format`) MACs and signs the stored bytes themselves, so nothing depends on a
verifier reproducing this encoding; format 1 did (:mod:`audit.legacy` re-serialises with it).
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import ipaddress
import json
import json.encoder
import uuid
from collections.abc import Mapping
from typing import Any


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


def _dumps_utf8(record: Mapping[str, Any]) -> str:
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


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The canonical encoding of ``record``.

    Non-JSON values are converted as by :func:`to_jsonable` (``str``/``int`` subclasses such as
    ``StrEnum``/``IntEnum`` are written as their plain values), so the canonical form of the parsed line
    is the same bytes. Raises ``TypeError``/``ValueError`` for values that cannot be written (NaN).
    """
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


def b64(data: bytes) -> str:
    """Standard base64 text (used for signatures)."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict inverse of :func:`b64`."""
    return base64.b64decode(text.encode("ascii"), validate=True)
