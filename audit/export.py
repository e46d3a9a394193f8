"""Export verified audit records for a SIEM or a reviewer: JSON lines or CSV, filtered by time.

Records are exported only from a log that verifies (the caller may override); the verification
summary goes with the export. CSV has one column per commonly joined field and ``fields`` holding the
rest of the record as canonical JSON, so nothing is lost.
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
from audit.verify import VerifyReport, expand_paths, verify_logs
from tls.crypto import SM2PublicKey

CSV_COLUMNS = (
    "seq",
    "ts",
    "event",
    "id",
    "instance",
    "pid",
    "conn_id",
    "request_id",
    "listener",
    "client_addr",
    "protocol",
    "cipher_suite",
    "sni",
    "route",
    "cluster",
    "upstream",
    "verdict",
    "method",
    "host",
    "path",
    "status",
    "result",
    "reason",
    "mac",
)


def parse_time(text: str) -> dt.datetime:
    """RFC 3339 / ISO 8601; a value without an offset is taken as UTC."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _in_window(record: dict[str, Any], since: dt.datetime | None, until: dt.datetime | None) -> bool:
    if since is None and until is None:
        return True
    try:
        ts = parse_time(str(record.get("ts")))
    except ValueError:
        return False
    return (since is None or ts >= since) and (until is None or ts < until)


def collect(
    paths: Sequence[Path],
    *,
    key: bytes | None,
    public_key: SM2PublicKey | None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    live: bool = False,
    partial: bool = False,
) -> tuple[VerifyReport, list[dict[str, Any]]]:
    """Verify ``paths`` and gather the records with ``since <= ts < until``."""
    selected: list[dict[str, Any]] = []

    def keep(_path: Path, _line: int, record: dict[str, Any], _raw: bytes) -> None:
        if _in_window(record, since, until):
            selected.append(record)

    report = verify_logs(paths, key=key, public_key=public_key, live=live, partial=partial, on_record=keep)
    return report, selected


def collect_unverified(
    paths: Sequence[Path], *, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Every parseable record in ``paths`` (sequence order, time window), whether or not the log verifies."""
    records: list[dict[str, Any]] = []
    for path in expand_paths(paths):
        with path.open("rb") as handle:
            for raw in handle:
                record = parse_record(raw.rstrip(b"\n"))
                if record is not None and _in_window(record, since, until):
                    records.append(record)
    records.sort(key=lambda record: int(record["seq"]))
    return records


def write_jsonl(records: Sequence[dict[str, Any]], out: TextIO) -> None:
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        out.write("\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def write_csv(records: Sequence[dict[str, Any]], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, "fields"])
    for record in records:
        rest = {key: value for key, value in record.items() if key not in CSV_COLUMNS and key != "prev"}
        writer.writerow(
            [*(_cell(record.get(column)) for column in CSV_COLUMNS), canonical_bytes(rest).decode()]
        )


def render(records: Sequence[dict[str, Any]], fmt: str) -> str:
    buffer = io.StringIO()
    if fmt == "jsonl":
        write_jsonl(records, buffer)
    elif fmt == "csv":
        write_csv(records, buffer)
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return buffer.getvalue()
