"""examples/tcp-database.yaml: redis-cli over TLS and a TLCP client reach a real redis-server."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.examples.conftest import check_clean, localized, place, run
from tests.gateway.process import serve
from tests.ports import free_port


@pytest.fixture
def redis_port(tmp_path) -> Iterator[int]:
    """A real redis-server (Debian's package, listed in .ci/apt-packages) on 127.0.0.1."""
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is missing: .ci/install-peers installs it"
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while run("redis-cli", "-p", port, "PING").stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_database_behind_tls_and_tlcp(example_pki, redis_port, tmp_path):
    config = place("tcp-database.yaml", tmp_path, example_pki)
    check_clean(config)
    port = free_port()
    gateway = serve(localized(config, {"redis": port}, {"redis": [redis_port]}))
    try:
        tls = ["redis-cli", "--tls", "--cacert", example_pki / "tls_root.pem", "--sni", "localhost"]
        stored = run(*tls, "-h", "127.0.0.1", "-p", port, "SET", "greeting", "through smgate")
        assert stored.stdout.strip() == "OK", stored.stdout + stored.stderr
        tlcp = run(
            "smgate", "client", "127.0.0.1", port, "--protocol", "tlcp", "--servername", "localhost",
            "--cafile", example_pki / "sm2_root.pem", "--send", "GET greeting\r\n",
        )  # fmt: skip
        assert tlcp.returncode == 0, tlcp.stdout + tlcp.stderr
        assert "protocol: TLCPv1.1" in tlcp.stdout
        assert "through smgate" in tlcp.stdout
        assert run("redis-cli", "-p", redis_port, "GET", "greeting").stdout.strip() == "through smgate"
    finally:
        assert gateway.stop() == 0, gateway.output()
