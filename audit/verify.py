"""Verification of stored audit trails: sequence, HMAC-SM3 chain, checkpoint digests and SM2 signatures.

One chain is the segment files one pipeline wrote (one directory and file prefix; with ``--workers N``
each worker writes its own, under ``worker-<i>/``). :func:`verify_logs` walks one chain in sequence
order and stops at the first problem, naming the file, line, sequence number and reason. With the HMAC
key it checks every MAC (an edit is found at the edited record); with only the signing certificate it
recomputes each checkpoint's ``records_sm3`` and checks its signature (an edit is found at the covering
checkpoint). Deletions, reordering, a missing rotated file and a cut tail are found from ``seq``/``prev``
alone. Declared losses (``audit.gap``) are reported in the summary, not as tampering.
:func:`audit.trail.verify_trail` does this for every chain of a whole instance.

Both record formats are read: format 2 (:mod:`audit.format`, the stored bytes are MACed and signed) and
format 1 (:mod:`audit.legacy`, written before; re-serialised). A chain may switch from 1 to 2 once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit import legacy
from audit.checkpoint import check_signer, verify_signature
from audit.format import FORMAT_FIELD, FORMAT_VERSION, GENESIS, FormatError, split_sealed
from tls.crypto import HMACSM3, SM2PublicKey, SM3Hash

CHECKPOINT = "audit.checkpoint"
GAP = "audit.gap"
_HEX = frozenset("0123456789abcdef")

RecordCallback = Callable[[Path, int, dict[str, Any], bytes], None]
#: what a checkpoint's signature covers, and the signature (DER); both None for other records
_Signed = tuple[bytes | None, bytes | None]


@dataclass(frozen=True)
class Problem:
    """The first bad record: where it is and what is wrong."""

    file: Path
    line: int
    seq: int | None
    reason: str

    def __str__(self) -> str:
        seq = "?" if self.seq is None else str(self.seq)
        return f"{self.file}:{self.line}: seq {seq}: {self.reason}"


@dataclass
class VerifyReport:
    """What verifying one chain found."""

    files: list[Path] = field(default_factory=list)
    records: int = 0
    checkpoints: int = 0
    signatures_verified: int = 0
    macs_verified: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_ts: str | None = None
    last_ts: str | None = None
    declared_gaps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    instances: list[str] = field(default_factory=list)
    #: records per format version (1: before format 2)
    formats: Counter[int] = field(default_factory=Counter)
    #: ``(first, last)`` seq of records after the last checkpoint of a log still being written (--live)
    unsealed_tail: tuple[int, int] | None = None
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problem": None
            if self.problem is None
            else {
                "file": str(self.problem.file),
                "line": self.problem.line,
                "seq": self.problem.seq,
                "reason": self.problem.reason,
            },
            "files": [str(path) for path in self.files],
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "instances": self.instances,
            "formats": {str(version): count for version, count in sorted(self.formats.items())},
            "macs_verified": self.macs_verified,
            "checkpoints": self.checkpoints,
            "signatures_verified": self.signatures_verified,
            "unsealed_tail": None if self.unsealed_tail is None else list(self.unsealed_tail),
            "declared_gaps": self.declared_gaps,
            "notes": self.notes,
            "events": dict(sorted(self.events.items())),
        }


class _Stop(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose member names are unique: parsers differ on which duplicate wins, so a line
    with duplicates could show a reader other values than the ones we checked."""
    result = dict(pairs)
    if len(result) != len(pairs):
        names = [name for name, _ in pairs]
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"duplicate member {duplicate!r}")
    return result


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given; directories contribute their ``*.jsonl`` files (one chain's view: no subdirectories)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(child for child in path.glob("*.jsonl") if child.is_file()))
        else:
            files.append(path)
    return files


def _first_seq(path: Path) -> int:
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("seq"), int):
                return int(record["seq"])
    return 1 << 62


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        yield from enumerate(handle, start=1)


