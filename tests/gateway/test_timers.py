"""The lazily re-armed deadline: moving it later costs no timer, and it still fires on time."""

from __future__ import annotations

import asyncio

from gateway.timers import Deadline


async def test_deadline_fires_once_at_the_latest_time_set():
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    deadline = Deadline(lambda: fired.append(loop.time()), loop)
    start = loop.time()
    deadline.after(0.05)
    for _ in range(100):
        deadline.after(0.15)  # moved later: the armed timer is kept and re-armed once when it fires
    await asyncio.sleep(0.3)
    assert len(fired) == 1
    assert fired[0] - start >= 0.149


async def test_deadline_moved_earlier_fires_early_and_none_disarms():
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    deadline = Deadline(lambda: fired.append("x"), loop)
    deadline.after(10)
    deadline.after(0.02)
    await asyncio.sleep(0.1)
    assert fired == ["x"]
    deadline.after(0.02)
    deadline.set(None)
    await asyncio.sleep(0.1)
    assert fired == ["x"]
    deadline.after(0.02)
    deadline.cancel()
    await asyncio.sleep(0.1)
    assert fired == ["x"]
