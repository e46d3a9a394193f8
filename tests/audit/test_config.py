from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from audit.config import (
    AuditConfig,
    FileSinkConfig,
    SyslogSinkConfig,
    format_config_error,
    load_audit_config,
)

EXAMPLE = """
audit:
  key_file: secrets/audit.key
  signing_key: pki/audit/audit_sign.key
  signing_cert: pki/audit/audit_sign.pem
  instance_id: gw-bj-01
  checkpoint: {every_records: 1000, every_seconds: 60}
  redaction:
    hash: [headers.authorization, headers.cookie, client_addr]
    drop: [headers.x-debug]
  sinks:
    - {type: file, directory: /var/log/smgate/audit, rotate_bytes: 67108864, rotate_seconds: 86400, fsync: interval}
    - {type: syslog, transport: tls, host: siem.example, port: 6514, tls: {ca_file: pki/siem-ca.pem}}
    - {type: syslog, transport: udp, host: 127.0.0.1, port: 514}
    - {type: stdout}
"""


def _errors(data: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as info:
        load_audit_config(data)
    return format_config_error(info.value)


def test_example_yaml_loads_and_resolves_relative_paths() -> None:
    config = load_audit_config(yaml.safe_load(EXAMPLE)["audit"])
    assert isinstance(config.sinks[0], FileSinkConfig)
    syslog = config.sinks[1]
    assert isinstance(syslog, SyslogSinkConfig) and syslog.sink_name == "syslog-tls-siem.example-6514"
    resolved = config.resolved(Path("/etc/smgate"))
    assert resolved.key_file == Path("/etc/smgate/secrets/audit.key")
    assert resolved.file_sink.directory == Path("/var/log/smgate/audit")
    resolved_syslog = resolved.sinks[1]
    assert isinstance(resolved_syslog, SyslogSinkConfig) and resolved_syslog.tls is not None
    assert resolved_syslog.tls.ca_file == Path("/etc/smgate/pki/siem-ca.pem")
    assert resolved.cursor_dir == Path("/var/log/smgate/audit/.cursors")


def test_errors_name_the_key_path() -> None:
    message = _errors(
        {
            "key_file": "k",
            "sinks": [{"type": "file", "directory": "d"}, {"type": "syslog", "host": "h", "port": 0}],
        }
    )
    assert message.startswith("audit.sinks.1.syslog.port:")


def test_unknown_keys_are_rejected_by_name() -> None:
    message = _errors({"key_file": "k", "sinks": [{"type": "file", "directory": "d", "rotate": 1}]})
    assert "audit.sinks.0.file.rotate: Extra inputs are not permitted" in message


def test_exactly_one_file_sink_is_required() -> None:
    assert "audit.sinks:" in _errors({"key_file": "k", "sinks": [{"type": "stdout"}]})
    assert "exactly one sink of type 'file'" in _errors(
        {"key_file": "k", "sinks": [{"type": "file", "directory": "a"}, {"type": "file", "directory": "b"}]}
    )


def test_follower_names_must_be_unique() -> None:
    message = _errors(
        {
            "key_file": "k",
            "sinks": [{"type": "file", "directory": "a"}, {"type": "stdout"}, {"type": "stdout"}],
        }
    )
    assert "sink names must be unique: stdout" in message


def test_tls_settings_need_tls_transport() -> None:
    message = _errors(
        {
            "key_file": "k",
            "sinks": [
                {"type": "file", "directory": "a"},
                {"type": "syslog", "transport": "tcp", "host": "h", "port": 1, "tls": {}},
            ],
        }
    )
    assert "tls settings are only valid with transport: tls" in message


def test_signing_cert_needs_signing_key() -> None:
    message = _errors({"key_file": "k", "signing_cert": "c", "sinks": [{"type": "file", "directory": "a"}]})
    assert "signing_cert needs signing_key" in message


def test_redaction_paths_are_checked() -> None:
    message = _errors(
        {
            "key_file": "k",
            "sinks": [{"type": "file", "directory": "a"}],
            "redaction": {"hash": ["headers..x"]},
        }
    )
    assert message.startswith("audit.redaction.hash:")


def test_config_is_frozen() -> None:
    config = AuditConfig.model_validate({"key_file": "k", "sinks": [{"type": "file", "directory": "a"}]})
    with pytest.raises(ValidationError):
        config.queue_size = 3
