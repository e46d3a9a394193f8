"""Free TCP ports below 32768 for tests that need a fixed port (the ephemeral range starts at 32768,
where a port can be taken by any outgoing connection)."""

from __future__ import annotations

import random
import socket


def free_port(*, exclude: frozenset[int] = frozenset()) -> int:
    """A port in 20000-32000 that 127.0.0.1 and 0.0.0.0 can both bind right now."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        if port in exclude:
            continue
        try:
            for address in ("0.0.0.0", "127.0.0.1"):
                with socket.create_server((address, port)):
                    pass
        except OSError:
            continue
        return port
    raise RuntimeError("no free port in 20000-32000")


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        ports.append(free_port(exclude=frozenset(ports)))
    return ports
