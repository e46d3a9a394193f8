"""Operator logs: structlog rendering, rate-limited peer errors, the access log (formats, JSON, query
redaction, files reopened on SIGUSR1), and lifecycle lines of a running gateway."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import signal
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from gateway.config import load_config, parse_config
from gateway.identity import PeerCertificate, PeerIdentity
from gateway.logs import access_log
from gateway.logs.access_log import (
    DEFAULT_FORMAT,
    AccessLogConfig,
    AccessRecord,
    compile_format,
    configure_access_logs,
    log_request,
    redact_query,
)
from gateway.logs.rate_limit import RateLimitedLog
from gateway.logs.setup import configure_logging, get_logger, renderer_for
from gateway.server import Gateway
from tests.gateway.conftest import write_config
from tests.gateway.helpers import RecordingAudit, base_doc


@pytest.fixture
def log_buffer():
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer, static={"worker": 3})
    yield buffer
    structlog.reset_defaults()


def _lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_level_time_component_and_static_fields(log_buffer):
    get_logger("gateway").info("gateway started", generation=1)
    get_logger("gateway").debug("not shown at info")
    [line] = _lines(log_buffer)
    assert line["event"] == "gateway started" and line["level"] == "info" and line["worker"] == 3
    assert line["component"] == "gateway" and line["timestamp"].endswith("Z")


def test_auto_format_is_console_on_a_terminal_and_json_otherwise():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert type(renderer_for("auto", Tty())).__name__ == "ConsoleRenderer"
    assert type(renderer_for("auto", io.StringIO())).__name__ == "JSONRenderer"
    assert type(renderer_for("console", io.StringIO())).__name__ == "ConsoleRenderer"


def test_rate_limited_log_counts_what_it_drops():
    now = [0.0]
    written: list[tuple[str, dict]] = []

    class Sink:
        def warning(self, event: str, **fields: object) -> None:
            written.append((event, fields))

    limited = RateLimitedLog(Sink(), rate=2.0, burst=3, clock=lambda: now[0])
    results = [limited.warning("handshake failed", reason="garbage", peer=f"10.0.0.{i}") for i in range(10)]
    assert results == [True] * 3 + [False] * 7
    assert limited.warning("handshake failed", reason="handshake_timeout")  # another reason, own bucket
    now[0] = 0.5  # one token back at 2 per second
    assert limited.warning("handshake failed", reason="garbage", peer="10.0.0.99")
    assert written[-1][1]["suppressed"] == 7 and written[-1][1]["peer"] == "10.0.0.99"
    assert not limited.warning("handshake failed", reason="garbage")


def _identity() -> PeerIdentity:
    cert = PeerCertificate(
        der=b"",
        subject="CN=client.test,O=bank",
        issuer="CN=ca",
        san_dns=(),
        san_ip=(),
        fingerprint_sha256="ab" * 32,
        fingerprint_sm3=None,
        serial=0x1F,
    )
    return PeerIdentity(
        protocol="tlcp",
        version="TLCPv1.1",
        cipher_suite="ECC_SM4_GCM_SM3",
        sni="api.test",
        peer_chain=(cert,),
        resumed=True,
        remote_address="198.51.100.7",
        remote_port=4242,
    )


def _record(**overrides) -> AccessRecord:
    fields: dict[str, Any] = {
        "listener": "main",
        "connection_id": 7,
        "start_time": dt.datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=dt.UTC),
        "duration_ms": 12.6,
        "method": "GET",
        "path": "/pay?account=1&token=s3cret",
        "response_code": 200,
        "bytes_received": 10,
        "bytes_sent": 20,
        "upstream_host": "10.0.0.5:8080",
        "upstream_cluster": "payments",
        "route_name": "pay",
        "request_headers": [("Host", "api.test"), ("User-Agent", "curl/8"), ("X-Request-Id", "r1")],
        "response_headers": [("X-Upstream", "a")],
        "identity": _identity(),
    }
    fields.update(overrides)
    return AccessRecord(**fields)


def test_default_format_is_envoys():
    line = compile_format(DEFAULT_FORMAT).render(_record())
    assert line == (
        '[2026-03-01T12:00:00.123Z] "GET /pay?account=1&token=s3cret HTTP/1.1" 200 - 10 20 13 - "-" '
        '"curl/8" "r1" "api.test" "10.0.0.5:8080"'
    )


def test_tls_and_client_certificate_operators():
    fmt = compile_format(
        "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% "
        "%DOWNSTREAM_TLS_RESUMED% %REQUESTED_SERVER_NAME% %DOWNSTREAM_PEER_SUBJECT% "
        "%DOWNSTREAM_PEER_SERIAL% %REQ(X-MISSING?USER-AGENT):4% %RESP(x-upstream)% "
        "%START_TIME(%Y/%m/%d)% 100%%"
    )
    assert fmt.render(_record()) == (
        "198.51.100.7:4242 TLCPv1.1 ECC_SM4_GCM_SM3 true api.test CN=client.test,O=bank 1f curl a 2026/03/01 100%"
    )
    plain = _record(identity=PeerIdentity(protocol="plain", version="-"))
    assert fmt.render(plain).startswith("- - - - - - - curl")


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("%NOPE%", "unknown access log operator"),
        ("%REQ()%", "needs a header name"),
        ("%REQ(:FOO)%", "unknown pseudo-header"),
        ("%DURATION(x)%", "unknown access log operator"),
        ("50% done", "unparsed %"),
    ],
)
def test_unknown_operators_are_config_errors(fmt, message):
    with pytest.raises(ValidationError, match=message):
        AccessLogConfig(format=fmt)


def test_query_redaction():
    assert redact_query("/a?x=1&y&z=", "redact") == "/a?x=REDACTED&y&z=REDACTED"
    assert redact_query("/a?x=1", "strip") == "/a"
    assert redact_query("/a?x=1", "keep") == "/a?x=1"
    assert redact_query("/a", "redact") == "/a"


def test_json_format_file_listener_filter_and_reopen(tmp_path):
    path = tmp_path / "logs" / "access.log"
    configure_access_logs(
        [
            AccessLogConfig(
                path=str(path),
                json_format={
                    "status": "%RESPONSE_CODE%",
                    "path": "%REQ(:PATH)%",
                    "ms": "%DURATION%",
                    "upstream": "%UPSTREAM_HOST%",
                    "ua": "%REQ(USER-AGENT)%",
                    "missing": "%REQ(X-NONE)%",
                    "peer": "%DOWNSTREAM_PEER_SUBJECT%",
                },
                listeners=("main",),
                query="redact",
            )
        ]
    )
    try:
        log_request(_record())
        log_request(_record(listener="other"))  # not covered by this log
        os.rename(path, tmp_path / "logs" / "access.log.1")  # logrotate
        log_request(_record(response_code=503))
        access_log.reopen_access_logs()
        log_request(_record(response_code=201))
    finally:
        configure_access_logs([])
    rotated = [json.loads(x) for x in (tmp_path / "logs" / "access.log.1").read_text().splitlines()]
    assert [r["status"] for r in rotated] == [200, 503]
    assert rotated[0] == {
        "status": 200,
        "path": "/pay?account=REDACTED&token=REDACTED",
        "ms": 13,
        "upstream": "10.0.0.5:8080",
        "ua": "curl/8",
        "missing": None,
        "peer": "CN=client.test,O=bank",
    }
    assert [json.loads(x)["status"] for x in path.read_text().splitlines()] == [201]


def test_access_log_listeners_must_exist(pki):
    doc = base_doc(pki, 9)
    doc["logging"] = {"access_logs": [{"listeners": ["main", "nope"]}]}
    with pytest.raises(Exception, match=r"logging.access_logs\[0\].listeners: unknown listener 'nope'"):
        parse_config(doc, pki.ca.parent)


async def test_lifecycle_lines_and_sigusr1(pki, tmp_path, log_buffer):
    doc = base_doc(pki, 9, protocols=("plain",))
    path = tmp_path / "access.log"
    doc["logging"] = {"access_logs": [{"path": str(path)}]}
    config_path = write_config(tmp_path / "gw.yaml", doc)
    gw = Gateway(load_config(config_path), config_path=config_path, audit=RecordingAudit())
    await gw.start()
    try:
        gw.install_signal_handlers()
        log_request(_record())
        os.rename(path, tmp_path / "access.log.1")
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100):
            if path.exists():
                break
            await asyncio.sleep(0.01)
        log_request(_record())
        assert await gw.reload() == []
        config_path.write_text("listeners: []\n")
        assert await gw.reload() != []
    finally:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await gw.stop()
    assert path.read_text().count("\n") == 1 and (tmp_path / "access.log.1").read_text().count("\n") == 1
    events = [line["event"] for line in _lines(log_buffer)]
    for event in (
        "gateway started",
        "access logs reopened",
        "config reload accepted",
        "config reload rejected",
        "drain started",
        "drain finished",
    ):
        assert event in events, events
    started = next(x for x in _lines(log_buffer) if x["event"] == "gateway started")
    assert started["listeners"][0]["name"] == "main" and started["listeners"][0]["protocols"] == ["plain"]
    rejected = next(x for x in _lines(log_buffer) if x["event"] == "config reload rejected")
    assert rejected["source"] == "api" and "at least one listener" in rejected["errors"][0]
