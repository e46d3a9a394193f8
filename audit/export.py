"""Export verified audit records for a SIEM or a reviewer: JSON lines or CSV, filtered by time and type.

Records come from every chain of a trail (each worker's), verified first (the caller may override),
and are merged by time (``ts``, then instance and ``seq``). JSON lines keep every record whole. CSV is
one table per event type, because the same field name means different things in different events
(``path`` is an HTTP request target in ``http.request`` and a certificate file in ``cert.loaded``):
each table has the common columns, that type's columns (nested certificate fields as
``cert.subject``...), ``extra`` with any other fields as canonical JSON, and ``mac``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from audit.canonical import canonical_bytes
from audit.sinks.file import parse_record
from audit.trail import Chain, TrailReport, discover, verify_trail
from audit.verify import RecordCallback
from tls.crypto import SM2PublicKey

COMMON_COLUMNS = ("ts", "instance", "seq", "event", "id", "pid")
_CERT = ("subject", "issuer", "serial", "fingerprint_sm3", "not_after")
_CERT_EVENT = ("purpose", "path", *(f"cert.{name}" for name in _CERT))

#: the columns of each event type's table, after :data:`COMMON_COLUMNS`
EVENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "listener.start": ("listener", "address"),
    "listener.stop": ("listener", "reason"),
    "config.reload": ("result", "source", "generation", "error", "diff"),
    "cert.loaded": (*_CERT_EVENT, "generation"),
    "cert.expiring": (*_CERT_EVENT, "days_left"),
    "cert.expired": (*_CERT_EVENT, "days_left"),
    "conn.open": ("conn_id", "listener", "client_addr", "local_addr"),
    "handshake.ok": (
        "conn_id",
        "protocol",
        "cipher_suite",
        "sni",
        "alpn",
        "resumed",
        "duration_ms",
        *(f"client_cert.{name}" for name in _CERT[:4]),
    ),
    "handshake.fail": ("conn_id", "alert", "alert_code", "alert_direction", "reason", "error"),
    "route.decision": (
        "conn_id",
        "request_id",
        "method",
        "path",
        "route",
        "cluster",
        "upstream",
        "verdict",
        "reason",
    ),
    "http.request": (
        "conn_id",
        "request_id",
        "method",
        "host",
        "path",
        "status",
        "bytes_received",
        "bytes_sent",
        "duration_ms",
        "route",
        "cluster",
        "upstream",
    ),
    "upstream.fail": ("conn_id", "cluster", "upstream", "reason"),
    "conn.close": ("conn_id", "bytes_received", "bytes_sent", "duration_ms", "reason"),
    "admin.action": ("action", "actor", "result", "target"),
    "audit.gap": (
        "reason",
        "cause",
        "after_seq",
        "lost_count",
        "lost_at_least",
        "lost_by_event",
        "first_lost_ts",
        "last_lost_ts",
        "torn_bytes",
    ),
    "audit.checkpoint": (
        "reason",
        "from_seq",
        "to_seq",
        "count",
        "records_sm3",
        "head_mac",
        "prev_checkpoint_seq",
        "sig_alg",
        "signer",
        "signature",
    ),
}
#: chain plumbing no table repeats (``mac`` has its own column; ``prev`` is the previous line's ``mac``)
_NOT_EXPORTED = frozenset({"prev", "mac", "format"})


def parse_time(text: str) -> dt.datetime:
    """RFC 3339 / ISO 8601; a value without an offset is taken as UTC."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


class Selection:
    """Which records an export keeps: ``since <= ts < until`` and, if given, only ``events``."""

    def __init__(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        events: Sequence[str] = (),
    ) -> None:
        self.since = since
        self.until = until
        self.events = frozenset(events)

    def __call__(self, record: dict[str, Any]) -> bool:
        if self.events and record.get("event") not in self.events:
            return False
        if self.since is None and self.until is None:
            return True
        try:
            ts = parse_time(str(record.get("ts")))
        except ValueError:
            return False
        return (self.since is None or ts >= self.since) and (self.until is None or ts < self.until)


