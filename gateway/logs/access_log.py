"""The access log: one line per HTTP request, in Envoy's format vocabulary, to stdout or a file.

The HTTP path builds one :class:`AccessRecord` when a request finishes (or fails) and calls
:func:`log_request`; every configured access log whose ``listeners`` filter matches renders it and
writes one line. Formats are compiled once at configuration time, so an unknown ``%OPERATOR%`` is a
config error, not a surprise at the first request.

Text formats use Envoy's command operators (a value that is missing renders as ``-``)::

    %START_TIME%  %START_TIME(%Y-%m-%dT%H:%M:%S%z)%  %DURATION% (ms)  %PROTOCOL%  %RESPONSE_CODE%
    %RESPONSE_FLAGS%  %BYTES_RECEIVED%  %BYTES_SENT%  %REQ(:METHOD)%  %REQ(:PATH)%  %REQ(:AUTHORITY)%
    %REQ(X?Y):N% (header X, else Y, cut to N chars)  %RESP(X)%  %ROUTE_NAME%  %UPSTREAM_HOST%
    %UPSTREAM_CLUSTER%  %DOWNSTREAM_REMOTE_ADDRESS%  %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%
    %DOWNSTREAM_LOCAL_ADDRESS%  %CONNECTION_ID%  %LISTENER_NAME%  %REQUESTED_SERVER_NAME%
    %DOWNSTREAM_TLS_VERSION%  %DOWNSTREAM_TLS_CIPHER%  %DOWNSTREAM_TLS_RESUMED%
    %DOWNSTREAM_PEER_SUBJECT%  %DOWNSTREAM_PEER_ISSUER%  %DOWNSTREAM_PEER_SERIAL%
    %DOWNSTREAM_PEER_FINGERPRINT_256%  %DOWNSTREAM_PEER_FINGERPRINT_SM3%  %%  (a literal %)

``json_format`` maps keys to format strings; a value that is exactly one numeric operator
(``%RESPONSE_CODE%``, ``%DURATION%``, bytes) stays a JSON number, as in Envoy.

Query strings: ``query: keep`` (Envoy's behaviour), ``redact`` (every parameter value becomes
``REDACTED``; names stay) or ``strip``. The query is rewritten in the record before any operator sees
it, so ``%REQ(:PATH)%`` and ``%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`` alike are redacted.

Files are opened ``O_APPEND`` and each line is one ``write``: workers sharing a file never interleave
within a line. :func:`reopen_access_logs` (SIGUSR1) reopens every file for logrotate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from gateway.identity import PeerIdentity

#: Envoy's default access log format (its X-ENVOY-* headers are simply absent here, so they print "-").
DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"'
)


@dataclass(slots=True)
class AccessRecord:
    """What one finished request contributes to the access log (built by the HTTP path).

    ``request_headers``/``response_headers`` are (name, value) pairs as received/sent; names are
    matched case-insensitively. ``path`` is the request target as received, query included.
    """

    listener: str
    connection_id: int
    start_time: dt.datetime
    duration_ms: float
    method: str = "-"
    path: str = "-"
    authority: str | None = None
    protocol: str = "HTTP/1.1"
    response_code: int = 0
    response_flags: str = "-"
    bytes_received: int = 0
    bytes_sent: int = 0
    route_name: str | None = None
    upstream_cluster: str | None = None
    upstream_host: str | None = None
    request_headers: Sequence[tuple[str, str]] = ()
    response_headers: Sequence[tuple[str, str]] = ()
    identity: PeerIdentity | None = None
    local_address: tuple[str, int] | None = None
    _request_index: dict[str, str] | None = field(default=None, repr=False)

    def request_header(self, name: str) -> str | None:
        if self._request_index is None:
            self._request_index = {}
            for key, value in self.request_headers:
                self._request_index.setdefault(key.lower(), value)
        return self._request_index.get(name)

    def response_header(self, name: str) -> str | None:
        return next((v for k, v in self.response_headers if k.lower() == name), None)


class AccessLogConfig(BaseModel):
    """One access log (``logging.access_logs[]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: A file (appended to; reopened on SIGUSR1) or ``-`` for stdout.
    path: str = "-"
    format: str | None = None
    json_format: dict[str, str] | None = None
    #: Listener names this log covers; empty: every listener.
    listeners: tuple[str, ...] = ()
    query: Literal["keep", "redact", "strip"] = "keep"

    @model_validator(mode="after")
    def _one_format(self) -> AccessLogConfig:
        if self.format is not None and self.json_format is not None:
            raise ValueError("use one of format, json_format")
        compile_format(self.format or DEFAULT_FORMAT)
        for value in (self.json_format or {}).values():
            compile_format(value)
        return self

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value:
            raise ValueError("path is empty (use '-' for stdout)")
        return value


# -- operators -----------------------------------------------------------------------------------

Getter = Callable[[AccessRecord], object]


def _peer(attribute: str) -> Getter:
    def get(record: AccessRecord) -> object:
        peer = record.identity.peer if record.identity is not None else None
        return getattr(peer, attribute) if peer is not None else None

    return get


def _identity(attribute: str) -> Getter:
    return lambda r: getattr(r.identity, attribute) if r.identity is not None else None


def _remote(with_port: bool) -> Getter:
    def get(record: AccessRecord) -> object:
        identity = record.identity
        if identity is None or not identity.remote_address:
            return None
        if not with_port:
            return identity.remote_address
        host = identity.remote_address
        return f"[{host}]:{identity.remote_port}" if ":" in host else f"{host}:{identity.remote_port}"

    return get


def _local(record: AccessRecord) -> object:
    if record.local_address is None:
        return None
    host, port = record.local_address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _resumed(record: AccessRecord) -> object:
    if record.identity is None or not record.identity.secure:
        return None
    return "true" if record.identity.resumed else "false"


_SIMPLE: dict[str, Getter] = {
    "DURATION": lambda r: round(r.duration_ms),
    "PROTOCOL": lambda r: r.protocol,
    "RESPONSE_CODE": lambda r: r.response_code,
    "RESPONSE_FLAGS": lambda r: r.response_flags,
    "BYTES_RECEIVED": lambda r: r.bytes_received,
    "BYTES_SENT": lambda r: r.bytes_sent,
    "ROUTE_NAME": lambda r: r.route_name,
    "UPSTREAM_HOST": lambda r: r.upstream_host,
    "UPSTREAM_CLUSTER": lambda r: r.upstream_cluster,
    "CONNECTION_ID": lambda r: r.connection_id,
    "LISTENER_NAME": lambda r: r.listener,
    "DOWNSTREAM_REMOTE_ADDRESS": _remote(True),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": _remote(False),
    "DOWNSTREAM_LOCAL_ADDRESS": _local,
    "REQUESTED_SERVER_NAME": _identity("sni"),
    "DOWNSTREAM_TLS_VERSION": lambda r: r.identity.version if r.identity and r.identity.secure else None,
    "DOWNSTREAM_TLS_CIPHER": _identity("cipher_suite"),
    "DOWNSTREAM_TLS_RESUMED": _resumed,
    "DOWNSTREAM_PEER_SUBJECT": _peer("subject"),
    "DOWNSTREAM_PEER_ISSUER": _peer("issuer"),
    "DOWNSTREAM_PEER_SERIAL": lambda r: (lambda s: None if s is None else format(s, "x"))(_peer("serial")(r)),
    "DOWNSTREAM_PEER_FINGERPRINT_256": _peer("fingerprint_sha256"),
    "DOWNSTREAM_PEER_FINGERPRINT_SM3": _peer("fingerprint_sm3"),
}
_NUMERIC = frozenset({"DURATION", "RESPONSE_CODE", "BYTES_RECEIVED", "BYTES_SENT", "CONNECTION_ID"})
_PSEUDO: dict[str, Getter] = {
    ":method": lambda r: r.method,
    ":path": lambda r: r.path,
    ":authority": lambda r: r.authority if r.authority is not None else r.request_header("host"),
    ":scheme": lambda r: "https" if r.identity is not None and r.identity.secure else "http",
}
_OPERATOR = re.compile(r"%([A-Z0-9_]+)(?:\(([^)]*)\))?(?::([0-9]+))?%|%%")


def _start_time(argument: str | None) -> Getter:
    if argument:
        return lambda r: r.start_time.strftime(argument)
    return lambda r: r.start_time.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _header(argument: str | None, response: bool) -> Getter:
    if not argument:
        raise ValueError(f"%{'RESP' if response else 'REQ'}(...)% needs a header name")
    names = [n.strip().lower() for n in argument.split("?")]
    if len(names) > 2 or not all(names):
        raise ValueError(f"bad header alternatives {argument!r} (use X or X?Y)")

    def one(name: str) -> Getter:
        if response:
            return lambda r: r.response_header(name)
        pseudo = _PSEUDO.get(name)
        if name.startswith(":") and pseudo is None:
            raise ValueError(f"unknown pseudo-header {name!r}")
        return pseudo if pseudo is not None else (lambda r: r.request_header(name))

    getters = [one(n) for n in names]

    def get(record: AccessRecord) -> object:
        for getter in getters:
            value = getter(record)
            if value is not None:
                return value
        return None

    return get


def _operator(name: str, argument: str | None) -> Getter:
    if name == "START_TIME":
        return _start_time(argument)
    if name in ("REQ", "RESP"):
        return _header(argument, response=name == "RESP")
    if name not in _SIMPLE or argument is not None:
        raise ValueError(f"unknown access log operator %{name}{f'({argument})' if argument else ''}%")
    return _SIMPLE[name]


def _truncated(getter: Getter, length: int | None) -> Getter:
    if length is None:
        return getter

    def get(record: AccessRecord) -> object:
        value = getter(record)
        return None if value is None else str(value)[:length]

    return get


@dataclass(frozen=True, slots=True)
class CompiledFormat:
    """A format string as literal text and getters; ``single`` is set when it is one operator only."""

    parts: tuple[str | Getter, ...]
    single: Getter | None
    numeric: bool

    def render(self, record: AccessRecord) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part(record)
                out.append("-" if value is None or value == "" else str(value))
        return "".join(out)

    def value(self, record: AccessRecord) -> object:
        """The JSON value: a number for a lone numeric operator, ``None`` for a missing one, else text."""
        if self.single is not None:
            value = self.single(record)
            if value is None or self.numeric:
                return value
            return str(value)
        return self.render(record)


def compile_format(text: str) -> CompiledFormat:
    """Compile a format string; raises ``ValueError`` naming an unknown operator."""
    parts: list[str | Getter] = []
    position = 0
    numeric_operators: list[bool] = []
    for match in _OPERATOR.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        position = match.end()
        if match.group(0) == "%%":
            parts.append("%")
            continue
        name, argument, length = match.group(1), match.group(2), match.group(3)
        numeric_operators.append(name in _NUMERIC and length is None)
        parts.append(_truncated(_operator(name, argument), int(length) if length else None))
    if position < len(text):
        parts.append(text[position:])
    stray = [p for p in parts if isinstance(p, str) and p != "%" and "%" in p]
    if stray:
        raise ValueError(f"unparsed % in access log format near {stray[0][:32]!r}")
    single = parts[0] if len(parts) == 1 and not isinstance(parts[0], str) else None
    numeric = single is not None and numeric_operators[0]
    return CompiledFormat(tuple(parts), single if callable(single) else None, numeric)


# -- query redaction -------------------------------------------------------------------------------


def redact_query(path: str, mode: str) -> str:
    """``path`` with its query kept, stripped, or with every parameter value replaced by ``REDACTED``."""
    if mode == "keep" or "?" not in path:
        return path
    base, _, query = path.partition("?")
    if mode == "strip":
        return base
    params = [p.partition("=")[0] + ("=REDACTED" if "=" in p else "") for p in query.split("&")]
    return f"{base}?{'&'.join(params)}"


# -- writers and the process-wide set of access logs ------------------------------------------------


class AccessLogWriter:
    """Appends whole lines to a file (``O_APPEND``, one write per line) or to stdout."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = self._open()

    def _open(self) -> int:
        if self.path == "-":
            return sys.stdout.fileno()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        try:
            os.write(self._fd, data)
        except BlockingIOError:
            return  # a stdout pipe nobody reads must not stall the event loop; the line is dropped

    def reopen(self) -> None:
        """Open the path again (after logrotate moved the file) and close the old descriptor."""
        if self.path == "-":
            return
        old, self._fd = self._fd, self._open()
        os.close(old)

    def close(self) -> None:
        if self.path != "-":
            os.close(self._fd)


class AccessLog:
    """One configured access log: which listeners, how the query is treated, the format, the writer."""

    def __init__(self, config: AccessLogConfig, writer: AccessLogWriter) -> None:
        self.config = config
        self.writer = writer
        self.listeners = frozenset(config.listeners)
        self._text = compile_format(config.format or DEFAULT_FORMAT) if config.json_format is None else None
        self._json = {k: compile_format(v) for k, v in (config.json_format or {}).items()}

    def covers(self, listener: str) -> bool:
        return not self.listeners or listener in self.listeners

    def render(self, record: AccessRecord) -> str:
        if self._text is not None:
            return self._text.render(record)
        return json.dumps({k: f.value(record) for k, f in self._json.items()}, separators=(",", ":"))

    def log(self, record: AccessRecord) -> None:
        self.writer.write(self.render(record))


_access_logs: tuple[AccessLog, ...] = ()


def configure_access_logs(configs: Sequence[AccessLogConfig]) -> None:
    """Install the access logs of a (new) configuration; writers for unchanged paths are kept open."""
    global _access_logs
    writers = {log.writer.path: log.writer for log in _access_logs}
    fresh = tuple(AccessLog(c, writers.get(c.path) or AccessLogWriter(c.path)) for c in configs)
    kept = {log.writer.path for log in fresh}
    for path, writer in writers.items():
        if path not in kept:
            writer.close()
    _access_logs = fresh


def log_request(record: AccessRecord) -> None:
    """Write ``record`` to every access log covering its listener (the HTTP path's one call).

    Cheap when no access log is configured. The ``query`` policy of each log is applied to ``path``
    before rendering."""
    if not _access_logs:
        return
    raw_path = record.path
    for access_log in _access_logs:
        if access_log.covers(record.listener):
            record.path = redact_query(raw_path, access_log.config.query)
            access_log.log(record)
    record.path = raw_path


def reopen_access_logs() -> None:
    """Reopen every access log file (SIGUSR1, after logrotate)."""
    for access_log in _access_logs:
        access_log.writer.reopen()
