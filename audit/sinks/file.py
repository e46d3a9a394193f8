"""The file sink: JSON lines in segment files, the durable source of truth of the audit log.

Segments are named ``<prefix>-<first seq, 12 digits>.jsonl`` and only ever appended to while active;
rotation closes a segment (after a ``rotation`` checkpoint) and opens the next, so rotated files are
never rewritten. A batch is one ``os.write``; if it fails (disk full) the partial write is cut back so
the segment always ends on a whole line, and the caller retries. ``fsync`` is ``always`` (every batch),
``interval`` (at most every ``fsync_interval`` seconds, and on rotation/close) or ``never``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.config import FileSinkConfig


class AuditDirectoryBusy(RuntimeError):
    """Another process holds the audit directory's writer lock."""


SEGMENT_RE = re.compile(r"^(?P<prefix>[A-Za-z0-9_.-]+)-(?P<seq>[0-9]{12})\.jsonl$")


def segment_name(prefix: str, first_seq: int) -> str:
    return f"{prefix}-{first_seq:012d}.jsonl"


def list_segments(directory: Path, prefix: str) -> list[tuple[int, Path]]:
    """``(first_seq, path)`` of every segment in ``directory``, oldest first."""
    found = []
    if directory.is_dir():
        for entry in directory.iterdir():
            match = SEGMENT_RE.match(entry.name)
            if match and match.group("prefix") == prefix and entry.is_file():
                found.append((int(match.group("seq")), entry))
    return sorted(found)


