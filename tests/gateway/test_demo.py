"""`smgate demo` end to end from an empty state directory: every command the walkthrough prints is run
as printed (curl, openssl s_client, smgate client over TLCP/TLS/TCP, admin, audit verify) and must
work; then the audit trail of the run verifies after shutdown."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO
from tests.gateway.process import DEFAULT_LOOP, GatewayProcess


def smgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def printed_commands(walkthrough: str) -> list[str]:
    """The indented command lines of the walkthrough, continuations joined, trailing comments cut."""
    commands: list[str] = []
    pending = ""
    for line in walkthrough.splitlines():
        if not line.startswith("  ") or not line.strip():
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        commands.append(re.sub(r"\s+# .*$", "", text))
    return commands


#: What each printed command must print (keyed by a fragment of the command).
EXPECTED = {
    "https://localhost": '"path": "/',
    "--tls-max 1.2": '"x-ssl-protocol": "TLSv1.2"',
    "/mtls": '"x-client-cert-fingerprint-sm',
    "s_client": "Verification: OK",
    "--get /hello": "protocol: TLCPv1.1",
    "--send 'hello over tcp'": "hello over tcp",
    "--send hi": "protocol: TLCPv1.1",
    "/ready": "ready",
    "/metrics": 'protocol="tlcp",result="success"',
    "/certs": '"certificates"',
    "/reload": '"reloaded": true',
    "audit verify": "audit verify: OK",
}


def test_demo_walkthrough_commands_work(tmp_path):
    state = tmp_path / "state"
    demo = GatewayProcess(
        ["demo", "--state", str(state), "--port", "0", "--tcp-port", "0", "--admin-port", "0",
         "--echo-port", "0", "--tcp-echo-port", "0"],
        ready_pattern=r"audit verify --live",
    )  # fmt: skip
    try:
        assert f"running on {DEFAULT_LOOP}" in demo.output()
        commands = printed_commands(demo.output())
        assert len(commands) == 13, commands
        for command in commands:
            result = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=30
            )
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            output = result.stdout + result.stderr
            expected = [text for fragment, text in EXPECTED.items() if fragment in command]
            assert expected, command
            for text in expected:
                assert text in output, (command, output)
            if "--enc-cert" in command:
                assert "cipher: ECDHE_SM4_GCM_SM3" in output and "status: 200" in output
        tlcp = next(c for c in commands if "--get /hello" in c)
        anonymous = subprocess.run(
            ["bash", "-c", tlcp.replace("--get /hello", "--get /mtls/hello")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "status: 403" in anonymous.stdout
    finally:
        assert demo.stop() == 0
    verify = smgate(
        "audit",
        "verify",
        "--key",
        str(state / "audit" / "chain.key"),
        "--cert",
        str(state / "pki" / "audit" / "audit_sign.pem"),
        str(state / "audit" / "log"),
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit verify: OK" in verify.stdout
