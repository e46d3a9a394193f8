"""The gateway's audit handle: what the data path calls to record security-relevant events.

Wraps the audit package's ``AuditLog`` when configured; otherwise a :class:`NullAudit` that only
counts. ``emit`` never blocks and never raises on the data path.
"""

from __future__ import annotations

from typing import Protocol


class AuditHandle(Protocol):
    def emit(self, event_type: str, **fields: object) -> None: ...
    def queue_depth(self) -> int: ...
    def accepting_allowed(self) -> bool:
        """False while audit cannot write and its ``on_failure`` is ``stop_accepting``: listeners
        accept no new connections and ``/ready`` fails until it is True again."""
        ...

    async def start(self) -> None: ...
    async def aclose(self) -> None: ...


class NullAudit:
    """Audit disabled: events are counted (for tests and /stats) and dropped."""

    #: Nobody reads what this handle is given: the data path may skip building per-request records.
    enabled = False

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def emit(self, event_type: str, **fields: object) -> None:
        self.counts[event_type] = self.counts.get(event_type, 0) + 1

    def queue_depth(self) -> int:
        return 0

    def accepting_allowed(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
