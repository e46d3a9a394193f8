"""The GmSSL tolerance ``accept_certificate_request_in_psk`` as operators set it: on a cluster's tls13_sm
transport_socket and as ``smgate client --protocol tls13-sm --accept-certificate-request-in-psk``
(the engine's behaviour is in tests/tls13/test_psk_certificate_request.py)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from gateway import client as client_cli
from gateway.config import ConfigError, parse_config
from gateway.transports.tls13_sm import Tls13SmConnector
from tests.gateway.test_tls13_sm import _tcp_proxy_doc


def _transport(demo_pki, **settings: object) -> dict:
    return {"port": 9, "trust_anchors": str(demo_pki.sm2.ca_bundle), **settings}


def test_cluster_transport_carries_the_tolerance_to_the_engine(demo_pki) -> None:
    for setting in (False, True):
        transport = _transport(demo_pki, type="tls13_sm", accept_certificate_request_in_psk=setting)
        config = parse_config(_tcp_proxy_doc(transport), Path.cwd())
        connector = Tls13SmConnector(config.clusters[0].transport_socket)
        assert connector.configuration.accept_certificate_request_in_psk is setting


def test_tolerance_is_only_for_tls13_sm(demo_pki) -> None:
    transport = _transport(demo_pki, type="tlcp", accept_certificate_request_in_psk=True)
    with pytest.raises(ConfigError) as refused:
        parse_config(_tcp_proxy_doc(transport), Path.cwd())
    [error] = refused.value.errors
    assert error.startswith("clusters[0].transport_socket")
    assert "accept_certificate_request_in_psk: only for type tls13_sm" in error


def _client_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    client_cli.register(parser.add_subparsers())
    return parser.parse_args(["client", "127.0.0.1", "9", *argv])


def test_client_flag_reaches_the_configuration(demo_pki) -> None:
    cafile = str(demo_pki.sm2.ca_bundle)
    default = _client_args("--protocol", "tls13-sm", "--cafile", cafile)
    assert not client_cli.tls13_sm_configuration(default).accept_certificate_request_in_psk
    tolerant = _client_args(
        "--protocol", "tls13-sm", "--cafile", cafile, "--accept-certificate-request-in-psk"
    )
    assert client_cli.tls13_sm_configuration(tolerant).accept_certificate_request_in_psk


def test_client_flag_is_refused_for_other_protocols() -> None:
    args = _client_args("--protocol", "tlcp", "--accept-certificate-request-in-psk")
    with pytest.raises(ValueError, match="--accept-certificate-request-in-psk is for --protocol tls13-sm"):
        asyncio.run(client_cli.run_client(args))


def test_a_tolerated_request_is_logged_once_a_minute(monkeypatch) -> None:
    """The connector calls this when a resumed handshake's HandshakeComplete has certificate_requested
    (the engine side is tests/tls13/test_psk_certificate_request.py)."""
    from gateway.logs.rate_limit import RateLimitedLog
    from gateway.transports import tls13_sm

    now = [0.0]
    written: list[tuple[str, dict]] = []

    class Sink:
        def warning(self, event: str, **fields: object) -> None:
            written.append((event, fields))

    limited = RateLimitedLog(Sink(), rate=1 / 60, burst=1, clock=lambda: now[0])
    monkeypatch.setattr(tls13_sm, "_tolerated_log", limited)
    for _ in range(5):
        tls13_sm._note_certificate_request_in_psk("10.0.0.7", 8443)
    now[0] = 61.0
    tls13_sm._note_certificate_request_in_psk("10.0.0.7", 8443)
    assert [event for event, _ in written] == [
        "upstream asked for a client certificate in a resumed handshake"
    ] * 2
    assert written[0][1]["host"] == "10.0.0.7:8443" and "RFC 8446 4.3.2" in written[0][1]["detail"]
    assert written[1][1]["suppressed"] == 4