class _Verifier:
    """Walks one chain's records in order (see the module docstring); stops at the first problem."""

    def __init__(
        self,
        *,
        key: bytes | None,
        public_key: SM2PublicKey | None,
        live: bool,
        partial: bool,
        on_record: RecordCallback | None,
    ) -> None:
        self.mac = HMACSM3(key) if key is not None else None
        self.public_key = public_key
        self.live = live or partial
        self.partial = partial
        self.on_record = on_record
        self.report = VerifyReport()
        self.expected_seq: int | None = None
        self.prev_mac: str | None = None
        self.last_event: dict[str, Any] | None = None
        self.format_seen = 0
        # checkpoint range accumulation
        self.range_from: int | None = None
        self.range_count = 0
        self.range_digest = SM3Hash()
        self.range_complete = False  # we saw the range from its first record
        self.last_checkpoint_seq: int | None = None
        # an unsealed end (torn line or missing checkpoint) that only a recovery gap may explain
        self.open_end: Problem | None = None
        self.open_end_torn = 0

    def run(self, files: list[Path]) -> VerifyReport:
        for path in files:
            if not path.is_file():
                self.report.problem = Problem(path, 0, None, "no such audit file")
                return self.report
        ordered = sorted(files, key=_first_seq)
        self.report.files = ordered
        path = ordered[0]
        try:
            for path in ordered:
                self._file(path)
            self._finish(ordered)
        except _Stop as stop:
            self.report.problem = stop.problem
        except OSError as exc:
            self.report.problem = Problem(path, 0, self.expected_seq, f"cannot read: {exc.strerror or exc}")
        return self.report

    def _file(self, path: Path) -> None:
        last_line = 0
        last_record: dict[str, Any] | None = None
        torn_here = False
        for number, raw in _lines(path):
            last_line = number
            if torn_here:
                assert self.open_end is not None
                raise _Stop(self.open_end)  # a torn line followed by more lines in the same file
            if not raw.endswith(b"\n"):
                torn_here = True
                self.open_end = Problem(
                    path,
                    number,
                    self.expected_seq,
                    "truncated record: incomplete last line (cut or torn write)",
                )
                self.open_end_torn = len(raw)
                continue
            line = raw[:-1]
            record = self._parse(path, number, line)
            self._record(path, number, line, record)
            last_record = record
        if last_record is not None and last_record.get("event") != CHECKPOINT and self.open_end is None:
            seq = int(last_record["seq"])
            self.open_end = Problem(
                path,
                last_line + 1,
                seq + 1,
                f"segment ends at seq {seq} without a checkpoint: records after it were cut off",
            )
            self.open_end_torn = 0

    def _parse(self, path: Path, number: int, line: bytes) -> dict[str, Any]:
        try:
            record = json.loads(line, object_pairs_hook=_object_without_duplicates)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            detail = str(exc) if str(exc).startswith("duplicate member") else "not JSON"
            raise _Stop(Problem(path, number, self.expected_seq, f"malformed record: {detail}")) from None
        if not isinstance(record, dict):
            raise _Stop(Problem(path, number, self.expected_seq, "malformed record: not a JSON object"))
        seq = record.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise _Stop(Problem(path, number, self.expected_seq, "malformed record: no valid seq"))
        if not _is_hex64(record.get("prev")) or not _is_hex64(record.get("mac")):
            raise _Stop(Problem(path, number, seq, "malformed record: prev/mac missing or not 32-byte hex"))
        return record

    def _record(self, path: Path, number: int, line: bytes, record: dict[str, Any]) -> None:
        seq: int = record["seq"]
        event = record.get("event")
        self._check_open_end(record)
        self._check_position(path, number, record)
        if record.get(FORMAT_FIELD) is None:
            signed = self._check_format_1(path, number, line, record)
        else:
            signed = self._check_format_2(path, number, line, record)
        if event == CHECKPOINT:
            self._checkpoint(path, number, record, *signed)
        else:
            if self.range_from is None:
                self.range_from = seq
            self.range_count += 1
            self.range_digest.update(line)
            self.range_digest.update(b"\n")
        if event == GAP:
            self.report.declared_gaps.append(
                {
                    key: record.get(key)
                    for key in (
                        "seq",
                        "reason",
                        "cause",
                        "after_seq",
                        "lost_count",
                        "lost_at_least",
                        "first_lost_ts",
                        "last_lost_ts",
                        "torn_bytes",
                    )
                    if key in record
                }
            )
        self._count(record)
        if self.on_record is not None:
            self.on_record(path, number, record, line)

    def _check_open_end(self, record: dict[str, Any]) -> None:
        """A segment that ended unsealed is acceptable only if a recovery gap right after explains it."""
        if self.open_end is None:
            return
        seq: int = record["seq"]
        explained = (
            record.get("event") == GAP
            and record.get("reason") == "unclean_shutdown"
            and record.get("after_seq") == seq - 1
        )
        if self.open_end_torn:
            explained = explained and record.get("torn_bytes") == self.open_end_torn
        if not explained:
            raise _Stop(self.open_end)
        self.open_end = None
        self.open_end_torn = 0

    def _check_position(self, path: Path, number: int, record: dict[str, Any]) -> None:
        """``seq`` follows the previous record's and ``prev`` is its MAC."""
        seq: int = record["seq"]
        if self.expected_seq is None:
            self.range_complete = seq == 1
            if seq == 1 and record["prev"] != GENESIS.hex():
                raise _Stop(
                    Problem(path, number, seq, "first record does not start the chain (prev is not zero)")
                )
            if seq != 1:
                if not self.partial:
                    raise _Stop(
                        Problem(
                            path,
                            number,
                            seq,
                            f"records 1..{seq - 1} are missing: the log does not start at seq 1 "
                            "(first segment removed? use --partial to verify a subset)",
                        )
                    )
                self.report.notes.append(f"verification starts at seq {seq}: earlier records were not given")
        elif seq != self.expected_seq:
            raise _Stop(Problem(path, number, seq, self._sequence_break(record, number)))
        if self.prev_mac is not None and record["prev"] != self.prev_mac:
            raise _Stop(Problem(path, number, seq, f"chain broken: prev is not the mac of seq {seq - 1}"))

    def _sequence_break(self, record: dict[str, Any], number: int) -> str:
        seq: int = record["seq"]
        expected = self.expected_seq
        assert expected is not None
        last_instance = self.last_event.get("instance") if self.last_event is not None else None
        if seq < expected and record.get("instance") != last_instance:
            return (
                f"seq {seq} of instance {record.get('instance')!r} follows seq {expected - 1} of instance"
                f" {last_instance!r}: two chains (one per gateway instance or worker) given as one;"
                " give their directory (or the instance directory) and each is verified on its own"
            )
        if seq < expected:
            return f"out of order: seq {seq} where {expected} was expected (records reordered or duplicated)"
        if number == 1:
            return f"records {expected}..{seq - 1} are missing before this file (a rotated file was removed?)"
        return f"records {expected}..{seq - 1} are missing (deleted lines)"

    def _check_format_1(self, path: Path, number: int, line: bytes, record: dict[str, Any]) -> _Signed:
        """A format-1 record (:mod:`audit.legacy`): its MAC, and what its signature (if any) covers."""
        seq: int = record["seq"]
        if self.format_seen > 1:
            raise _Stop(Problem(path, number, seq, "format 1 record after format 2 records (downgraded)"))
        self.format_seen = 1
        try:
            if self.mac is not None:
                if not legacy.mac_matches(self.mac, record, line):
                    raise _Stop(Problem(path, number, seq, "mac mismatch: record altered (or wrong key)"))
                self.report.macs_verified += 1
            else:
                legacy.mac_input(record, line)  # the canonical-form check alone
        except legacy.LegacyFormatError as exc:
            raise _Stop(Problem(path, number, seq, str(exc))) from None
        if record.get("event") != CHECKPOINT:
            return None, None
        return legacy.signed_input(record), legacy.signature(record)

    def _check_format_2(self, path: Path, number: int, line: bytes, record: dict[str, Any]) -> _Signed:
        """A format-2 record (:mod:`audit.format`): its layout, its MAC, and its signature's input."""
        seq: int = record["seq"]
        if record.get(FORMAT_FIELD) != FORMAT_VERSION:
            raise _Stop(Problem(path, number, seq, f"unsupported record format {record.get(FORMAT_FIELD)!r}"))
        self.format_seen = FORMAT_VERSION
        try:
            sealed = split_sealed(line)
        except FormatError as exc:
            raise _Stop(Problem(path, number, seq, f"malformed record: {exc}")) from None
        if (sealed.prev_hex, sealed.mac_hex, sealed.signature_b64) != (
            record["prev"],
            record["mac"],
            record.get("signature"),
        ):
            raise _Stop(Problem(path, number, seq, "malformed record: members disagree with the sealed tail"))
        if sealed.signed_input is not None and record.get("event") != CHECKPOINT:
            raise _Stop(Problem(path, number, seq, "malformed record: only checkpoints are signed"))
        if self.mac is not None:
            if not self.mac.verify(bytes.fromhex(sealed.mac_hex), sealed.mac_input):
                raise _Stop(Problem(path, number, seq, "mac mismatch: record altered (or wrong key)"))
            self.report.macs_verified += 1
        try:
            return sealed.signed_input, sealed.signature
        except ValueError:
            raise _Stop(Problem(path, number, seq, "malformed record: signature is not base64")) from None

    def _count(self, record: dict[str, Any]) -> None:
        seq: int = record["seq"]
        self.expected_seq = seq + 1
        self.prev_mac = record["mac"]
        self.last_event = record
        report = self.report
        report.records += 1
        report.events[str(record.get("event"))] += 1
        report.formats[int(record.get(FORMAT_FIELD) or 1)] += 1
        instance = record.get("instance")
        if isinstance(instance, str) and instance not in report.instances:
            report.instances.append(instance)
        if report.first_seq is None:
            report.first_seq = seq
            report.first_ts = record.get("ts")
        report.last_seq = seq
        report.last_ts = record.get("ts")

    def _checkpoint(
        self, path: Path, number: int, record: dict[str, Any], signed: bytes | None, signature: bytes | None
    ) -> None:
        seq: int = record["seq"]
        self.report.checkpoints += 1

        def fail(reason: str) -> _Stop:
            return _Stop(Problem(path, number, seq, reason))

        if record.get("head_mac") != record["prev"]:
            raise fail("checkpoint head_mac is not the chain head")
        if record.get("to_seq") != seq - 1:
            raise fail(f"checkpoint to_seq {record.get('to_seq')} is not seq {seq - 1}")
        # A file given on its own starts right after a checkpoint: its first range is still checkable.
        complete = self.range_complete or (
            self.range_from is not None and record.get("from_seq") == self.range_from
        )
        if complete:
            if record.get("from_seq") != self.range_from or record.get("count") != self.range_count:
                raise fail(
                    f"checkpoint covers {record.get('count')} records from seq {record.get('from_seq')}, "
                    f"found {self.range_count} from seq {self.range_from}"
                )
            if record.get("records_sm3") != self.range_digest.digest().hex():
                raise fail(
                    f"records_sm3 mismatch: records {self.range_from}..{seq - 1} were altered after signing"
                )
            if (
                self.last_checkpoint_seq is not None
                and record.get("prev_checkpoint_seq") != self.last_checkpoint_seq
            ):
                raise fail("checkpoint does not link to the previous checkpoint")
        else:
            self.report.notes.append(
                f"checkpoint at seq {seq} covers records before the first one given; its digest was not checked"
            )
        if self.public_key is not None:
            reason = self._signature_problem(record, signed, signature)
            if reason is not None:
                raise fail(reason)
            self.report.signatures_verified += 1
        self.last_checkpoint_seq = seq
        self.range_from = None
        self.range_count = 0
        self.range_digest = SM3Hash()
        self.range_complete = True

    def _signature_problem(
        self, record: dict[str, Any], signed: bytes | None, signature: bytes | None
    ) -> str | None:
        assert self.public_key is not None
        if signed is None or signature is None:
            return "checkpoint is not signed"
        reason = check_signer(record, self.public_key)
        if reason is not None:
            return reason
        if not verify_signature(self.public_key, signature, signed):
            return "checkpoint signature does not verify"
        return None

    def _finish(self, files: list[Path]) -> None:
        if self.report.records == 0:
            raise _Stop(Problem(files[0] if files else Path("-"), 0, None, "no audit records found"))
        if self.open_end is not None:
            if self.live and not self.open_end_torn:
                last_seq = self.report.last_seq
                assert last_seq is not None
                first = self.range_from if self.range_from is not None else last_seq
                self.report.unsealed_tail = (first, last_seq)
                return
            raise _Stop(self.open_end)
        last = self.last_event
        assert last is not None
        if last.get("event") == CHECKPOINT and last.get("reason") != "shutdown" and not self.live:
            raise _Stop(
                Problem(
                    files[-1],
                    sum(1 for _ in _lines(files[-1])) + 1,
                    int(last["seq"]) + 1,
                    f"log ends with a '{last.get('reason')}' checkpoint at seq {last['seq']}, not a shutdown "
                    "checkpoint: later records or segment files are missing (use --live for a running log)",
                )
            )


def verify_logs(
    paths: Sequence[Path],
    *,
    key: bytes | None = None,
    public_key: SM2PublicKey | None = None,
    live: bool = False,
    partial: bool = False,
    on_record: RecordCallback | None = None,
) -> VerifyReport:
    """Verify ONE chain: its segment files (in any order), or its directory (``*.jsonl`` directly in
    it); see the module docstring. For an instance directory with worker chains use
    :func:`audit.trail.verify_trail`.

    ``live``: the log is still being written, so its end need not be sealed by a shutdown checkpoint.
    ``partial``: the files are a subset (e.g. one rotated segment): it may start after seq 1 and end open.
    """
    files = expand_paths(paths)
    if not files:
        report = VerifyReport()
        report.problem = Problem(Path("-"), 0, None, "no audit files given")
        return report
    verifier = _Verifier(key=key, public_key=public_key, live=live, partial=partial, on_record=on_record)
    return verifier.run(files)
