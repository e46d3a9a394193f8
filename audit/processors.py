"""The audit processor pipeline, in structlog's processor shape ``(logger, method, event_dict) -> event_dict``.

:func:`build_processors` fixes the order: ``redact`` -> ``add_context`` (time, ids, sequence, format) ->
``canonicalise`` (sorted keys, UTF-8, no whitespace) -> ``chain`` (link to ``prev``, sign checkpoints,
``mac = HMAC-SM3(key, line up to the mac member)``; :mod:`audit.format`). Every record goes through
that list: caller events, and the gap and checkpoint records the pipeline writes itself. Sinks consume
the ``_line`` the chain step leaves in the event dict. Keys starting with ``_`` are pipeline-internal and
never serialised. Stateful steps (sequence numbering, chaining) are small classes with their state in
plain attributes; the rest are functions.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import unquote_plus

from structlog.typing import EventDict, Processor, WrappedLogger

from audit.canonical import canonical_bytes, to_jsonable
from audit.events import EventType
from audit.format import FORMAT_FIELD, FORMAT_VERSION, GENESIS, MAC_MEMBER, PREV_MEMBER, SIGNATURE_MEMBER
from audit.ids import uuid7_text
from tls.crypto import HMACSM3

assert (FORMAT_FIELD, FORMAT_VERSION) == ("format", 2)  # ContextAdder writes them as literals

#: Field names never written whatever the configuration says (keys and secrets stay out of the log).
ALWAYS_DROPPED = frozenset(
    {
        "password",
        "passphrase",
        "secret",
        "private_key",
        "pre_master_secret",
        "master_secret",
        "session_key",
        "key_block",
        "psk",
        "audit_key",
    }
)
_SECRET_MARKERS = ("secret", "password", "private_key", "passphrase")

#: members the chain step writes after the body; a caller value under these names is removed
CHAIN_MEMBERS = ("prev", "signature", "mac")
EMIT_NS = "_emit_ns"
CANONICAL = "_canonical"
LINE = "_line"
HASH_PREFIX = "hmac-sm3:"
#: the records whose ``path`` is an HTTP request target, so its query string is redacted by ``query.<name>``
REQUEST_TARGET_EVENTS = frozenset({EventType.HTTP_REQUEST.value, EventType.ROUTE_DECISION.value})
QUERY_PREFIX = "query."


def format_timestamp(unix_ns: int) -> str:
    """RFC 3339 UTC with microseconds: ``2026-11-25T10:26:44.123456Z``."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"


@functools.lru_cache(maxsize=4096)
def _name_is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in ALWAYS_DROPPED or any(marker in lowered for marker in _SECRET_MARKERS)


def _is_key_object(value: object) -> bool:
    """Private-key objects (anything exposing raw scalar bytes) are never serialised."""
    return hasattr(value, "scalar_bytes") or hasattr(value, "private_bytes")


#: value types written as they are (no redaction walk, no conversion)
PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
_KEEP, _DROP, _HASH = 0, 1, 2