def parse_record(line: bytes) -> dict[str, Any] | None:
    """A stored line as a dict, or ``None`` if it is not a whole JSON object with a sequence number."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
        return None
    return record


@dataclass
class Recovery:
    """What the previous run left on disk, as far as continuing the chain needs it."""

    next_seq: int = 1
    prev_mac: bytes = bytes(32)
    last_checkpoint_seq: int | None = None
    #: the previous run did not end with a shutdown checkpoint
    unclean: bool = False
    #: bytes of a partially written last line (not part of the chain)
    torn_bytes: int = 0
    #: records after the last checkpoint: ``(seq, line)``, to be covered by the recovery checkpoint
    uncovered: list[tuple[int, bytes]] = field(default_factory=list)


def recover(directory: Path, prefix: str) -> Recovery:
    """Find the chain head of an existing log (read-only)."""
    segments = list_segments(directory, prefix)
    state = Recovery()
    if not segments:
        return state
    uncovered: list[tuple[int, bytes]] = []
    found_head = False
    for index in range(len(segments) - 1, -1, -1):
        data = segments[index][1].read_bytes()
        if index == len(segments) - 1 and not data:
            continue  # opened at rotation, crashed before the first write: reused by open_segment
        lines = data.split(b"\n")
        tail = lines.pop()  # bytes after the final newline: empty unless the last write was torn
        if not found_head and tail:
            state.torn_bytes = len(tail)
        records = [(line, parse_record(line)) for line in lines if line]
        segment_uncovered: list[tuple[int, bytes]] = []
        checkpoint_found = False
        for line, record in reversed(records):
            if record is None:
                continue
            if not found_head:
                found_head = True
                state.next_seq = record["seq"] + 1
                state.prev_mac = bytes.fromhex(str(record.get("mac", "")))
                state.unclean = not (
                    record.get("event") == "audit.checkpoint" and record.get("reason") == "shutdown"
                )
            if record.get("event") == "audit.checkpoint":
                state.last_checkpoint_seq = record["seq"]
                checkpoint_found = True
                break
            segment_uncovered.append((record["seq"], line))
        uncovered = list(reversed(segment_uncovered)) + uncovered
        if checkpoint_found:
            break
    if state.torn_bytes:
        state.unclean = True
    state.uncovered = uncovered
    return state


class FileSink:
    """Appends record lines to the active segment; rotates; reports segments to follower sinks."""

    def __init__(self, config: FileSinkConfig) -> None:
        self.config = config
        self.directory = config.directory
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened_at = 0.0
        self._last_fsync = 0.0
        self._dirty = False
        self._lock = threading.Lock()
        self._segments: list[tuple[int, Path]] = []
        #: highest sequence number whose line is in the file (readable by followers)
        self.written_seq = 0
        self.bytes_written = 0

    @property
    def active_path(self) -> Path | None:
        return self._path

    @property
    def size(self) -> int:
        """Bytes in the active segment."""
        return self._size

    def recover(self) -> Recovery:
        """Take the directory lock (one writer per directory) and read the chain head."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.directory / f".{self.config.prefix}.lock"
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise AuditDirectoryBusy(
                f"{self.directory}: another process is writing this audit log (give each worker its own directory)"
            ) from None
        self._lock_fd = lock_fd
        state = recover(self.directory, self.config.prefix)
        self._segments = list_segments(self.directory, self.config.prefix)
        self.written_seq = state.next_seq - 1
        return state

    def open_segment(self, first_seq: int) -> None:
        """Open ``<prefix>-<first_seq>.jsonl``; an existing file is only reused if it is empty."""
        path = self.directory / segment_name(self.config.prefix, first_seq)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags | os.O_EXCL, 0o600)
        except FileExistsError:
            content = path.read_bytes()
            if b"\n" in content:
                raise RuntimeError(f"{path}: segment already exists and holds records") from None
            if content:
                # Only a torn first write (crash): keep it as evidence beside the log, out of the chain.
                os.replace(path, path.with_name(path.name + ".torn"))
                fd = os.open(path, flags | os.O_EXCL, 0o600)
            else:
                fd = os.open(path, flags, 0o600)
        self._fsync_directory()
        with self._lock:
            self._fd = fd
            self._path = path
            self._size = 0
            self._opened_at = time.monotonic()
            self._last_fsync = self._opened_at
            if not self._segments or self._segments[-1][1] != path:
                self._segments.append((first_seq, path))

    def segments(self) -> list[tuple[int, Path]]:
        """Snapshot of ``(first_seq, path)``, oldest first (thread-safe)."""
        with self._lock:
            return list(self._segments)

    def write(self, lines: list[bytes], last_seq: int) -> bytes:
        """Append whole lines or nothing (raises ``OSError`` after cutting back a partial write).

        Returns the bytes written (the lines, each followed by ``\\n``).
        """
        if self._fd is None:
            raise RuntimeError("file sink is not open")
        data = b"".join(line + b"\n" for line in lines)
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError:
            if written:
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        self.bytes_written += len(data)
        self._dirty = True
        if self.config.fsync == "always":
            self.sync()
        elif (
            self.config.fsync == "interval"
            and time.monotonic() - self._last_fsync >= self.config.fsync_interval
        ):
            self.sync()
        self.written_seq = last_seq
        return data

    def sync(self) -> None:
        if self._fd is not None and self._dirty and self.config.fsync != "never":
            os.fsync(self._fd)
            self._dirty = False
            self._last_fsync = time.monotonic()

    def sync_due(self) -> bool:
        return (
            self.config.fsync == "interval"
            and self._dirty
            and time.monotonic() - self._last_fsync >= self.config.fsync_interval
        )

    def should_rotate(self) -> bool:
        if self._fd is None or self._size == 0:
            return False
        if self._size >= self.config.rotate_bytes:
            return True
        age = time.monotonic() - self._opened_at
        return self.config.rotate_seconds is not None and age >= self.config.rotate_seconds

    def rotate(self, next_seq: int) -> None:
        """Close the active segment and open the next; if that fails, calling it again continues."""
        self._close_segment()
        self.open_segment(next_seq)

    def close(self) -> None:
        """Close the active segment (it stays as is: a new run starts a new segment) and release the
        directory, even if the final fsync fails."""
        try:
            self._close_segment()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _close_segment(self) -> None:
        if self._fd is not None:
            if self._dirty and self.config.fsync != "never":
                os.fsync(self._fd)
                self._dirty = False
            os.close(self._fd)
            self._fd = None

    def _fsync_directory(self) -> None:
        if self.config.fsync == "never":
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