def merge_by_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every chain's records in one time line: by ``ts``, then instance, then ``seq``."""
    return sorted(
        records, key=lambda record: (str(record.get("ts")), str(record.get("instance")), record["seq"])
    )


def collect(
    paths: Sequence[Path],
    *,
    key: bytes | None,
    public_key: SM2PublicKey | None,
    selection: Selection,
    live: bool = False,
    partial: bool = False,
) -> tuple[TrailReport, list[dict[str, Any]]]:
    """Verify the trail under ``paths`` and gather the selected records of all its chains, by time."""
    selected: list[dict[str, Any]] = []

    def keep(_path: Path, _line: int, record: dict[str, Any], _raw: bytes) -> None:
        if selection(record):
            selected.append(record)

    def per_chain(_chain: Chain) -> RecordCallback:
        return keep

    report = verify_trail(
        paths, key=key, public_key=public_key, live=live, partial=partial, on_record=per_chain
    )
    return report, merge_by_time(selected)


def collect_unverified(paths: Sequence[Path], *, selection: Selection) -> list[dict[str, Any]]:
    """Every parseable record of every chain under ``paths`` that ``selection`` keeps, by time, whether
    or not the trail verifies."""
    records: list[dict[str, Any]] = []
    for chain in discover(paths).chains:
        for path in chain.files:
            with path.open("rb") as handle:
                for raw in handle:
                    record = parse_record(raw.rstrip(b"\n"))
                    if record is not None and selection(record):
                        records.append(record)
    return merge_by_time(records)


def write_jsonl(records: Sequence[dict[str, Any]], out: TextIO) -> None:
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _lookup(record: dict[str, Any], column: str) -> Any:
    """``column`` of ``record``; ``a.b`` is member ``b`` of object ``a``."""
    if column in record:
        return record[column]
    outer, _, inner = column.partition(".")
    nested = record.get(outer)
    return nested.get(inner) if inner and isinstance(nested, dict) else None


def columns_for(event_type: str) -> tuple[str, ...]:
    """The header of ``event_type``'s table."""
    return (*COMMON_COLUMNS, *EVENT_COLUMNS.get(event_type, ()), "extra", "mac")


def write_csv(event_type: str, records: Sequence[dict[str, Any]], out: TextIO) -> None:
    """One table: ``event_type``'s records (others in ``records`` are skipped)."""
    columns = columns_for(event_type)
    named = set(COMMON_COLUMNS) | set(EVENT_COLUMNS.get(event_type, ())) | _NOT_EXPORTED
    nested = {column.partition(".")[0] for column in columns if "." in column}
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        if record.get("event") != event_type:
            continue
        extra = {
            key: value
            for key, value in record.items()
            if key not in named and not (key in nested and _fully_tabulated(record[key], key, columns))
        }
        values = [_cell(_lookup(record, column)) for column in columns[:-2]]
        writer.writerow([*values, canonical_bytes(extra).decode() if extra else "", record.get("mac", "")])


def _fully_tabulated(value: Any, name: str, columns: tuple[str, ...]) -> bool:
    """Whether every member of nested object ``name`` has its own column (else it also goes to extra)."""
    return value is None or (isinstance(value, dict) and all(f"{name}.{key}" in columns for key in value))


def event_types(records: Sequence[dict[str, Any]], selection: Selection) -> list[str]:
    """The tables a CSV export writes: the selected types, else every type present."""
    if selection.events:
        return sorted(selection.events)
    return sorted({str(record.get("event")) for record in records})


def render_jsonl(records: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    write_jsonl(records, buffer)
    return buffer.getvalue()


def render_csv(event_type: str, records: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    write_csv(event_type, records, buffer)
    return buffer.getvalue()