class Redactor:
    """``redact``: hash (HMAC-SM3 under a redaction key) or drop configured fields; always drop secrets.

    Paths are dotted and case-insensitive (``headers.authorization`` names the ``authorization`` member
    of the ``headers`` field; ``client_addr`` a top-level field). ``query.<name>`` names a parameter of
    the query string of an HTTP request target (the ``path`` of ``http.request`` and ``route.decision``;
    ``query.*`` every parameter): its value is hashed, or the parameter dropped, in place. Parameter
    names are matched percent-decoded and case-insensitively, like header names; query parameters named
    like secrets are always dropped.
    """

    def __init__(
        self, redaction_key: bytes, *, hash_paths: Iterable[str] = (), drop_paths: Iterable[str] = ()
    ):
        self._mac = HMACSM3(redaction_key)
        self.hash_paths = frozenset(path.lower() for path in hash_paths)
        self.drop_paths = frozenset(path.lower() for path in drop_paths)
        self._query = _QueryRedaction(
            hash_names=_query_names(self.hash_paths), drop_names=_query_names(self.drop_paths)
        )
        #: prefix -> field name -> (lower-case path, action)
        self._actions: dict[str, dict[str, tuple[str, int]]] = {}
        self._memo_size = 0
        #: top-level field names (in order) -> the (name, action) pairs that are not "keep" (bounded)
        self._plans: dict[tuple[str, ...], tuple[tuple[str, int], ...]] = {}

    def __repr__(self) -> str:
        return f"Redactor(hash={sorted(self.hash_paths)}, drop={sorted(self.drop_paths)})"

    def hash_value(self, value: object) -> str:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
        return HASH_PREFIX + self._mac.compute(data).hex()

    def _action(self, prefix: str, name: str) -> tuple[str, int]:
        """``(lower-case path, action)`` for field ``name`` under ``prefix``; memoised (bounded)."""
        path = f"{prefix}{name}".lower()
        if path in self.drop_paths or _name_is_secret(name):
            action = _DROP
        else:
            action = _HASH if path in self.hash_paths else _KEEP
        if self._memo_size < 4096:  # header names come from clients: do not grow without bound
            self._actions.setdefault(prefix, {})[name] = (path, action)
            self._memo_size += 1
        return path, action

    def _redact(self, mapping: Mapping[str, Any], prefix: str, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        memo = self._actions.get(prefix) or {}
        for name, value in mapping.items():
            known = memo.get(name)
            path, action = known if known is not None else self._action(prefix, name)
            if action == _KEEP and type(value) in PLAIN_TYPES:
                result[name] = value
            elif action == _DROP or (type(value) is not dict and _is_key_object(value)):
                continue
            elif action == _HASH:
                result[name] = self.hash_value(value) if value is not None else None
            elif isinstance(value, Mapping) and depth < 4:
                result[name] = self._redact(value, f"{path}.", depth + 1)
            else:
                result[name] = value
        return result

    def _plan(self, names: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
        """The top-level fields among ``names`` to drop or hash; memoised per field-name tuple (bounded)."""
        memo = self._actions.get("") or {}
        plan = []
        for name in names:
            known = memo.get(name)
            _, action = known if known is not None else self._action("", name)
            if action != _KEEP:
                plan.append((name, action))
        result = tuple(plan)
        if len(self._plans) < 256:  # callers use a handful of field sets; never grow without bound
            self._plans[names] = result
        return result

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        """Redact ``event_dict``: its top level is changed in place (every caller, like structlog, hands
        the processors a dict of its own); nested mappings are copied, never modified."""
        names = tuple(event_dict)
        plan = self._plans.get(names)
        if plan is None:
            plan = self._plan(names)
        for name, action in plan:
            if action == _DROP:
                del event_dict[name]
            else:
                value = event_dict[name]
                if _is_key_object(value):
                    del event_dict[name]
                elif value is not None:
                    event_dict[name] = self.hash_value(value)
        target = event_dict.get("path")  # redact_query(), inlined: most events have no query string
        if type(target) is str and "?" in target and event_dict.get("event") in REQUEST_TARGET_EVENTS:
            event_dict["path"] = self._query.redact(target, self.hash_value)
        if PLAIN_TYPES.issuperset(map(type, event_dict.values())):
            return event_dict  # the common case: flat fields, nothing else to look at
        for name, value in list(event_dict.items()):
            if type(value) in PLAIN_TYPES:
                continue
            if type(value) is not dict and _is_key_object(value):
                del event_dict[name]
            elif isinstance(value, Mapping):
                event_dict[name] = self._redact(value, f"{name.lower()}.", 1)
        return event_dict

    def redact_query(self, event_dict: EventDict) -> None:
        """Redact the query string of the request target in ``path`` (request events only)."""
        target = event_dict.get("path")
        if type(target) is str and "?" in target and event_dict.get("event") in REQUEST_TARGET_EVENTS:
            event_dict["path"] = self._query.redact(target, self.hash_value)


def _query_names(paths: frozenset[str]) -> frozenset[str]:
    return frozenset(path[len(QUERY_PREFIX) :] for path in paths if path.startswith(QUERY_PREFIX))


class _QueryRedaction:
    """The ``query.<name>`` rules: each ``name=value`` pair of a request target's query string is kept
    byte for byte, has its (percent-decoded) value replaced by its hash, or is removed."""

    def __init__(self, *, hash_names: frozenset[str], drop_names: frozenset[str]) -> None:
        self.hash_names = hash_names
        self.drop_names = drop_names
        self.hash_all = "*" in hash_names
        self.drop_all = "*" in drop_names

    def redact(self, target: str, hash_value: Any) -> str:
        resource, _, query = target.partition("?")
        kept = []
        for pair in query.split("&"):
            raw_name, equals, raw_value = pair.partition("=")
            name = unquote_plus(raw_name).lower()
            if self.drop_all or name in self.drop_names or _name_is_secret(name):
                continue
            if equals and (self.hash_all or name in self.hash_names):
                kept.append(f"{raw_name}={hash_value(unquote_plus(raw_value))}")
            else:
                kept.append(pair)
        return f"{resource}?{'&'.join(kept)}" if kept else resource


class ContextAdder:
    """``add_context``: timestamp and UUIDv7 from the emit time, instance, pid and the sequence number.

    ``next_seq`` is the sequence number the next record gets; recovery sets it from the last record on disk.
    Caller values under ``ts``, ``id``, ``instance``, ``pid``, ``seq`` and ``format`` are replaced, and
    ``prev``/``signature``/``mac`` removed: the pipeline owns those names.
    """

    def __init__(self, *, instance: str, pid: int, next_seq: int = 1) -> None:
        self.instance = instance
        self.pid = pid
        self.next_seq = next_seq
        #: (first nanosecond of the cached second, its text up to the fraction ``...T10:26:44.``)
        self._second: tuple[int, str] = (0, "1970-01-01T00:00:00.")

    def _new_second(self, unix_ns: int) -> tuple[int, str]:
        seconds, nanos = divmod(unix_ns, 1_000_000_000)
        self._second = (unix_ns - nanos, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds)))
        return self._second

    def timestamp(self, unix_ns: int) -> str:
        """:func:`format_timestamp`, with the text up to the second formatted once per second."""
        start, text = self._second
        offset = unix_ns - start
        if not 0 <= offset < 1_000_000_000:
            start, text = self._new_second(unix_ns)
            offset = unix_ns - start
        return text + "%06dZ" % (offset // 1000)  # noqa: UP031 - cheaper than a format spec, per event

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        emit_ns = event_dict.get(EMIT_NS)
        if not isinstance(emit_ns, int):
            emit_ns = time.time_ns()
            event_dict[EMIT_NS] = emit_ns
        if "prev" in event_dict or "signature" in event_dict or "mac" in event_dict:
            for chain_member in CHAIN_MEMBERS:  # the chain step writes these: a caller value is ambiguous
                event_dict.pop(chain_member, None)
        start, text = self._second  # timestamp(), inlined
        offset = emit_ns - start
        if not 0 <= offset < 1_000_000_000:
            start, text = self._new_second(emit_ns)
            offset = emit_ns - start
        event_dict["ts"] = text + "%06dZ" % (offset // 1000)  # noqa: UP031 - see timestamp()
        event_dict["id"] = uuid7_text(emit_ns)
        event_dict["instance"] = self.instance
        event_dict["pid"] = self.pid
        event_dict["seq"] = self.next_seq
        event_dict["format"] = 2  # FORMAT_FIELD: FORMAT_VERSION, as literals (per event: no global lookups)
        self.next_seq += 1
        return event_dict


def _lenient(value: object) -> Any:
    """``value`` as JSON if it serialises on its own, otherwise its ``repr``."""
    try:
        converted = to_jsonable(value)
        canonical_bytes({"value": converted})
    except (TypeError, ValueError):
        return repr(value)
    return converted


_INTERNAL_KEYS: dict[tuple[str, ...], bool] = {}


def _has_internal_keys(names: tuple[str, ...]) -> bool:
    """Whether any of ``names`` starts with ``_``; memoised per field-name tuple (bounded)."""
    known = _INTERNAL_KEYS.get(names)
    if known is None:
        known = any(name[:1] == "_" for name in names)
        if len(_INTERNAL_KEYS) < 256:
            _INTERNAL_KEYS[names] = known
    return known


def canonicalise(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """``canonicalise``: the canonical bytes of the public fields under ``_canonical``.

    A field that cannot be serialised (unknown type, NaN) is written as its ``repr`` and named in
    ``audit_error``, so a gateway bug never costs the record itself.
    """
    emit_ns = event_dict.pop(EMIT_NS, None)
    public: EventDict
    names = tuple(event_dict)
    internal = _INTERNAL_KEYS.get(names)
    if internal is None:
        internal = _has_internal_keys(names)
    if internal:
        public = {key: value for key, value in event_dict.items() if key[:1] != "_"}
    else:
        public = event_dict  # the common case: the dict is the pipeline's own
    try:
        canonical = canonical_bytes(public)
    except (TypeError, ValueError) as exc:
        public = {key: _lenient(value) for key, value in public.items()}
        public["audit_error"] = f"unserialisable field: {exc}"
        canonical = canonical_bytes(public)
    public[CANONICAL] = canonical
    if emit_ns is not None:
        public[EMIT_NS] = emit_ns
    return public


class CheckpointSigning(Protocol):
    """What the chain step needs to sign a checkpoint (:class:`audit.checkpoint.CheckpointSigner`)."""

    def sign(self, data: bytes) -> bytes: ...


class HmacChain:
    """``chain``: seal the record into the chain (format 2, :mod:`audit.format`).

    The canonical body gets ``"prev"`` (the previous record's MAC), a checkpoint then its SM2
    ``"signature"`` over exactly those bytes, and every record ``"mac"``: HMAC-SM3 under the chain key
    over everything before it. Signing happens here, between linking and MAC, because the signature
    covers the link and the MAC covers the signature. Deleting, reordering or editing any record changes
    the input of every later MAC, so verification fails exactly at the first altered position.
    """

    def __init__(self, key: bytes, prev: bytes = GENESIS, signer: CheckpointSigning | None = None) -> None:
        if len(key) < 16:
            raise ValueError("audit key must be at least 16 bytes")
        self._mac = HMACSM3(key)
        self.signer = signer
        self.prev = prev

    @property
    def prev(self) -> bytes:
        """The previous record's MAC (what the next record chains to)."""
        return self._prev

    @prev.setter
    def prev(self, value: bytes) -> None:
        self._prev = value
        self._prev_hex = value.hex()
        self._prev_member = PREV_MEMBER + self._prev_hex.encode() + b'"'
        #: what follows the body in an unsigned line, up to the MAC's hex digits
        self._prev_tail = self._prev_member + MAC_MEMBER

    def __repr__(self) -> str:
        return f"HmacChain(prev={self._prev_hex})"

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        body = event_dict[CANONICAL]
        if len(body) < 3 or body[-1] != 0x7D:  # canonicalise writes objects; a record is never empty
            raise ValueError("a record body is a non-empty JSON object")
        head = body[:-1]
        if self.signer is not None and event_dict.get("event") == _CHECKPOINT:
            signed = head + self._prev_member
            signature = base64.b64encode(self.signer.sign(signed))
            head = b"".join((signed, SIGNATURE_MEMBER, signature, b'"'))
            event_dict["signature"] = signature.decode()
            mac = self._mac.compute(head)
            tail = MAC_MEMBER
        else:  # the MAC input is head + prev member, hashed in two parts rather than joined
            mac = self._mac.compute(head, self._prev_member)
            tail = self._prev_tail
        mac_hex = mac.hex()
        mac_ascii = mac_hex.encode()
        event_dict[LINE] = b"".join((head, tail, mac_ascii, b'"}'))
        event_dict["prev"] = self._prev_hex
        event_dict["mac"] = mac_hex
        self._prev = mac
        self._prev_hex = mac_hex
        self._prev_member = b"".join((PREV_MEMBER, mac_ascii, b'"'))
        self._prev_tail = self._prev_member + MAC_MEMBER
        return event_dict


_CHECKPOINT = EventType.AUDIT_CHECKPOINT.value


def build_processors(*, redactor: Redactor, context: ContextAdder, chain: HmacChain) -> list[Processor]:
    """The order every record goes through: caller events and the pipeline's own gaps and checkpoints."""
    return [redactor, context, canonicalise, chain]


def run_processors(processors: Iterable[Processor], event_dict: EventDict) -> EventDict:
    """Run ``event_dict`` through ``processors`` as structlog would (no logger object is needed)."""
    result: Any = event_dict
    for processor in processors:
        result = processor(None, "emit", result)
    if not isinstance(result, dict):
        raise TypeError("audit processors must return an event dict")
    return result
