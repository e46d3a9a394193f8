"""TLCP through the gateway: sniffed on the TLS port, mTLS, identity, and TLCP/TLS upstreams."""

from __future__ import annotations

import asyncio

import pytest

from gateway.echo import EchoService
from tests.gateway.helpers import HttpClient, RecordingAudit, demo_certificate_set, running
from tls.tlcp import CipherSuite, TLCPConfiguration
from tls.tlcp.aio import TLCPStreamError, tlcp_connect


def tlcp_listener(
    demo,
    *,
    port=0,
    client_auth="none",
    suites=None,
    protocols=("tlcp", "tls1.3", "tls1.2"),
    route_config="main",
    name="main",
    identity=None,
) -> dict:
    if identity is None:  # identity headers need verified client certificates (issue 10)
        identity = client_auth != "none"
    tls: dict = {
        "protocols": list(protocols),
        "client_auth": client_auth,
        "sm2_trust_anchors": str(demo.sm2.ca_bundle),
        "trust_anchors": str(demo.rsa.ca.cert),
        "certificates": [demo_certificate_set(demo, tls_certificates=True)],
    }
    if suites:
        tls["cipher_suites"] = {"tlcp": suites}
    return {
        "name": name,
        "address": "127.0.0.1",
        "port": port,
        "handshake_timeout": 5,
        "tls": tls,
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "http_connection_manager",
                        "route_config": route_config,
                        "identity_headers": {"enabled": identity},
                    }
                ]
            }
        ],
    }


