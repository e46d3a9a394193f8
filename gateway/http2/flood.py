"""HTTP/2 flood defences: a frame-header scanner in front of the ``h2`` state machine.

``h2`` implements RFC 9113 faithfully, which includes answering every PING and SETTINGS frame and
accepting every RST_STREAM; the attacks of the last years live exactly there. The scanner reads only
the 9-byte frame headers (RFC 9113 4.1) of the inbound byte stream, before ``h2`` parses anything,
and counts what a peer can make the server do for free:

- *rapid reset* (CVE-2023-44487): streams opened and reset by the client, per window;
- *CONTINUATION flood* (VU#421644, 2024): header-block bytes and frames for one HEADERS sequence,
  bounded by the advertised header-list size, so a block without END_HEADERS cannot grow forever;
- *SETTINGS / PING floods* (CVE-2019-9515, CVE-2019-9512): frames that force an ACK, per window;
- *empty frames* (CVE-2019-9518): DATA/HEADERS/CONTINUATION with no payload and no END flag in a row.

Crossing a limit raises :class:`FloodDetected`; the connection answers GOAWAY(ENHANCE_YOUR_CALM) and
closes. Time is passed in, so the scanner stays sans-I/O and testable.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_LEN = 9


class FrameType(IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4

# Plain ints for the per-frame checks (an IntEnum member costs an attribute lookup per comparison).
_DATA, _CONTINUATION = int(FrameType.DATA), int(FrameType.CONTINUATION)
_RST_STREAM, _PING, _SETTINGS, _PRIORITY = (
    int(FrameType.RST_STREAM),
    int(FrameType.PING),
    int(FrameType.SETTINGS),
    int(FrameType.PRIORITY),
)
#: Frames that may carry content, and the flag that makes an empty one legitimate (its end).
_END_FLAG = {
    _DATA: FLAG_END_STREAM,
    int(FrameType.HEADERS): FLAG_END_HEADERS,
    _CONTINUATION: FLAG_END_HEADERS,
}
_CONTENT_TYPES = frozenset(_END_FLAG)
_HEADER_BLOCK_TYPES = frozenset((int(FrameType.HEADERS), int(FrameType.PUSH_PROMISE)))
#: Frames a peer can make the server act on for free, counted per window.
_COUNTED_TYPES = frozenset((_RST_STREAM, _PING, _SETTINGS, _PRIORITY))


class FloodDetected(Exception):
    """The peer crossed a flood limit; ``reason`` labels the metric, log line and audit record."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """Per-connection budgets; each ``*_per_window`` counts events in a sliding ``window`` seconds."""

    window: float = 10.0
    stream_resets_per_window: int = 200
    pings_per_window: int = 100
    settings_per_window: int = 100
    priority_frames_per_window: int = 1000
    consecutive_empty_frames: int = 16
    #: Most header-block bytes for one HEADERS + CONTINUATION sequence (compressed).
    max_header_block_bytes: int = 65536
    max_continuation_frames: int = 32


class _WindowCounter:
    """Timestamps of recent events; ``add`` reports how many fall inside the window."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def add(self, now: float) -> int:
        times = self._times
        times.append(now)
        horizon = now - self.window
        while times and times[0] < horizon:
            times.popleft()
        return len(times)


