"""Audit configuration: pydantic models the gateway embeds under ``audit:`` in its YAML.

Validation errors carry the key path (``audit.sinks.1.port``); :func:`format_config_error` renders
them one per line. Relative paths are resolved by :meth:`AuditConfig.resolved` against the directory
of the file the configuration came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_HASHED_FIELDS = (
    "headers.authorization",
    "headers.proxy-authorization",
    "headers.cookie",
    "headers.set-cookie",
    "headers.x-api-key",
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileSinkConfig(_Model):
    """JSON lines on local disk: the durable source of truth other sinks replay from."""

    type: Literal["file"]
    directory: Path
    prefix: str = Field(default="audit", pattern=r"^[A-Za-z0-9_.-]+$")
    rotate_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    rotate_seconds: float | None = Field(default=86400.0, gt=0)
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval: float = Field(default=1.0, gt=0)


class StdoutSinkConfig(_Model):
    """JSON lines on standard output (containers)."""

    type: Literal["stdout"]
    name: str = "stdout"
    queue_size: int = Field(default=10000, ge=1)


class SyslogTLSConfig(_Model):
    """RFC 5425 TLS parameters (standard TLS via Python's ssl module)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    verify: bool = True

    @model_validator(mode="after")
    def _pair(self) -> SyslogTLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class SyslogSinkConfig(_Model):
    """RFC 5424 syslog over UDP, TCP or TLS (RFC 6587/5425 octet-counted framing on streams)."""

    type: Literal["syslog"]
    name: str | None = None
    transport: Literal["udp", "tcp", "tls"] = "tcp"
    host: str
    port: int = Field(ge=1, le=65535)
    facility: int = Field(default=13, ge=0, le=23, description="13 = log audit")
    app_name: str = Field(default="smgate", pattern=r"^[!-~]{1,48}$")
    hostname: str | None = Field(default=None, pattern=r"^[!-~]{1,255}$")
    sd_id: str = Field(default="smgate@32473", pattern=r"^[!#-<>-Z\\^-~]{1,32}$")
    queue_size: int = Field(default=10000, ge=1)
    tls: SyslogTLSConfig | None = None
    reconnect_initial: float = Field(default=0.1, gt=0)
    reconnect_max: float = Field(default=5.0, gt=0)
    replay_overlap: int = Field(default=256, ge=0)
    max_datagram: int = Field(default=65000, ge=480, le=65507)

    @model_validator(mode="after")
    def _tls_only_for_tls(self) -> SyslogSinkConfig:
        if self.tls is not None and self.transport != "tls":
            raise ValueError("tls settings are only valid with transport: tls")
        return self

    @property
    def sink_name(self) -> str:
        return self.name or f"syslog-{self.transport}-{self.host}-{self.port}"


SinkConfig = Annotated[FileSinkConfig | StdoutSinkConfig | SyslogSinkConfig, Field(discriminator="type")]


class CheckpointConfig(_Model):
    every_records: int = Field(default=1000, ge=1)
    every_seconds: float = Field(default=60.0, gt=0)


class RedactionConfig(_Model):
    """Dotted, case-insensitive field paths (``headers.authorization``); ``query.<name>`` is a parameter
    of an HTTP request target's query string (``query.*``: every parameter). Secrets are always dropped
    regardless."""

    hash: tuple[str, ...] = DEFAULT_HASHED_FIELDS
    drop: tuple[str, ...] = ()

    @field_validator("hash", "drop")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path or any(not part for part in path.split(".")):
                raise ValueError(f"invalid field path {path!r}")
        return value


class AuditConfig(_Model):
    """Everything the :class:`audit.log.AuditLog` needs."""

    key_file: Path
    signing_key: Path | None = None
    signing_key_password_file: Path | None = None
    signing_cert: Path | None = None
    instance_id: str | None = Field(default=None, min_length=1, max_length=128)
    sinks: tuple[SinkConfig, ...]
    checkpoint: CheckpointConfig = CheckpointConfig()
    redaction: RedactionConfig = RedactionConfig()
    queue_size: int = Field(default=65536, ge=16)
    batch_size: int = Field(default=512, ge=1)
    #: seconds the pipeline waits after the first queued event for more (0: process at once)
    batch_linger: float = Field(default=0.005, ge=0, le=1)
    #: where the pipeline runs: a thread of the gateway process, or a child process of its own
    pipeline: Literal["thread", "process"] = "process"
    #: when the pipeline cannot write: keep serving and declare any loss afterwards (``continue``), or
    #: stop accepting new connections (and fail ``/ready``) until it can write again
    on_failure: Literal["continue", "stop_accepting"] = "continue"
    state_dir: Path | None = None
    shutdown_timeout: float = Field(default=10.0, gt=0)

    @field_validator("sinks")
    @classmethod
    def _one_file_sink(cls, sinks: tuple[SinkConfig, ...]) -> tuple[SinkConfig, ...]:
        files = [sink for sink in sinks if isinstance(sink, FileSinkConfig)]
        if len(files) != 1:
            raise ValueError(
                "exactly one sink of type 'file' is required: it is the durable record other sinks replay from"
            )
        names = [
            sink.sink_name if isinstance(sink, SyslogSinkConfig) else sink.name for sink in followers(sinks)
        ]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"sink names must be unique: {', '.join(duplicates)}")
        return sinks

    @model_validator(mode="after")
    def _signing_pair(self) -> AuditConfig:
        if self.signing_cert is not None and self.signing_key is None:
            raise ValueError("signing_cert needs signing_key")
        if self.signing_key_password_file is not None and self.signing_key is None:
            raise ValueError("signing_key_password_file needs signing_key")
        return self

    @property
    def file_sink(self) -> FileSinkConfig:
        for sink in self.sinks:
            if isinstance(sink, FileSinkConfig):
                return sink
        raise AssertionError("validated config always has a file sink")

    @property
    def cursor_dir(self) -> Path:
        """Where follower sinks keep their acknowledged positions."""
        return self.state_dir if self.state_dir is not None else self.file_sink.directory / ".cursors"

    def resolved(self, base: Path) -> AuditConfig:
        """A copy with relative paths made relative to ``base`` (the config file's directory)."""
        data = self.model_dump()

        def fix(value: Any) -> Any:
            if isinstance(value, Path) and not value.is_absolute():
                return base / value
            if isinstance(value, dict):
                return {key: fix(item) for key, item in value.items()}
            if isinstance(value, list | tuple):
                return [fix(item) for item in value]
            return value

        return AuditConfig.model_validate(fix(data))


def followers(sinks: tuple[SinkConfig, ...]) -> list[StdoutSinkConfig | SyslogSinkConfig]:
    """The sinks fed from the file sink."""
    return [sink for sink in sinks if not isinstance(sink, FileSinkConfig)]


def load_audit_config(data: Mapping[str, Any]) -> AuditConfig:
    """Validate a mapping (the ``audit:`` section of a YAML document)."""
    return AuditConfig.model_validate(dict(data))


def format_config_error(error: ValidationError, prefix: str = "audit") -> str:
    """One ``key.path: message`` line per problem."""
    lines = []
    for item in error.errors():
        path = ".".join([prefix, *(str(part) for part in item["loc"])])
        lines.append(f"{path}: {item['msg']}")
    return "\n".join(lines)
