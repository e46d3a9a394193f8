"""The stdout sink: JSON lines on standard output, in its own thread so a blocked pipe stalls only itself."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from audit.config import StdoutSinkConfig
from audit.sinks.follower import FollowerSink, SinkRecord


class StdoutSink(FollowerSink):
    kind = "stdout"

    def __init__(
        self,
        config: StdoutSinkConfig,
        *,
        cursor_dir: Path,
        segments: Callable[[], list[tuple[int, Path]]],
        stream: BinaryIO | None = None,
    ) -> None:
        super().__init__(
            name=config.name, queue_size=config.queue_size, cursor_dir=cursor_dir, segments=segments
        )
        self._stream = stream

    async def _connect(self) -> None:
        if self._stream is None:
            self._stream = sys.stdout.buffer

    async def _send(self, records: list[SinkRecord]) -> None:
        # Blocking is fine here: this loop runs in the sink's own thread.
        assert self._stream is not None
        self._stream.write(b"".join(record.line + b"\n" for record in records))
        self._stream.flush()

    async def _close(self) -> None:
        if self._stream is not None:
            self._stream.flush()