class FrameScanner:
    """Follows frame boundaries of the inbound stream and enforces :class:`FloodLimits`.

    ``client_preface`` is true on the server side: the stream starts with the 24-byte preface.
    """

    def __init__(self, limits: FloodLimits, *, client_preface: bool) -> None:
        self.limits = limits
        self._preface_left = len(PREFACE) if client_preface else 0
        self._header = bytearray()
        self._payload_left = 0
        self._resets = _WindowCounter(limits.window)
        self._pings = _WindowCounter(limits.window)
        self._settings = _WindowCounter(limits.window)
        self._priorities = _WindowCounter(limits.window)
        self._empty_in_row = 0
        self._block_bytes = 0
        self._block_frames = 0
        self._in_header_block = False

    def scan(self, data: bytes, now: float) -> None:
        """Account for ``data`` (any split); raises :class:`FloodDetected` at the first crossing."""
        pos, end = 0, len(data)
        if self._preface_left:
            pos = min(self._preface_left, end)
            self._preface_left -= pos
        if self._payload_left:
            skipped = min(self._payload_left, end - pos)
            self._payload_left -= skipped
            pos += skipped
        if self._header:  # a frame header split across reads: complete it first
            taken = data[pos : pos + FRAME_HEADER_LEN - len(self._header)]
            self._header += taken
            pos += len(taken)
            if len(self._header) < FRAME_HEADER_LEN:
                return
            header, self._header = bytes(self._header), bytearray()
            pos += self._on_frame_header(
                header[0] << 16 | header[1] << 8 | header[2], header[3], header[4], now
            )
        # Whole frame headers straight from ``data``: positions only, no copies of the payloads.
        while pos + FRAME_HEADER_LEN <= end:
            length = data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2]
            pos += FRAME_HEADER_LEN + self._on_frame_header(length, data[pos + 3], data[pos + 4], now)
        if pos > end:
            self._payload_left = pos - end
        elif pos < end:
            self._header = bytearray(data[pos:end])

    def _on_frame_header(self, length: int, frame_type: int, flags: int, now: float) -> int:
        """Check one frame header; returns its payload length."""
        self._check_empty(frame_type, flags, length)
        if frame_type in _HEADER_BLOCK_TYPES or self._in_header_block:
            self._check_header_block(frame_type, flags, length)
        if frame_type in _COUNTED_TYPES:
            self._count(frame_type, flags, now)
        return length

    def _count(self, frame_type: int, flags: int, now: float) -> None:
        limits = self.limits
        if frame_type == _RST_STREAM:
            self._over(self._resets.add(now), limits.stream_resets_per_window, "rapid_reset", "RST_STREAM")
        elif frame_type == _PING and not flags & FLAG_ACK:
            self._over(self._pings.add(now), limits.pings_per_window, "ping_flood", "PING")
        elif frame_type == _SETTINGS and not flags & FLAG_ACK:
            self._over(self._settings.add(now), limits.settings_per_window, "settings_flood", "SETTINGS")
        elif frame_type == _PRIORITY:
            self._over(
                self._priorities.add(now), limits.priority_frames_per_window, "priority_flood", "PRIORITY"
            )

    def _over(self, count: int, limit: int, reason: str, what: str) -> None:
        if count > limit:
            raise FloodDetected(
                reason, f"{count} {what} frames within {self.limits.window:g} s (limit {limit})"
            )

    def _check_empty(self, frame_type: int, flags: int, length: int) -> None:
        if length == 0 and frame_type in _CONTENT_TYPES and not flags & _END_FLAG[frame_type]:
            self._empty_in_row += 1
            if self._empty_in_row > self.limits.consecutive_empty_frames:
                raise FloodDetected("empty_frames", f"{self._empty_in_row} empty frames in a row")
        else:
            self._empty_in_row = 0

    def _check_header_block(self, frame_type: int, flags: int, length: int) -> None:
        if frame_type in _HEADER_BLOCK_TYPES:
            self._in_header_block = True
            self._block_bytes = 0
            self._block_frames = 0
        elif frame_type != _CONTINUATION or not self._in_header_block:
            return  # h2 itself rejects a CONTINUATION outside a header block
        else:
            self._block_frames += 1
        self._block_bytes += length
        if self._block_bytes > self.limits.max_header_block_bytes:
            raise FloodDetected(
                "header_block_too_large",
                f"header block of {self._block_bytes} bytes (limit {self.limits.max_header_block_bytes})",
            )
        if self._block_frames > self.limits.max_continuation_frames:
            raise FloodDetected(
                "continuation_flood", f"{self._block_frames} CONTINUATION frames in one block"
            )
        if flags & FLAG_END_HEADERS:
            self._in_header_block = False
