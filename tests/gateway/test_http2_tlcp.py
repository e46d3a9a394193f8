"""HTTP/2 over TLCP and TLS 1.3-SM: ALPN on the listener (as on TLS), HTTP/2 clusters over both transports
(ALPN h2 offered and required), the key-path errors of ``tls.alpn``, and BabaSSL as an NTLS and an
RFC 8998 client selecting h2 from a real ``smgate serve``."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from gateway.config import ConfigError, parse_config
from gateway.echo import EchoService
from tests.gateway.helpers import HttpClient, RecordingAudit, running
from tests.gateway.test_http2_gateway import curl
from tests.gateway.test_tlcp import client_config
from tests.ports import free_port
from tls.tlcp.aio import tlcp_connect
from tls.tls13 import CipherSuite as Tls13CipherSuite
from tls.tls13 import TLS13Configuration
from tls.tls13.aio import tls13_connect

SECURE = ("tlcp", "tls1.3-sm", "tls1.3")


@pytest.fixture
async def echo():
    service = await EchoService(name="echo").start(port=free_port())
    yield service
    await service.close()


def sm_listener(demo, *, name="main", protocols=SECURE, alpn=("h2", "http/1.1"), client_auth="none") -> dict:
    tls: dict = {
        "protocols": list(protocols),
        "client_auth": client_auth,
        "certificates": [
            {
                "name": "default",
                "sign_cert": str(demo.sm2.server_sign.cert),
                "sign_key": str(demo.sm2.server_sign.key),
                "enc_cert": str(demo.sm2.server_enc.cert),
                "enc_key": str(demo.sm2.server_enc.key),
                "chain": str(demo.sm2.chain),
                "tls_certificates": [
                    {"cert_chain": str(demo.rsa.server.cert), "private_key": str(demo.rsa.server.key)}
                ],
            }
        ],
    }
    if alpn is not None:
        tls["alpn"] = list(alpn)
    if client_auth != "none":
        tls["sm2_trust_anchors"] = str(demo.sm2.ca_bundle)
        tls["trust_anchors"] = str(demo.rsa.ca_bundle)
    return {
        "name": name,
        "address": "127.0.0.1",
        "port": free_port(),
        "handshake_timeout": 5,
        "tls": tls,
        "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "main"}]}],
    }


def doc_for(listener: dict, upstream_port: int, cluster: dict | None = None) -> dict:
    routes = [{"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "up"}}]
    return {
        "listeners": [listener],
        "route_configs": [{"name": "main", "virtual_hosts": [{"name": "all", "routes": routes}]}],
        "clusters": [
            {
                "name": "up",
                "connect_timeout": 2,
                "outlier_detection": None,
                "endpoints": [{"address": "127.0.0.1", "port": upstream_port}],
                **(cluster or {}),
            }
        ],
        "admin": None,
    }


def sm_client(demo, alpn: tuple[str, ...] = ()) -> TLS13Configuration:
    return TLS13Configuration(
        is_client=True,
        cipher_suites=(Tls13CipherSuite.TLS_SM4_GCM_SM3,),
        trust_store=demo.sm2_trust_store(),
        server_name="localhost",
        alpn_protocols=alpn,
    )


async def h2_get(stream, path: str, authority: str = "localhost") -> tuple[int, bytes]:
    """One HTTP/2 GET (the ``h2`` library) over a connected TLCP/TLS 1.3-SM stream: (status, body)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(
        stream_id,
        [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", path)],
        end_stream=True,
    )
    stream.write(conn.data_to_send())
    status, body = 0, bytearray()
    async with asyncio.timeout(10):
        while True:
            data = await stream.read(65536)
            assert data, "the gateway closed before the response ended"
            events = conn.receive_data(data)
            for event in events:
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if outgoing := conn.data_to_send():
                stream.write(outgoing)
            if any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) for e in events):
                return status, bytes(body)


async def test_tlcp_listener_selects_h2_and_speaks_http2(demo_pki, echo):
    audit = RecordingAudit()
    async with running(doc_for(sm_listener(demo_pki), echo.port), audit=audit) as gw:
        port = gw.listener_port("main")
        offer = client_config(demo_pki)
        offer.alpn_protocols = ("h2", "http/1.1")
        stream = await tlcp_connect("127.0.0.1", port, offer, handshake_timeout=5)
        try:
            assert stream.handshake.alpn_protocol == "h2"
            status, body = await h2_get(stream, "/over-tlcp")
            assert status == 200 and json.loads(body)["path"] == "/over-tlcp"
        finally:
            stream.close()
        # A TLCP client that offers no ALPN (GmSSL, Tongsuo) gets HTTP/1.1, as before ALPN.
        stream = await tlcp_connect("127.0.0.1", port, client_config(demo_pki), handshake_timeout=5)
        try:
            assert stream.handshake.alpn_protocol is None
            status, _, body = await HttpClient(stream, stream).request("GET", "/no-alpn")  # type: ignore[arg-type]
            assert status == 200 and json.loads(body)["path"] == "/no-alpn"
        finally:
            stream.close()
    handshakes = [r for r in audit.of("handshake.ok") if r["protocol"] == "TLCP"]
    assert [r["alpn"] for r in handshakes] == ["h2", None]
    requests = audit.of("http.request")
    assert [(r["path"], r["http_version"], r["protocol"]) for r in requests] == [
        ("/over-tlcp", "HTTP/2", "TLCP"),
        ("/no-alpn", "HTTP/1.1", "TLCP"),
    ]
    assert requests[0]["stream_id"] == 1 and "stream_id" not in requests[1]


