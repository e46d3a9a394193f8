"""Rate-limited log lines for events a peer can trigger (rule 3: bounded log lines).

A handshake failure is one line with its reason and peer, but a scanner or a broken client fleet can
cause thousands a second. :class:`RateLimitedLog` keeps one token bucket per key (the event and its
reason, never the peer address, so that the number of buckets stays bounded): a line is written while
the bucket has tokens; otherwise it is counted, and the next line written for that key carries
``suppressed=N``. Time comes from an injectable clock so tests need no sleeping.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: At most this many distinct keys are tracked; the least recently used is forgotten first.
MAX_KEYS = 256


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    suppressed: int = 0


class RateLimitedLog:
    """Writes ``logger.warning(event, reason=..., **fields)`` at most ``rate`` per second per key."""

    def __init__(
        self,
        logger: Any,
        *,
        rate: float = 5.0,
        burst: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    def warning(self, event: str, *, reason: str, **fields: Any) -> bool:
        """Log unless the key ``(event, reason)`` is over its rate; returns whether a line was written."""
        bucket = self._bucket((event, reason))
        now = self.clock()
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            bucket.suppressed += 1
            return False
        bucket.tokens -= 1.0
        if bucket.suppressed:
            fields["suppressed"] = bucket.suppressed
            bucket.suppressed = 0
        self.logger.warning(event, reason=reason, **fields)
        return True

    def _bucket(self, key: tuple[str, str]) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated=self.clock())
            if len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket


_handshake_log: RateLimitedLog | None = None


def configure_peer_error_log(logger: Any, rate: float, burst: int) -> None:
    """Set up the process-wide rate-limited logger used by :func:`handshake_failure`."""
    global _handshake_log
    _handshake_log = RateLimitedLog(logger, rate=rate, burst=burst)


def handshake_failure(listener: str, reason: str, peer: tuple[str, int] | None, detail: str = "") -> None:
    """One rate-limited ``handshake failed`` line: listener, reason, peer address and detail.

    The listener calls this wherever it refuses a connection before the filter chain (sniffing,
    PROXY header, TLS/TLCP handshake, timeout)."""
    global _handshake_log
    if _handshake_log is None:
        from gateway.logs.setup import get_logger

        _handshake_log = RateLimitedLog(get_logger("listener"))
    _handshake_log.warning(
        "handshake failed",
        reason=reason,
        listener=listener,
        peer=f"{peer[0]}:{peer[1]}" if peer else "-",
        detail=detail[:200],
    )
