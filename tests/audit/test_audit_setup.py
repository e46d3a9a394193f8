"""gateway/audit_setup.py: per-worker audit directories and which certificates a reload reports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from audit.config import load_audit_config
from gateway.audit_setup import LoadedCertificates, per_worker
from gateway.certinfo import CertificateInfo


def _info(role: str, der: bytes, file: str = "/pki/server.pem") -> CertificateInfo:
    return CertificateInfo(
        file=file,
        role=role,
        subject="CN=server",
        issuer="CN=ca",
        not_after=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        serial="1f",
        der=der,
    )


def test_a_reload_reports_only_changed_certificates() -> None:
    loaded = LoadedCertificates()
    sign, enc, ca = _info("sign", b"s1"), _info("enc", b"e1"), _info("trust", b"c1", "/pki/ca.pem")
    assert loaded.changed([sign, enc, ca]) == [sign, enc, ca]  # the first generation reports them all
    assert loaded.changed([sign, enc, ca]) == []  # a reload that touched no certificate
    renewed = _info("sign", b"s2")
    assert loaded.changed([renewed, enc, ca]) == [renewed]
    moved = _info("enc", b"e1", "/pki/new-enc.pem")
    assert loaded.changed([renewed, moved]) == [moved]
    assert loaded.changed([renewed, moved, ca]) == [ca]  # removed, then back: reported again


def test_each_worker_writes_its_own_chain_under_the_instance_directory(tmp_path: Path) -> None:
    config = load_audit_config(
        {
            "key_file": str(tmp_path / "k"),
            "instance_id": "gw",
            "sinks": [{"type": "file", "directory": str(tmp_path / "log")}, {"type": "stdout"}],
        }
    )
    worker = per_worker(config, 1)
    assert worker.file_sink.directory == tmp_path / "log" / "worker-1"
    assert worker.instance_id == "gw-w1" and len(worker.sinks) == 2