async def test_tls13_sm_listener_selects_h2_and_speaks_http2(demo_pki, echo):
    audit = RecordingAudit()
    async with running(doc_for(sm_listener(demo_pki), echo.port), audit=audit) as gw:
        port = gw.listener_port("main")
        stream = await tls13_connect("127.0.0.1", port, sm_client(demo_pki, ("h2",)), handshake_timeout=5)
        try:
            assert stream.handshake.alpn_protocol == "h2"
            status, body = await h2_get(stream, "/over-sm")
            assert status == 200 and json.loads(body)["path"] == "/over-sm"
        finally:
            stream.close()
        stream = await tls13_connect("127.0.0.1", port, sm_client(demo_pki), handshake_timeout=5)
        try:
            assert stream.handshake.alpn_protocol is None
            status, _, _ = await HttpClient(stream, stream).request("GET", "/no-alpn")  # type: ignore[arg-type]
            assert status == 200
        finally:
            stream.close()
    assert [r["alpn"] for r in audit.of("handshake.ok")] == ["h2", None]
    assert [(r["http_version"], r["protocol"]) for r in audit.of("http.request")] == [
        ("HTTP/2", "TLSv1.3"),
        ("HTTP/1.1", "TLSv1.3"),
    ]


async def test_an_http1_listener_answers_an_h2_only_offer_on_tlcp_as_on_tls(demo_pki, echo):
    """Listener alpn [http/1.1] (the default): a client offering only h2 gets no ALPN and HTTP/1.1 over
    TLCP, exactly what OpenSSL does on the TLS transport of the same listener."""
    async with running(doc_for(sm_listener(demo_pki, alpn=None), echo.port)) as gw:
        port = gw.listener_port("main")
        offer = client_config(demo_pki)
        offer.alpn_protocols = ("h2",)
        stream = await tlcp_connect("127.0.0.1", port, offer, handshake_timeout=5)
        try:
            assert stream.handshake.alpn_protocol is None
            status, _, _ = await HttpClient(stream, stream).request("GET", "/")  # type: ignore[arg-type]
            assert status == 200
        finally:
            stream.close()
        both = client_config(demo_pki)
        both.alpn_protocols = ("h2", "http/1.1")
        stream = await tlcp_connect("127.0.0.1", port, both, handshake_timeout=5)
        assert stream.handshake.alpn_protocol == "http/1.1"
        stream.close()
        ctx = ssl.create_default_context(cafile=str(demo_pki.rsa.ca.cert))
        ctx.set_alpn_protocols(["h2"])
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
        writer.close()


def errors_of(doc: dict) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    return refused.value.errors


def test_alpn_config_errors_name_the_key(demo_pki):
    doc = doc_for(sm_listener(demo_pki, alpn=("h2", "h2")), 9)
    assert errors_of(doc) == ["listeners[0].tls.alpn: duplicate ALPN protocols ['h2']"]
    doc = doc_for(sm_listener(demo_pki, alpn=("h3",)), 9)
    assert errors_of(doc)[0].startswith("listeners[0].tls.alpn[0]: Input should be 'h2' or 'http/1.1'")
    plain = sm_listener(demo_pki, protocols=("plain",))
    (error,) = errors_of(doc_for(plain, 9))
    assert error.startswith(
        "listeners[0].tls: alpn needs a secure protocol (tls1.3, tls1.2, tlcp, tls1.3-sm)"
    )


# -- HTTP/2 clusters over TLCP and TLS 1.3-SM ---------------------------------------------------------


def sm_cluster(demo, kind: str) -> dict:
    transport: dict = {"type": kind, "server_name": "localhost", "trust_anchors": str(demo.sm2.ca_bundle)}
    return {"transport_socket": transport, "http2_protocol_options": {}}


def outer_doc(demo, inner_port: int, kind: str) -> dict:
    doc = doc_for(sm_listener(demo, protocols=("plain",), alpn=None), inner_port, sm_cluster(demo, kind))
    doc["listeners"][0]["filter_chains"][0]["filters"][0]["h2c_prior_knowledge"] = True
    return doc


