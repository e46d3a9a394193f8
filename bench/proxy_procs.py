"""Processes for bench/proxy.py: start them pinned to a core, read their CPU from /proc, stop them all.

Every server the benchmark runs is one *process tree*: nginx is a master and its worker, ``smgate
serve`` is the gateway plus its audit pipeline child (and with ``--workers 2`` a parent and two
workers). What a peer costs is the CPU of the whole tree, so :func:`tree_cpu_seconds` sums
utime + stime of every live process under the root, plus what the processes already reaped by their
parents used (cutime + cstime), so a child that exits mid-run is not lost.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Ports the benchmark binds: below the ephemeral range (32768-60999), so outgoing connections
#: of the load generator and the proxies never collide with them.
PORT_RANGE = (20000, 32000)


class StartError(Exception):
    """A server did not come up; the message carries the tail of its log."""


def free_port(taken: set[int]) -> int:
    """A port in `PORT_RANGE` that binds on 127.0.0.1 now and is not in ``taken`` (added to it)."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise StartError(f"no free port in {PORT_RANGE}")


# -- /proc -------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state); None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _all_stats() -> dict[int, list[str]]:
    table: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                table[int(entry.name)] = fields
    return table


def parents() -> dict[int, int]:
    """pid -> parent pid of every process now."""
    return {pid: int(fields[1]) for pid, fields in _all_stats().items()}


def group_members(pgid: int) -> list[int]:
    """Processes in process group ``pgid`` (a server and whatever it spawned, even if reparented)."""
    return [pid for pid, fields in _all_stats().items() if int(fields[2]) == pgid]


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot): tells a pid from a later reuse of it."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat_fields(pid) is not None:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all threads) + cutime + cstime of its reaped children."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return sum(int(fields[index]) for index in (11, 12, 13, 14)) / CLOCK_TICKS


def tree_cpu_by_process(root: int) -> dict[int, float]:
    return {pid: process_cpu_seconds(pid) for pid in tree_pids(root)}


def tree_cpu_seconds(root: int) -> float:
    return sum(tree_cpu_by_process(root).values())


def pin_tree(root: int, cpu: int) -> int:
    """Pin every thread of every process in the tree to ``cpu``; returns how many were elsewhere."""
    moved = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    tid = int(task.name)
                    if os.sched_getaffinity(tid) != {cpu}:
                        os.sched_setaffinity(tid, {cpu})
                        moved += 1
    return moved


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def wait_idle(root: int, *, threshold: float = 0.08, timeout: float = 20.0) -> None:
    """Wait until the tree uses less than ``threshold`` of a core over 0.3 s (start-up, draining)."""
    deadline = time.monotonic() + timeout
    before = tree_cpu_seconds(root)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        after = tree_cpu_seconds(root)
        if after - before < threshold * 0.3:
            return
        before = after


# -- running servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    """One started server process tree, pinned with ``taskset`` to one core."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    cpu: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Fleet:
    """Every server this run started; `stop_all` ends them (and anything they spawned)."""

    workdir: Path
    servers: list[Server] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int,
        ports: Sequence[int],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        ready: Callable[[Server], bool] | None = None,
        timeout: float = 60.0,
    ) -> Server:
        """Start ``argv`` under ``taskset -c cpu`` in its own session; wait until ``ports`` accept
        connections (and ``ready`` holds), then until its start-up CPU burst is over."""
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                ["taskset", "-c", str(cpu), *argv],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        server = Server(name, process, log, cpu)
        self.servers.append(server)
        deadline = time.monotonic() + timeout
        while not (all(port_open(port) for port in ports) and (ready is None or ready(server))):
            if process.poll() is not None:
                raise StartError(f"{name} exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise StartError(
                    f"{name} did not listen on {list(ports)} in {timeout:.0f} s:\n{server.log_tail()}"
                )
            time.sleep(0.1)
        wait_idle(server.pid)
        return server

    def stop(self, server: Server, grace: float = 15.0) -> None:
        """SIGTERM the root (it stops its own children: nginx workers, smgate's audit pipeline), then
        SIGKILL whatever of the tree or its process group is left after ``grace`` seconds."""
        ours = {*tree_pids(server.pid), *group_members(server.pid)}
        started = {pid: start_time(pid) for pid in ours}
        if server.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        for pid in ours:
            if start_time(pid) == started[pid]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(5)
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        for server in reversed(list(self.servers)):
            self.stop(server)
