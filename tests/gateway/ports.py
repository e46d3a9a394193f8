"""Free TCP ports below 32768 (the ephemeral range starts there; see the brief's rule 4)."""

from __future__ import annotations

import random
import socket


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A port in [low, high) that nothing listens on now (checked by binding 127.0.0.1 to it)."""
    for _ in range(200):
        port = random.randrange(low, high)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}..{high}")


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)
