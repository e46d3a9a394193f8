"""Run `smgate serve` / `smgate demo` as real processes for tests."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import REPO

#: The loop `smgate serve`/`demo` run on without --no-uvloop.
DEFAULT_LOOP = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


class GatewayProcess:
    """A `smgate` child process; stdout is collected on a thread, the ready line parsed for ports."""

    def __init__(self, args: list[str], ready_pattern: str = r"smgate serving") -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._pattern = re.compile(ready_pattern)
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(60):
            self.kill()
            raise RuntimeError("gateway did not start:\n" + "".join(self.lines))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if self._pattern.search(line):
                self._ready.set()

    def port(self, name: str) -> int:
        for line in self.lines:
            match = re.search(rf"\b{name}=(?:127\.0\.0\.1:)?(\d+)", line)
            if match:
                return int(match.group(1))
        raise KeyError(name)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 10.0) -> bool:
        return self.wait_for_count(text, 1, timeout)

    def wait_for_count(self, text: str, count: int, timeout: float = 10.0) -> bool:
        """Until ``text`` has appeared ``count`` times (workers' lines reach the output in any order)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output().count(text) >= count:
                return True
            time.sleep(0.05)
        return False

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def serve(config: Path, *extra: str) -> GatewayProcess:
    return GatewayProcess(["serve", str(config), *extra])
