"""The gateway on uvloop (the default event loop when installed): TLCP and TLS downstream on one port,
TLCP upstream with a client pair, and the `smgate serve` default loop."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gateway.cli import build_parser
from gateway.echo import EchoService
from tests.gateway.helpers import HttpClient, running
from tests.gateway.test_tlcp import client_config, gateway_doc, tlcp_get, tlcp_listener
from tls.tlcp import CipherSuite
from tls.tlcp.aio import tlcp_connect

uvloop = pytest.importorskip("uvloop")


def run_on_uvloop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def test_tlcp_through_the_gateway_on_uvloop(demo_pki):
    async def scenario() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        echo = await EchoService(name="echo").start()
        try:
            inner_listener = tlcp_listener(
                demo_pki, client_auth="required", protocols=("tlcp",), name="inner"
            )
            async with running(gateway_doc(demo_pki, echo.port, listener=inner_listener)) as inner:
                transport = {
                    "type": "tlcp",
                    "server_name": "localhost",
                    "trust_anchors": str(demo_pki.sm2.ca_bundle),
                    "sign_cert": str(demo_pki.sm2.client_sign.cert),
                    "sign_key": str(demo_pki.sm2.client_sign.key),
                    "enc_cert": str(demo_pki.sm2.client_enc.cert),
                    "enc_key": str(demo_pki.sm2.client_enc.key),
                    "chain": str(demo_pki.sm2.chain),
                    "cipher_suites": ["ECDHE_SM4_GCM_SM3"],
                }
                doc = gateway_doc(demo_pki, inner.listener_port("inner"), transport=transport)
                async with running(doc) as outer:
                    port = outer.listener_port("main")
                    hs, status, _, body = await tlcp_get(
                        port, demo_pki, "/a", pair=True, suites=["ECDHE_SM4_GCM_SM3"]
                    )
                    assert status == 200 and hs.cipher_suite == CipherSuite.ECDHE_SM4_GCM_SM3
                    headers = HttpClient.json(None, body)["headers"]  # type: ignore[arg-type]
                    # the inner gateway saw the outer one's TLCP client pair
                    assert headers["x-ssl-protocol"] == "TLCPv1.1"
                    assert (
                        headers["x-client-cert-subject"]
                        == demo_pki.client_certificate_set().sign_cert.subject
                    )

                    stream = await tlcp_connect(
                        "127.0.0.1", port, client_config(demo_pki), handshake_timeout=5
                    )
                    client = HttpClient(stream, stream)  # type: ignore[arg-type]
                    large = bytes(range(256)) * 1024
                    status, _, body = await client.request("POST", "/big", body=large)
                    assert status == 200 and HttpClient.json(None, body)["body_bytes"] == len(large)  # type: ignore[arg-type]
                    await client.close()

                    ctx = ssl.create_default_context(cafile=str(demo_pki.rsa.ca.cert))
                    tls_client = await HttpClient.open(port, ctx)
                    assert (await tls_client.request("GET", "/tls"))[0] == 200
                    await tls_client.close()
        finally:
            await echo.close()

    run_on_uvloop(scenario)


def test_uvloop_is_the_default_and_can_be_turned_off():
    parser = build_parser()
    assert parser.parse_args(["serve", "gw.yaml"]).uvloop is True
    assert parser.parse_args(["serve", "gw.yaml", "--uvloop"]).uvloop is True
    assert parser.parse_args(["serve", "gw.yaml", "--no-uvloop"]).uvloop is False
    assert parser.parse_args(["demo", "--no-uvloop"]).uvloop is False
