"""Fixtures for audit tests: key material, configurations and a helper that runs an AuditLog."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from audit.config import AuditConfig, load_audit_config
from audit.keys import load_audit_key, load_verification_key, write_audit_key
from certs.demo import DemoPKI, ensure_demo_pki
from tls.crypto import SM2PublicKey


@pytest.fixture(scope="session")
def demo_pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPKI:
    return ensure_demo_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class AuditKeys:
    key_file: Path
    signing_key: Path
    signing_cert: Path

    @property
    def key(self) -> bytes:
        return load_audit_key(self.key_file)

    @property
    def public_key(self) -> SM2PublicKey:
        return load_verification_key(self.signing_cert)


@pytest.fixture(scope="session")
def audit_keys(demo_pki: DemoPKI, tmp_path_factory: pytest.TempPathFactory) -> AuditKeys:
    key_file = tmp_path_factory.mktemp("auditkey") / "audit.key"
    write_audit_key(key_file)
    return AuditKeys(key_file=key_file, signing_key=demo_pki.audit.key, signing_cert=demo_pki.audit.cert)


ConfigFactory = Callable[..., AuditConfig]


@pytest.fixture
def make_config(tmp_path: Path, audit_keys: AuditKeys) -> ConfigFactory:
    """``make_config(sinks=[...], file={...}, **top_level)`` with the file sink in ``tmp_path/log``."""

    def factory(
        *, sinks: list[dict[str, Any]] | None = None, file: dict[str, Any] | None = None, **extra: Any
    ) -> AuditConfig:
        file_sink = {"type": "file", "directory": str(tmp_path / "log"), "fsync": "never", **(file or {})}
        data: dict[str, Any] = {
            "key_file": str(audit_keys.key_file),
            "signing_key": str(audit_keys.signing_key),
            "signing_cert": str(audit_keys.signing_cert),
            "instance_id": "test-gw",
            "sinks": [file_sink, *(sinks or [])],
            **extra,
        }
        return load_audit_config(data)

    return factory


def read_records(directory: Path, *, complete_only: bool = False) -> list[dict[str, Any]]:
    """Every record in every segment under ``directory``, in file then line order.

    ``complete_only`` skips an unterminated (torn) last line.
    """
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        data = path.read_bytes()
        if complete_only:
            data = data[: data.rfind(b"\n") + 1]
        for line in data.splitlines():
            records.append(json.loads(line))
    return records


@pytest.fixture(params=["thread", "process"])
def pipeline(request: pytest.FixtureRequest) -> str:
    """Where ``AuditLog`` runs its pipeline: lifecycle tests run against both."""
    return str(request.param)


@pytest.fixture
def log_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "log"
