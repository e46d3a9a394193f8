"""Running the examples as a user would: the PKI from examples/make-pki.sh (`smgate pki` commands),
each config checked as shipped, then served with its ports moved to free ones below 32768."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.ports import free_port

EXAMPLES = REPO / "examples"
#: `smgate` and the other console scripts of this environment first on PATH, as the README says, and
#: the repository root on PYTHONPATH, as rpc-codec.yaml says (its codec is the example's own module).
ENV = dict(
    os.environ,
    PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    PYTHONPATH=str(REPO),
)


def run(*argv: str | Path | int, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def example_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("examples") / "pki"
    result = run("bash", EXAMPLES / "make-pki.sh", out, timeout=180)
    assert result.returncode == 0, result.stderr
    return out


def place(name: str, directory: Path, pki: Path) -> Path:
    """examples/NAME copied verbatim into ``directory`` beside a ``pki`` link to the test's PKI."""
    if not (directory / "pki").exists():
        (directory / "pki").symlink_to(pki)
    target = directory / name
    target.write_text((EXAMPLES / name).read_text(encoding="utf-8"), encoding="utf-8")
    return target


def check_clean(path: Path) -> None:
    """`smgate config check` says ok, with no warning."""
    result = run("smgate", "config", "check", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"{path}: ok (")


def localized(
    path: Path, listeners: dict[str, int], endpoints: dict[str, list[int]], admin_port: int | None = None
) -> Path:
    """A copy of the config at ``path`` with listener, admin and endpoint ports replaced."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    for listener in doc["listeners"]:
        listener["port"] = listeners[listener["name"]]
    for cluster in doc.get("clusters", []):
        ports = endpoints[cluster["name"]]
        assert len(ports) == len(cluster["endpoints"])
        for endpoint, port in zip(cluster["endpoints"], ports, strict=True):
            endpoint["port"] = port
    doc["admin"]["port"] = admin_port if admin_port is not None else free_port()
    local = path.with_name(f"local-{path.name}")
    local.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return local


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers every GET with its path and headers as JSON (an upstream that shows what arrived)."""

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        data = body.encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_echo() -> Iterator[int]:
    """A stdlib HTTP server on 127.0.0.1 (its own thread); yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def response_json(output: str) -> dict[str, Any]:
    """The JSON body at the end of a client's output."""
    result: dict[str, Any] = json.loads(output[output.index("{") :])
    return result
