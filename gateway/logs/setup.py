"""structlog configuration: one processor list, rendered for a person or for a machine.

``configure_logging`` is called once per process (``smgate serve``, each worker, the supervisor)
with the level and format from ``--log-level``/``--log-format`` or else the ``logging:`` section.
Format ``auto`` renders with structlog's console renderer when the stream is a terminal and as one
JSON object per line otherwise (log shippers, ``kubectl logs``, journald). Lines go to stderr: stdout
belongs to the access log when it is configured without a path.

The processors, in order: context variables, level, UTC ISO timestamp, the process's static fields
(``worker``, ``pid`` under a supervisor), exception info, then the renderer. Nothing here ever
formats a secret: callers log names, paths, reasons and addresses, never key material.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from pydantic import BaseModel, ConfigDict, Field

from gateway.logs.access_log import AccessLogConfig

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["auto", "console", "json"]
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS: tuple[str, ...] = ("auto", "console", "json")


class LoggingConfig(BaseModel):
    """The ``logging:`` section (``--log-level``/``--log-format`` on ``serve`` override the first two)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: LogLevel = "info"
    format: LogFormat = "auto"
    #: Handshake-failure (and other peer-triggered) lines per second, per reason; the rest are counted.
    peer_error_rate: float = Field(default=5.0, gt=0, le=10000)
    peer_error_burst: int = Field(default=20, ge=1, le=100000)
    access_logs: tuple[AccessLogConfig, ...] = ()


def _static_fields(fields: Mapping[str, Any]) -> structlog.types.Processor:
    def add_static(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    return add_static


def renderer_for(fmt: str, stream: TextIO) -> structlog.types.Processor:
    """``console`` (colours only on a terminal), ``json``, or ``auto``: console on a terminal, else JSON."""
    tty = stream.isatty()
    if fmt == "json" or (fmt == "auto" and not tty):
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.dev.ConsoleRenderer(colors=tty, pad_event_to=24)


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    stream: TextIO | None = None,
    static: Mapping[str, Any] | None = None,
) -> None:
    """Configure structlog for this process; safe to call again (a reload may change the level)."""
    out = stream if stream is not None else sys.stderr
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if static:
        processors.append(_static_fields(dict(static)))
    processors += [structlog.processors.format_exc_info, renderer_for(fmt, out)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(component: str) -> Any:
    """A logger whose lines carry ``component`` (``gateway``, ``listener``, ``supervisor``, ...).

    Lazy: it reads the configuration at each call, so module-level loggers created before
    :func:`configure_logging` still follow it (``bind`` would freeze the configuration of the moment)."""
    return structlog.get_logger(component=component)


def announce(line: str) -> None:
    """Print a readiness banner (``smgate serving …``) on stdout as one write.

    ``print`` writes the text and its newline separately, and on an unbuffered stdout the workers of a
    supervisor, which share its stdout, then interleave their banners mid-line. One write of less
    than PIPE_BUF bytes reaches a pipe whole.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
