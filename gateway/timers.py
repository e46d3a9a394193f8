"""A lazily re-armed deadline: one event-loop timer per owner, however often the deadline moves.

The data path moves deadlines on every request (idle, request head, route timeout). Cancelling and
scheduling a loop timer each time would cost more than the rest of the bookkeeping, so moving a
deadline *later* only records the new time; the armed timer fires at the old time, sees the deadline
moved and re-arms once. Moving it earlier re-arms at once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

#: Event loops may fire a timer up to a millisecond early (uvloop counts in milliseconds).
_RESOLUTION = 0.001


class Deadline:
    __slots__ = ("_armed_at", "_callback", "_handle", "_loop", "when")

    def __init__(self, callback: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        #: Loop time at which ``callback`` runs; ``None``: no deadline.
        self.when: float | None = None

    def set(self, when: float | None) -> None:
        self.when = when
        if when is not None and when < self._armed_at:
            self._arm(when)

    def after(self, seconds: float | None) -> None:
        """Run the callback ``seconds`` from now (``None``: no deadline)."""
        self.set(None if seconds is None else self._loop.time() + seconds)

    def cancel(self) -> None:
        """No deadline, and no timer left behind (the owner is going away)."""
        self.when = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._armed_at = math.inf

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(when, self._fire)
        self._armed_at = when

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        when = self.when
        if when is None:
            return
        if self._loop.time() + _RESOLUTION < when:
            self._arm(when)
            return
        self.when = None
        self._callback()