def gateway_doc(demo, upstream_port, *, transport=None, listener=None, max_idle=32) -> dict:
    return {
        "listeners": [listener or tlcp_listener(demo)],
        "route_configs": [
            {
                "name": "main",
                "virtual_hosts": [
                    {
                        "name": "all",
                        "routes": [{"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "up"}}],
                    }
                ],
            }
        ],
        "clusters": [
            {
                "name": "up",
                "endpoints": [{"address": "127.0.0.1", "port": upstream_port}],
                "transport_socket": transport or {"type": "plain"},
                "max_idle_connections": max_idle,
            }
        ],
        "admin": None,
    }


def client_config(demo, *, pair=False, suites=None) -> TLCPConfiguration:
    return TLCPConfiguration(
        is_client=True,
        cipher_suites=tuple(CipherSuite[s] for s in suites)
        if suites
        else (CipherSuite.ECC_SM4_GCM_SM3, CipherSuite.ECC_SM4_CBC_SM3),
        certificate_set=demo.client_certificate_set() if pair else None,
        trust_store=demo.sm2_trust_store(),
        server_name="localhost",
    )


async def tlcp_get(port, demo, path="/", **kw):
    stream = await tlcp_connect("127.0.0.1", port, client_config(demo, **kw), handshake_timeout=5)
    client = HttpClient(stream, stream)  # type: ignore[arg-type]
    try:
        status, headers, body = await client.request("GET", path)
    finally:
        stream.close()
    return stream.handshake, status, headers, body


@pytest.fixture
async def echo():
    service = await EchoService(name="echo").start()
    yield service
    await service.close()


async def test_tlcp_and_tls_share_one_port(demo_pki, echo):
    listener = tlcp_listener(demo_pki, client_auth="optional")  # identity headers need verified clients
    async with running(gateway_doc(demo_pki, echo.port, listener=listener)) as gw:
        port = gw.listener_port("main")
        hs, status, _, body = await tlcp_get(port, demo_pki, "/tlcp")
        assert status == 200 and hs.cipher_suite == CipherSuite.ECC_SM4_GCM_SM3
        headers = HttpClient.json(None, body)["headers"]  # type: ignore[arg-type]
        assert headers["x-ssl-protocol"] == "TLCPv1.1" and headers["x-ssl-cipher"] == "ECC_SM4_GCM_SM3"
        import ssl

        ctx = ssl.create_default_context(cafile=str(demo_pki.rsa.ca.cert))
        tls_client = await HttpClient.open(port, ctx)
        assert (await tls_client.request("GET", "/tls"))[0] == 200
        await tls_client.close()
        handshakes = {k: v for k, v in gw.stats.as_json().items() if k.startswith("smgate_handshakes_total")}
        assert (
            handshakes[
                "smgate_handshakes_total{cipher_suite=ECC_SM4_GCM_SM3,listener=main,protocol=tlcp,"
                "result=success}"
            ]
            == 1
        )


@pytest.mark.parametrize("suite", ["ECC_SM4_CBC_SM3", "ECDHE_SM4_GCM_SM3"])
async def test_tlcp_mtls_required(demo_pki, echo, suite):
    listener = tlcp_listener(demo_pki, client_auth="required", protocols=("tlcp",))
    async with running(gateway_doc(demo_pki, echo.port, listener=listener)) as gw:
        port = gw.listener_port("main")
        hs, status, _, body = await tlcp_get(port, demo_pki, "/who", pair=True, suites=[suite])
        assert status == 200 and hs.cipher_suite == CipherSuite[suite]
        headers = HttpClient.json(None, body)["headers"]  # type: ignore[arg-type]
        sign = demo_pki.client_certificate_set().sign_cert
        assert headers["x-client-cert-fingerprint-sm3"] == sign.fingerprint_sm3()
        assert headers["x-client-cert-subject"] == sign.subject
        if suite.startswith("ECC"):
            with pytest.raises(TLCPStreamError):
                await tlcp_get(port, demo_pki, "/who", suites=[suite])


async def test_listener_cipher_suite_policy(demo_pki, echo):
    listener = tlcp_listener(demo_pki, suites=["ECC_SM4_CBC_SM3"])
    async with running(gateway_doc(demo_pki, echo.port, listener=listener)) as gw:
        port = gw.listener_port("main")
        hs, status, _, _ = await tlcp_get(port, demo_pki)
        assert hs.cipher_suite == CipherSuite.ECC_SM4_CBC_SM3 and status == 200
        with pytest.raises(TLCPStreamError):
            await tlcp_get(port, demo_pki, suites=["ECC_SM4_GCM_SM3"])


async def test_tlcp_upstream_with_client_pair_and_resumption(demo_pki, echo):
    """client --TLCP--> gateway A --TLCP (mutual, resumed)--> gateway B --plain--> echo."""
    inner_listener = tlcp_listener(demo_pki, client_auth="required", protocols=("tlcp",), name="inner")
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
        }
        outer_listener = tlcp_listener(demo_pki, protocols=("tlcp",), name="outer", identity=False)
        doc = gateway_doc(
            demo_pki, inner.listener_port("inner"), transport=transport, listener=outer_listener, max_idle=0
        )
        audit = RecordingAudit()
        async with running(doc, audit=audit) as outer:
            stream = await tlcp_connect("127.0.0.1", outer.listener_port("outer"), client_config(demo_pki))
            client = HttpClient(stream, stream)  # type: ignore[arg-type]
            for _ in range(3):
                status, _, body = await client.request("GET", "/through")
                assert status == 200
            headers = client.json(body)["headers"]
            assert headers["x-ssl-protocol"] == "TLCPv1.1"  # added by the inner gateway
            assert headers["x-client-cert-subject"] == demo_pki.client_certificate_set().sign_cert.subject
            await client.close()
            connector = outer.cluster_manager.get("up").connector
            assert connector.resumed == 2  # every connection after the first resumed its session
            # profile auto (the default): the dialect a full upstream handshake spoke, in metrics and audit
            # (smgate's server asks for ecdsa_sign only, as GmSSL does; resumed handshakes send no dialect forms)
            dialects = {
                k: v for k, v in outer.stats.as_json().items() if k.startswith("smgate_upstream_tlcp_dialect")
            }
            assert dialects == {
                "smgate_upstream_tlcp_dialect_total{cluster=up,dialect=gmssl,source=recognised}": 1
            }
        spoken = [r.get("upstream_tlcp_dialect") for r in audit.of("http.request")]
        assert spoken == ["gmssl/recognised", None, None]


async def test_tls_upstream_with_client_certificate(demo_pki, echo):
    """client --TLCP--> gateway A --TLS 1.3 mutual--> gateway B (TLS, client_auth required) --> echo."""
    inner_listener = tlcp_listener(demo_pki, client_auth="required", protocols=("tls1.3",), name="inner")
    async with running(gateway_doc(demo_pki, echo.port, listener=inner_listener)) as inner:
        transport = {
            "type": "tls",
            "server_name": "localhost",
            "trust_anchors": str(demo_pki.rsa.ca.cert),
            "client_cert_chain": str(demo_pki.rsa.client.cert),
            "client_private_key": str(demo_pki.rsa.client.key),
        }
        outer_listener = tlcp_listener(demo_pki, protocols=("tlcp",), name="outer", identity=False)
        async with running(
            gateway_doc(demo_pki, inner.listener_port("inner"), transport=transport, listener=outer_listener)
        ) as outer:
            stream = await tlcp_connect("127.0.0.1", outer.listener_port("outer"), client_config(demo_pki))
            client = HttpClient(stream, stream)  # type: ignore[arg-type]
            status, _, body = await client.request("GET", "/tls-up")
            assert status == 200
            headers = client.json(body)["headers"]
            assert headers["x-ssl-protocol"] == "TLSv1.3"
            assert headers["x-client-cert-fingerprint-sha256"]
            await client.close()


def _second_server_pair(demo, directory):
    from certs.pki import issue_tlcp_pair, load_sm2_issuer, save_issued
    from certs.profile import Subject

    issuer = load_sm2_issuer(demo.sm2.intermediate.cert, demo.sm2.intermediate.key)
    pair = issue_tlcp_pair(
        Subject("payments.test", "smgate test", "tlcp sni"), issuer, role="server", dns=("payments.test",)
    )
    paths = {}
    for part in ("sign", "enc"):
        paths[f"{part}_cert"], paths[f"{part}_key"] = directory / f"{part}.pem", directory / f"{part}.key"
        save_issued(getattr(pair, part), paths[f"{part}_cert"], paths[f"{part}_key"])
    return {k: str(v) for k, v in paths.items()}


async def test_tlcp_sni_selects_certificate_set(demo_pki, echo, tmp_path):
    listener = tlcp_listener(demo_pki, protocols=("tlcp",))
    listener["tls"]["certificates"].append(
        {
            "name": "payments",
            "server_names": ["payments.test"],
            "chain": str(demo_pki.sm2.chain),
            **_second_server_pair(demo_pki, tmp_path),
        }
    )
    async with running(gateway_doc(demo_pki, echo.port, listener=listener)) as gw:
        port = gw.listener_port("main")
        config = client_config(demo_pki)
        for name, expected in (("payments.test", "CN=payments.test"), ("localhost", "CN=localhost")):
            config.server_name = name
            stream = await tlcp_connect("127.0.0.1", port, config, handshake_timeout=5)
            assert stream.handshake.peer_sign_cert is not None
            assert stream.handshake.peer_sign_cert.subject.startswith(expected)
            stream.close()


async def test_tlcp_health_check_marks_endpoint_down(demo_pki, echo):
    inner_listener = tlcp_listener(demo_pki, protocols=("tlcp",), name="inner")
    inner_cm = running(gateway_doc(demo_pki, echo.port, listener=inner_listener))
    inner = await inner_cm.__aenter__()
    transport = {"type": "tlcp", "server_name": "localhost", "trust_anchors": str(demo_pki.sm2.ca_bundle)}
    outer_listener = {
        "name": "outer",
        "address": "127.0.0.1",
        "port": 0,
        "tls": {"protocols": ["plain"]},
        "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "main"}]}],
    }
    doc = gateway_doc(demo_pki, inner.listener_port("inner"), transport=transport, listener=outer_listener)
    doc["clusters"][0]["health_checks"] = {
        "type": "tlcp",
        "interval": 0.1,
        "timeout": 2,
        "unhealthy_threshold": 1,
    }
    async with running(doc) as outer:
        await asyncio.sleep(0.5)
        assert [e["healthy"] for e in outer.clusters_json()[0]["endpoints"]] == [True]
        await inner_cm.__aexit__(None, None, None)
        for _ in range(30):
            await asyncio.sleep(0.1)
            if outer.clusters_json()[0]["endpoints"][0]["healthy"] is False:
                break
        assert [e["healthy"] for e in outer.clusters_json()[0]["endpoints"]] == [False]


async def test_malformed_tlcp_hello_gets_an_alert(demo_pki, echo):
    async with running(gateway_doc(demo_pki, echo.port)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        writer.write(
            b"\x16\x01\x01\x00\x08" + b"\x01\x00\x00\x04garb"
        )  # ClientHello claiming 4 bytes of junk
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
        assert answer[:3] == b"\x15\x01\x01"  # an alert record, TLCP version
        assert answer[5] == 2  # fatal
        failures = {k: v for k, v in gw.stats.as_json().items() if k.startswith("smgate_handshake_failures")}
        assert failures == {"smgate_handshake_failures_total{listener=main,reason=handshake_error}": 1.0}
