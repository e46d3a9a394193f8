"""A real ``smgate serve`` process with audit on, for tests that need the trail a gateway writes: a
plain-HTTP listener answering every request itself (no upstream), and a client that sends one request
per connection and says whether it was answered."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from tests.audit.conftest import AuditKeys
from tests.gateway.process import GatewayProcess


def free_port() -> int:
    """A free TCP port below 32768 (above, ports collide with outgoing connections)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def gateway_config(directory: Path, keys: AuditKeys, port: int, *, admin: bool = False, **audit: Any) -> Path:
    """``gateway.yaml`` in ``directory``: listener ``main`` on ``port`` answering 200 ``ok``; the audit
    trail in ``directory/log`` (``audit`` overrides the audit section's keys)."""
    document: dict[str, Any] = {
        "listeners": [
            {
                "name": "main",
                "address": "127.0.0.1",
                "port": port,
                "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "web"}]}],
            }
        ],
        "route_configs": [
            {
                "name": "web",
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [
                            {
                                "name": "ok",
                                "match": {"prefix": "/"},
                                "direct_response": {"status": 200, "body": "ok"},
                            }
                        ],
                    }
                ],
            }
        ],
        "clusters": [],
        "admin": {"address": "127.0.0.1", "port": 0} if admin else None,
        "audit": {
            "key_file": str(keys.key_file),
            "signing_key": str(keys.signing_key),
            "signing_cert": str(keys.signing_cert),
            "instance_id": "gw-test",
            "redaction": {"hash": ["query.token"]},
            "sinks": [{"type": "file", "directory": str(directory / "log"), "fsync": "always"}],
            **audit,
        },
    }
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def start(config: Path, *, workers: int = 1) -> GatewayProcess:
    """``smgate serve`` with ``workers`` processes, once every one of them serves."""
    gateway = GatewayProcess(["serve", str(config), "--workers", str(workers)])
    deadline = time.monotonic() + 60
    while gateway.output().count("smgate serving") < workers:
        if time.monotonic() > deadline:
            gateway.kill()
            raise RuntimeError("workers did not start:\n" + gateway.output())
        time.sleep(0.05)
    return gateway


def request(port: int, path: str, *, timeout: float = 10.0) -> int | None:
    """GET ``path`` on a new connection: the status, or None when no answer came within ``timeout``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n".encode())
        data = b""
        try:
            while chunk := connection.recv(65536):
                data += chunk
        except TimeoutError:
            return None
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data[9:12])
