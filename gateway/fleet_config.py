"""Configuration of the parts that make many processes act as one gateway.

``supervisor:`` — how ``smgate serve --workers N`` restarts workers (:mod:`gateway.supervisor`).
``session_store:`` — where TLCP sessions and TLS 1.3-SM ticket keys live so that any worker, on any
host, can resume them (:mod:`gateway.session_store`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator


def _key_file(value: Path, info: ValidationInfo) -> Path:
    """Resolved against the config file's directory (the ``base_dir`` context of ``parse_config``)."""
    base = info.context.get("base_dir") if isinstance(info.context, Mapping) else None
    path = value if value.is_absolute() or base is None else Path(base) / value
    if not path.is_file():
        raise ValueError("file not found")
    return path


class SupervisorConfig(BaseModel):
    """Respawn policy: a worker that dies is started again after ``restart_backoff`` seconds, doubling
    up to ``max_restart_backoff`` while it keeps dying within ``stable_after`` seconds of its start;
    more than ``max_restarts`` restarts within ``restart_window`` seconds is a crash loop and stops the
    whole gateway (exit status 1), so that systemd or Kubernetes sees the failure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    restart_backoff: float = Field(default=0.5, gt=0, le=60)
    max_restart_backoff: float = Field(default=10.0, gt=0, le=600)
    stable_after: float = Field(default=30.0, gt=0, le=3600)
    max_restarts: int = Field(default=5, ge=1, le=1000)
    restart_window: float = Field(default=60.0, gt=0, le=86400)


class RedisEndpoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = "127.0.0.1"
    port: int = Field(default=6379, gt=0, le=65535)
    db: int = Field(default=0, ge=0, le=15)
    #: Environment variable holding the Redis password (AUTH), if any.
    password_env: str | None = None
    #: Seconds to wait for Redis before resuming without it (a full handshake happens instead).
    timeout: float = Field(default=0.2, gt=0, le=10)


class SessionStoreConfig(BaseModel):
    """``session_store:`` — TLCP sessions and TLS 1.3-SM ticket keys shared beyond one process.

    ``host``: a store shared by the workers of one host (a SQLite file in the supervisor's private
    runtime directory). ``redis``: a Redis server shared by every host behind the load balancer.
    Entries are sealed with SM4-GCM under ``key_file`` (16 random bytes, raw or hex); the key
    must be the same on every host sharing a Redis. Without ``key_file`` (``host`` only), the
    supervisor makes a random key at start and hands it to its workers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["host", "redis"] = "host"
    key_file: Annotated[Path, AfterValidator(_key_file)] | None = None
    redis: RedisEndpoint | None = None
    #: Key prefix in Redis (several gateways may share one server).
    prefix: str = Field(default="smgate:tlcp:", min_length=1, max_length=64)
    lifetime: float = Field(default=7200.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _consistent(self) -> SessionStoreConfig:
        if self.backend == "redis" and self.redis is None:
            raise ValueError("backend redis needs a redis section")
        if self.backend == "redis" and self.key_file is None:
            raise ValueError("backend redis needs key_file (the same SM4 key on every host)")
        return self
