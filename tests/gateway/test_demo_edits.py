"""`make run` keeps the user's edits: `smgate demo` writes STATE/gateway.yaml once, serves it as edited
on every later start (its built-in upstreams follow the file), and writes it afresh only on --reset."""

from __future__ import annotations

from pathlib import Path

from tests.examples.conftest import run
from tests.gateway.process import GatewayProcess
from tests.ports import free_ports

EDITED_ROUTE = """\
          # my route, added by hand
          - name: edited
            match: {path: /edited}
            direct_response: {status: 200, body: "kept\\n"}
"""


def start_demo(state: Path, ports: list[int], *extra: str) -> GatewayProcess:
    options = ("--port", "--tcp-port", "--admin-port", "--echo-port", "--tcp-echo-port")
    argv = ["demo", "--state", str(state), "--quiet", *extra]
    for option, port in zip(options, ports, strict=True):
        argv += [option, str(port)]
    return GatewayProcess(argv, ready_pattern=r"smgate demo ready")


def https_get(state: Path, port: int, path: str) -> str:
    result = run(
        "curl", "-sS", "--cacert", state / "standard_ca_bundle.pem",
        "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}{path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_demo_serves_the_edited_config_and_reset_rewrites_it(tmp_path):
    state = tmp_path / "state"
    ports = free_ports(5)
    demo = start_demo(state, ports)
    try:
        assert '"path": "/hello"' in https_get(state, ports[0], "/hello")
    finally:
        assert demo.stop() == 0, demo.output()
    config = state / "gateway.yaml"
    written = config.read_text()
    anchor = "          - name: mtls-only\n"
    assert anchor in written
    edited = written.replace(anchor, EDITED_ROUTE + anchor)
    config.write_text(edited)

    demo = start_demo(state, ports)
    try:
        assert config.read_text() == edited
        assert "keeping" in demo.output() and "your edits" in demo.output()
        assert https_get(state, ports[0], "/edited") == "kept\n"
        assert '"path": "/hello"' in https_get(state, ports[0], "/hello")  # upstream on the file's port
    finally:
        assert demo.stop() == 0, demo.output()

    demo = start_demo(state, ports, "--reset")
    try:
        assert config.read_text() == written
    finally:
        assert demo.stop() == 0, demo.output()
