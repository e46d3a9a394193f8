"""A whole audit trail: every chain under an instance directory, and every other file found there.

``smgate serve --workers N`` gives each worker its own chain (``<directory>/worker-<i>/``); a single
process writes its chain into the directory itself; a directory may hold both after the worker count
changed. :func:`discover` finds every chain (segment files grouped by directory and prefix) and lists
every other file; :func:`verify_trail` verifies each chain (:func:`audit.verify.verify_logs`) and
accounts for the rest: torn-write evidence must be declared by its chain's recovery gap, notes of
undelivered events are reported as pending gaps, and any other file is reported as not verified, so the
verdict is never OK while a file was left out.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.pipeline import UNDELIVERED_PREFIX
from audit.sinks.file import SEGMENT_RE
from audit.verify import RecordCallback, VerifyReport, verify_logs
from tls.crypto import SM2PublicKey

_TORN_RE = re.compile(r"^(?P<prefix>[A-Za-z0-9_.-]+)-(?P<seq>[0-9]{12})\.jsonl\.torn$")
#: files the pipeline keeps beside the segments that hold no records (lock, follower cursors, notes)
_INTERNAL_NAMES = re.compile(r"^\.[A-Za-z0-9_.-]+\.lock$|^\.undelivered-.*\.tmp$")
_INTERNAL_DIRECTORIES = frozenset({".cursors"})


@dataclass(frozen=True)
class Chain:
    """The segment files of one pipeline: one directory and file prefix."""

    name: str
    directory: Path
    files: tuple[Path, ...]


@dataclass(frozen=True)
class StrayFile:
    """A file found beside the chains that is not a record file: accounted for, or left unverified."""

    path: Path
    reason: str


@dataclass
class Discovery:
    chains: list[Chain] = field(default_factory=list)
    #: files no chain covers and nothing explains: their content was not verified
    unverified: list[StrayFile] = field(default_factory=list)
    #: ``<prefix>-<seq>.jsonl.torn``: a torn first write a recovery kept as evidence (must be declared)
    torn: list[Path] = field(default_factory=list)
    #: notes of events a closing gateway could not hand to its pipeline (declared at its next start)
    undelivered: list[Path] = field(default_factory=list)


def discover(paths: Sequence[Path]) -> Discovery:
    """Every chain under ``paths``: directories are searched recursively (``worker-<i>/``), files given
    by name form chains by directory and prefix. Every other file is listed so nothing goes unseen."""
    found = Discovery()
    groups: dict[tuple[Path, str], list[Path]] = {}
    names: dict[tuple[Path, str], str] = {}
    for root in paths:
        if root.is_dir():
            for directory, subdirectories, files in os.walk(root):
                subdirectories[:] = sorted(d for d in subdirectories if d not in _INTERNAL_DIRECTORIES)
                for name in sorted(files):
                    _classify(Path(directory) / name, root, found, groups, names)
        else:
            _add_given_file(root, groups, names)
    for key, chain_files in sorted(groups.items()):
        found.chains.append(Chain(names[key], key[0], tuple(dict.fromkeys(chain_files))))
    return found


def _classify(
    path: Path,
    root: Path,
    found: Discovery,
    groups: dict[tuple[Path, str], list[Path]],
    names: dict[tuple[Path, str], str],
) -> None:
    match = SEGMENT_RE.match(path.name)
    if match:
        key = (path.parent, match.group("prefix"))
        groups.setdefault(key, []).append(path)
        relative = path.parent.relative_to(root)
        label = str(root) if relative == Path(".") else str(relative)
        names.setdefault(
            key, label if match.group("prefix") == "audit" else f"{label} ({match.group('prefix')})"
        )
    elif _TORN_RE.match(path.name):
        found.torn.append(path)
    elif path.name.startswith(UNDELIVERED_PREFIX) and path.name.endswith(".json"):
        found.undelivered.append(path)
    elif not _INTERNAL_NAMES.match(path.name):
        reason = "not a segment file name" if path.suffix == ".jsonl" else "not an audit file"
        found.unverified.append(StrayFile(path, reason))


def _add_given_file(
    path: Path, groups: dict[tuple[Path, str], list[Path]], names: dict[tuple[Path, str], str]
) -> None:
    match = SEGMENT_RE.match(path.name)
    key = (path.parent, match.group("prefix") if match else "")
    groups.setdefault(key, []).append(path)
    names.setdefault(key, str(path.parent))


@dataclass
class ChainReport:
    chain: Chain
    report: VerifyReport


@dataclass
class TrailReport:
    """What verifying a whole trail found: one report per chain, and every file outside the chains."""

    chains: list[ChainReport] = field(default_factory=list)
    unverified: list[StrayFile] = field(default_factory=list)
    #: torn-write evidence files and the gap that declares each
    torn: list[StrayFile] = field(default_factory=list)
    #: losses noted by a closing gateway, not yet written into its chain
    pending_gaps: list[dict[str, Any]] = field(default_factory=list)
    macs_checked: bool = False
    signatures_checked: bool = False
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.problem is None
            and bool(self.chains)
            and not self.unverified
            and all(item.report.ok for item in self.chains)
        )

    @property
    def status(self) -> str:
        if self.ok:
            return "OK"
        if all(item.report.ok for item in self.chains) and self.chains and self.problem is None:
            return "INCOMPLETE"
        return "FAILED"

    def totals(self) -> dict[str, int]:
        reports = [item.report for item in self.chains]
        return {
            "chains": len(reports),
            "files": sum(len(report.files) for report in reports),
            "records": sum(report.records for report in reports),
            "macs_verified": sum(report.macs_verified for report in reports),
            "checkpoints": sum(report.checkpoints for report in reports),
            "signatures_verified": sum(report.signatures_verified for report in reports),
            "declared_gaps": sum(len(report.declared_gaps) for report in reports),
        }

    def warnings(self) -> list[str]:
        """What a reader of an OK verdict must know about what it does not prove."""
        warnings = []
        if not self.signatures_checked:
            warnings.append(
                "checkpoint signatures were not checked (no --cert): the trail is consistent with the HMAC "
                "key, but nothing shows the gateway's signing key sealed it"
            )
        if not self.macs_checked:
            warnings.append(
                "record MACs were not checked (no --key): records are authenticated only through the signed "
                "checkpoints that cover them"
            )
        for item in self.chains:
            tail = item.report.unsealed_tail
            if tail is not None and item.report.ok:
                what = "MACs checked" if self.macs_checked else "not yet authenticated without --key"
                warnings.append(
                    f"{item.chain.name}: live: records {tail[0]}..{tail[1]} are written after the last "
                    f"checkpoint and will be covered by the next one ({what})"
                )
        return warnings

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.status,
            "problem": self.problem,
            "totals": self.totals(),
            "chains": [
                {"name": item.chain.name, "directory": str(item.chain.directory), **item.report.summary()}
                for item in self.chains
            ],
            "unverified_files": [
                {"file": str(stray.path), "reason": stray.reason} for stray in self.unverified
            ],
            "torn_write_evidence": [
                {"file": str(stray.path), "declared_by": stray.reason} for stray in self.torn
            ],
            "pending_gaps": self.pending_gaps,
            "warnings": self.warnings(),
        }


def verify_trail(
    paths: Sequence[Path],
    *,
    key: bytes | None = None,
    public_key: SM2PublicKey | None = None,
    live: bool = False,
    partial: bool = False,
    on_record: Callable[[Chain], RecordCallback | None] | None = None,
) -> TrailReport:
    """Verify every chain under ``paths`` (:func:`discover`) and account for every other file there.

    ``on_record(chain)`` may return a callback that receives that chain's records as they verify."""
    found = discover(paths)
    trail = TrailReport(macs_checked=key is not None, signatures_checked=public_key is not None)
    if not found.chains:
        trail.problem = (
            "no audit files given"
            if not paths
            else f"no audit segment files under {', '.join(map(str, paths))}"
        )
    for chain in found.chains:
        callback = on_record(chain) if on_record is not None else None
        report = verify_logs(
            chain.files, key=key, public_key=public_key, live=live, partial=partial, on_record=callback
        )
        trail.chains.append(ChainReport(chain, report))
    trail.unverified = list(found.unverified)
    for path in found.torn:
        declared_by = _declaring_gap(path, trail.chains)
        if declared_by is None:
            trail.unverified.append(
                StrayFile(path, "torn-write evidence no recovery gap of its chain declares")
            )
        else:
            trail.torn.append(StrayFile(path, declared_by))
    for note in found.undelivered:
        trail.pending_gaps.append(_read_note(note))
    return trail


def _declaring_gap(path: Path, chains: list[ChainReport]) -> str | None:
    """Which record accounts for a torn-write evidence file: the ``unclean_shutdown`` gap of its chain
    that declares exactly its bytes right before its sequence number (None: no record does)."""
    match = _TORN_RE.match(path.name)
    assert match is not None
    first_seq = int(match.group("seq"))
    size = path.stat().st_size
    for item in chains:
        if item.chain.directory != path.parent:
            continue
        for gap in item.report.declared_gaps:
            if (gap.get("reason"), gap.get("after_seq"), gap.get("torn_bytes")) == (
                "unclean_shutdown",
                first_seq - 1,
                size,
            ):
                return f"audit.gap at seq {gap.get('seq')} (torn_bytes {size})"
    return None


def _read_note(path: Path) -> dict[str, Any]:
    try:
        facts = json.loads(path.read_text())
    except (OSError, ValueError):
        facts = {}
    if not isinstance(facts, dict):
        facts = {}
    return {
        "file": str(path),
        "lost_count": facts.get("lost_count"),
        "lost_at_least": facts.get("lost_at_least"),
    }