@pytest.mark.parametrize("kind", ["tlcp", "tls13_sm"])
async def test_http2_cluster_offers_h2_over_national_crypto(demo_pki, echo, kind):
    inner_audit = RecordingAudit()
    inner_doc = doc_for(sm_listener(demo_pki, protocols=("tlcp", "tls1.3-sm")), echo.port)
    async with running(inner_doc, audit=inner_audit) as inner:
        async with running(outer_doc(demo_pki, inner.listener_port("main"), kind)) as outer:
            url = f"http://127.0.0.1:{outer.listener_port('main')}"
            version, status, body = await curl("--http2-prior-knowledge", f"{url}/h2-in")
            assert (version, status, json.loads(body)["path"]) == ("2", 200, "/h2-in")
            version, status, body = await curl("--http1.1", f"{url}/h1-in")
            assert (version, status, json.loads(body)["path"]) == ("1.1", 200, "/h1-in")
            (host,) = outer.generation.clusters["up"].hosts
            assert len(host.shared) == 1  # both requests were streams of one connection
    expected = "TLCP" if kind == "tlcp" else "TLSv1.3"
    assert [r["alpn"] for r in inner_audit.of("handshake.ok")] == ["h2"]
    assert [(r["path"], r["http_version"], r["protocol"]) for r in inner_audit.of("http.request")] == [
        ("/h2-in", "HTTP/2", expected),
        ("/h1-in", "HTTP/2", expected),
    ]


@pytest.mark.parametrize("kind", ["tlcp", "tls13_sm"])
async def test_http2_cluster_refuses_a_host_that_does_not_select_h2(demo_pki, echo, kind):
    """The host's listener speaks only HTTP/1.1: the connection fails as a connect failure (503 with the
    reason), rather than HTTP/2 frames going to an HTTP/1.1 server."""
    audit = RecordingAudit()
    inner_doc = doc_for(sm_listener(demo_pki, protocols=("tlcp", "tls1.3-sm"), alpn=None), echo.port)
    async with running(inner_doc) as inner:
        async with running(outer_doc(demo_pki, inner.listener_port("main"), kind), audit=audit) as outer:
            url = f"http://127.0.0.1:{outer.listener_port('main')}"
            version, status, body = await curl("--http2-prior-knowledge", f"{url}/refused")
            assert (version, status) == ("2", 503)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{outer.listener_port('main')}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await channel.unary_unary("/test.Echo/Unary")(b"")
                assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    failure = audit.of("upstream.fail")[0]
    if kind == "tlcp":  # the TLCP engine goes on without ALPN, as OpenSSL does: our check refuses
        assert "the host did not select ALPN h2 (it selected none)" in failure["reason"]
    else:  # the RFC 8998 engine answers an offer with nothing in common with an alert (RFC 7301 3.2)
        assert "no_application_protocol" in failure["reason"]
    assert body == b"upstream unavailable\n"


# -- BabaSSL (NTLS and RFC 8998) against smgate serve ---------------------------------------------------


@pytest.mark.parametrize("protocol", ["ntls", "tls13"])
async def test_babassl_selects_h2_from_smgate_serve(demo_pki, echo, tmp_path, protocol):
    from audit.keys import write_audit_key
    from tests.gateway.conftest import write_config
    from tests.gateway.process import serve
    from tests.interop.babassl import SUITE_NAMES, ClientOptions, run_babassl_client
    from tests.interop.identities import smgate_demo_pki

    files = smgate_demo_pki(demo_pki.directory.parent)
    doc = doc_for(sm_listener(demo_pki, protocols=("tlcp", "tls1.3-sm")), echo.port)
    write_audit_key(tmp_path / "chain.key")
    doc["audit"] = {
        "key_file": str(tmp_path / "chain.key"),
        "pipeline": "thread",
        "sinks": [{"type": "file", "directory": str(tmp_path / "log")}],
    }
    gw = await asyncio.to_thread(serve, write_config(tmp_path / "gw.yaml", doc))
    try:
        options = ClientOptions(
            port=gw.port("main"),
            suite=SUITE_NAMES[0xE053] if protocol == "ntls" else "TLS_SM4_GCM_SM3",
            protocol=protocol,
            ca_file=files.babassl_ca_file,
            server_name="localhost",
            alpn="h2,http/1.1",
            h2_get="/babassl",
        )
        (report,) = await run_babassl_client(options)
    finally:
        assert gw.stop() == 0, gw.output()
    assert report.error is None, report.error
    assert report.alpn == "h2"
    assert report.h2_status == 200 and json.loads(report.h2_body)["path"] == "/babassl"
    records = [
        json.loads(line)
        for path in sorted((tmp_path / "log").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    (handshake,) = [r for r in records if r["event"] == "handshake.ok"]
    assert handshake["alpn"] == "h2" and handshake["protocol"] == (
        "TLCP" if protocol == "ntls" else "TLSv1.3"
    )
    (request,) = [r for r in records if r["event"] == "http.request"]
    assert (request["path"], request["http_version"], request["stream_id"]) == ("/babassl", "HTTP/2", 1)
