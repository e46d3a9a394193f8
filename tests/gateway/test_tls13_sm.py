"""TLS 1.3 with the RFC 8998 suites through the gateway (issue 14 point 2): one port with TLCP and
standard TLS, the sniffer's selection policy, origination to a BabaSSL upstream, client identity only
from a verified chain (issue 10), resumption, and ``smgate client --protocol tls13-sm`` against
``smgate serve``.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h11
import pytest

from certs.pki import certificates_pem, create_sm2_root_ca, issue_tlcp_pair, save_issued
from certs.profile import Subject
from gateway.config import ConfigError, Tls13SmSelection, parse_config
from gateway.echo import EchoService
from gateway.listener_filters.sniff import ClientHelloInfo, parse_client_hello
from gateway.transports.tls13_sm import Tls13SmConnector
from tests.gateway.conftest import write_config
from tests.gateway.helpers import HttpClient, RecordingAudit, demo_certificate_set, running
from tests.gateway.process import serve
from tests.interop.babassl import BabaSSLServer, ClientOptions, ServerOptions, run_babassl_client
from tests.interop.identities import TONGSUO_PKI
from tests.ports import free_port
from tls.tlcp import CipherSuite as TlcpSuite
from tls.tlcp import TLCPConfiguration
from tls.tlcp.aio import tlcp_connect
from tls.tls13 import CipherSuite, SM2Credential, TLS13Configuration, TLS13Connection, TLS13Session
from tls.tls13.aio import TLS13Stream, TLS13StreamError, start_tls13_server, tls13_connect

REQUEST = "GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def _routes() -> list[dict]:
    return [
        {
            "name": "secret",
            "match": {"prefix": "/secret"},
            "access": {"allow": [{"authenticated": True}]},
            "direct_response": {"status": 200, "body": "SECRET DATA"},
        },
        {
            "name": "who",
            "match": {"prefix": "/who"},
            "route": {"cluster": "echo", "identity_headers": True},
        },
        {"name": "hello", "match": {"prefix": "/"}, "direct_response": {"status": 200, "body": "hello"}},
    ]


def _doc(demo, *, echo_port: int = 9, client_auth: str = "optional", tls13_sm: dict | None = None) -> dict:
    tls: dict = {
        "protocols": ["tlcp", "tls1.3", "tls1.2", "tls1.3-sm"],
        "client_auth": client_auth,
        "certificates": [demo_certificate_set(demo, tls_certificates=True)],
    }
    if client_auth != "none":
        tls["trust_anchors"] = str(demo.rsa.ca_bundle)
        tls["sm2_trust_anchors"] = str(demo.sm2.ca_bundle)
    if tls13_sm is not None:
        tls["tls13_sm"] = tls13_sm
    return {
        "listeners": [
            {
                "name": "edge",
                "port": free_port(),
                "tls": tls,
                "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "main"}]}],
            }
        ],
        "route_configs": [{"name": "main", "virtual_hosts": [{"name": "all", "routes": _routes()}]}],
        "clusters": [{"name": "echo", "endpoints": [{"address": "127.0.0.1", "port": echo_port}]}],
        "admin": None,
    }


def _sm_client(demo, credential: SM2Credential | None = None, **overrides) -> TLS13Configuration:
    settings: dict = {
        "is_client": True,
        "cipher_suites": (CipherSuite.TLS_SM4_GCM_SM3,),
        "trust_store": demo.sm2_trust_store(),
        "server_name": "localhost",
        "credential": credential,
    }
    settings.update(overrides)
    return TLS13Configuration(**settings)


def _demo_client_credential(demo) -> SM2Credential:
    return SM2Credential.load(demo.sm2.client_sign.cert, demo.sm2.client_sign.key, demo.sm2.chain)


async def _sm_get(port: int, configuration: TLS13Configuration, path: str) -> tuple[int, bytes, TLS13Stream]:
    stream = await tls13_connect("127.0.0.1", port, configuration, handshake_timeout=5)
    client = HttpClient(stream, stream)  # type: ignore[arg-type]
    try:
        status, _, body = await client.request("GET", path)
        await stream.wait_for_session(2.0)
    finally:
        stream.close()
    return status, body, stream


@pytest.fixture
async def echo():
    service = await EchoService(name="echo").start(port=free_port())
    yield service
    await service.close()


@pytest.fixture(scope="module")
def babassl_ca(demo_pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BabaSSL completes the server's chain from its CA file: root and intermediate together."""
    bundle = tmp_path_factory.mktemp("babassl") / "ca.pem"
    bundle.write_bytes(demo_pki.sm2.ca_bundle.read_bytes() + demo_pki.sm2.chain.read_bytes())
    return bundle


@pytest.fixture(scope="module")
def rogue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-made SM2 root (``ca.pem``) and a client signing certificate it issued (``sign.crt``)."""
    directory = tmp_path_factory.mktemp("rogue13")
    ca = create_sm2_root_ca(Subject("rogue root"))
    pair = issue_tlcp_pair(Subject("demo client"), ca, role="client")
    save_issued(pair.sign, directory / "sign.crt", directory / "sign.key")
    (directory / "ca.pem").write_bytes(certificates_pem([ca.certificate]))
    return directory


@pytest.fixture(scope="module")
def rogue(rogue_dir: Path) -> SM2Credential:
    """The rogue client's credential (nobody configured its root as an anchor)."""
    return SM2Credential.load(rogue_dir / "sign.crt", rogue_dir / "sign.key")


# -- one port: TLS 1.3-SM, TLCP and standard TLS -----------------------------------------------------


async def test_babassl_sm_only_client_tlcp_and_tls_share_one_port(demo_pki, babassl_ca) -> None:
    audit = RecordingAudit()
    async with running(_doc(demo_pki), audit=audit) as gw:
        port = gw.listener_port("edge")
        [report] = await run_babassl_client(
            ClientOptions(
                port=port,
                protocol="tls13",
                suite="TLS_SM4_GCM_SM3",
                ca_file=babassl_ca,
                server_name="localhost",
                request=REQUEST,
            )
        )
        tlcp = await tlcp_connect(
            "127.0.0.1",
            port,
            TLCPConfiguration(
                is_client=True,
                cipher_suites=(TlcpSuite.ECC_SM4_GCM_SM3,),
                trust_store=demo_pki.sm2_trust_store(),
                server_name="localhost",
            ),
            handshake_timeout=5,
        )
        tlcp_status, _, tlcp_body = await HttpClient(tlcp, tlcp).request("GET", "/hello")  # type: ignore[arg-type]
        tlcp.close()
        context = ssl.create_default_context(cafile=str(demo_pki.rsa.ca_bundle))
        tls = await HttpClient.open(port, context, server_hostname="localhost")
        tls_status, _, tls_body = await tls.request("GET", "/hello")
        tls_version = tls.writer.get_extra_info("ssl_object").version()
        await tls.close()
    assert report.error is None, report.error
    assert (report.version, report.cipher) == ("TLSv1.3", "TLS_SM4_GCM_SM3")
    assert report.verify_result == 0
    assert report.response.startswith("HTTP/1.1 200 ")
    assert report.response.endswith("hello")
    assert (tlcp_status, tlcp_body) == (200, b"hello")
    assert (tls_status, tls_body, tls_version) == (200, b"hello", "TLSv1.3")
    by_suite = {record["cipher_suite"]: record for record in audit.of("handshake.ok")}
    assert set(by_suite) == {"TLS_SM4_GCM_SM3", "ECC_SM4_GCM_SM3", "TLS_AES_256_GCM_SHA384"}
    sm = by_suite["TLS_SM4_GCM_SM3"]
    assert (sm["protocol"], sm["group"], sm["signature_scheme"]) == ("TLSv1.3", "curveSM2", "sm2sig_sm3")
    assert by_suite["ECC_SM4_GCM_SM3"]["protocol"] == "TLCP"
    requests = [r for r in audit.of("http.request") if r.get("cipher_suite") == "TLS_SM4_GCM_SM3"]
    assert [(r["path"], r["status"], r["group"]) for r in requests] == [("/hello", 200, "curveSM2")]


async def test_metrics_count_tls13_sm_handshakes(demo_pki) -> None:
    async with running(_doc(demo_pki)) as gw:
        port = gw.listener_port("edge")
        status, body, _ = await _sm_get(port, _sm_client(demo_pki), "/hello")
        assert (status, body) == (200, b"hello")
        exposition = gw.stats.prometheus_text().decode()
    assert 'protocol="tls1.3-sm"' in exposition
    assert 'cipher_suite="TLS_SM4_GCM_SM3"' in exposition


# -- the sniffer's choice ---------------------------------------------------------------------------


def _engine_hello(**overrides) -> ClientHelloInfo:
    connection = TLS13Connection(TLS13Configuration(is_client=True, verify_peer=False, **overrides))
    connection.start_handshake()
    record = connection.data_to_send()
    hello = parse_client_hello(record[5 : 5 + int.from_bytes(record[3:5], "big")])
    assert hello is not None
    return hello


def test_sniffer_reads_suites_groups_and_versions_of_an_rfc8998_hello() -> None:
    hello = _engine_hello(server_name="sm.example")
    assert hello.offers_rfc8998
    assert not hello.offers_standard_suite
    assert hello.server_name == b"sm.example"
    assert 0x0304 in hello.supported_versions and 0x0029 in hello.supported_groups
    for selection in Tls13SmSelection:
        assert hello.selects_tls13_sm(selection)


@pytest.mark.parametrize(
    ("suites", "groups", "versions", "prefer_sm", "standard_first"),
    [
        pytest.param((0x00C6, 0x1301, 0x00FF), (0x001D, 0x0029), (0x0304,), True, False, id="mixed-offer"),
        pytest.param((0x00C6, 0x00FF, 0x5600, 0x0A0A), (0x0029,), (0x0304,), True, True, id="sm-only-scsv"),
        pytest.param((0x00C6,), (0x001D,), (0x0304,), False, False, id="no-curveSM2"),
        pytest.param((0x00C6,), (0x0029,), (0x0303,), False, False, id="tls1.2-only"),
        pytest.param((0x1301, 0x1302), (0x0029,), (0x0304,), False, False, id="standard-only"),
    ],
)
def test_selection_policy(suites, groups, versions, prefer_sm, standard_first) -> None:
    hello = ClientHelloInfo(b"".join(suite.to_bytes(2, "big") for suite in suites), None, groups, versions)
    assert hello.selects_tls13_sm(Tls13SmSelection.PREFER_SM) is prefer_sm
    assert hello.selects_tls13_sm(Tls13SmSelection.STANDARD_FIRST) is standard_first


async def test_standard_tls_client_still_reaches_openssl_under_prefer_sm(demo_pki) -> None:
    """Python's ssl (OpenSSL 3.0) offers no RFC 8998 suite, so even prefer_sm leaves it to OpenSSL."""
    async with running(_doc(demo_pki, tls13_sm={"selection": "prefer_sm"})) as gw:
        context = ssl.create_default_context(cafile=str(demo_pki.rsa.ca_bundle))
        client = await HttpClient.open(gw.listener_port("edge"), context, server_hostname="localhost")
        status, _, _ = await client.request("GET", "/hello")
        cipher = client.writer.get_extra_info("ssl_object").cipher()[0]
        await client.close()
    assert status == 200 and not cipher.startswith("TLS_SM4")


@pytest.mark.parametrize("selection", list(Tls13SmSelection))
async def test_selection_policy_on_a_babassl_hello_offering_both(demo_pki, babassl_ca, selection) -> None:
    """BabaSSL offering a standard suite and X25519 first, RFC 8998 second: prefer_sm takes it to the
    SM engine (a HelloRetryRequest asks for curveSM2); standard_first leaves it to OpenSSL, whose RSA
    certificate cannot sign with the only scheme this client accepts (sm2sig_sm3), so it fails there."""
    audit = RecordingAudit()
    async with running(_doc(demo_pki, tls13_sm={"selection": selection.value}), audit=audit) as gw:
        [report] = await run_babassl_client(
            ClientOptions(
                port=gw.listener_port("edge"),
                protocol="tls13",
                suite="TLS_AES_128_GCM_SHA256:TLS_SM4_GCM_SM3",
                groups="X25519:SM2",
                ca_file=babassl_ca,
                server_name="localhost",
                request=REQUEST,
            )
        )
    if selection is Tls13SmSelection.PREFER_SM:
        assert report.error is None, report.error
        assert report.cipher == "TLS_SM4_GCM_SM3" and report.response.endswith("hello")
        [handshake] = audit.of("handshake.ok")
        assert handshake["group"] == "curveSM2"
    else:
        assert report.error is not None
        assert not audit.of("handshake.ok")
        [failure] = audit.of("handshake.fail")
        assert failure["error"].startswith("tls: ")


async def test_filter_chain_matches_the_tls13_sm_transport(demo_pki) -> None:
    doc = _doc(demo_pki)
    listener = doc["listeners"][0]
    sm_chain = {
        "name": "sm-only",
        "filter_chain_match": {"transport_protocols": ["tls13_sm"]},
        "filters": [{"name": "http_connection_manager", "route_config": "sm"}],
    }
    listener["filter_chains"].insert(0, sm_chain)
    doc["route_configs"].append(
        {
            "name": "sm",
            "virtual_hosts": [
                {"name": "all", "routes": [{"name": "sm", "direct_response": {"status": 200, "body": "sm"}}]}
            ],
        }
    )
    async with running(doc) as gw:
        port = gw.listener_port("edge")
        status, body, _ = await _sm_get(port, _sm_client(demo_pki), "/hello")
        context = ssl.create_default_context(cafile=str(demo_pki.rsa.ca_bundle))
        tls = await HttpClient.open(port, context, server_hostname="localhost")
        tls_status, _, tls_body = await tls.request("GET", "/hello")
        await tls.close()
    assert (status, body) == (200, b"sm")
    assert (tls_status, tls_body) == (200, b"hello")


# -- client identity (issue 10) ---------------------------------------------------------------------


async def test_verified_sm2_chain_grants_identity_routes(demo_pki, echo) -> None:
    audit = RecordingAudit()
    async with running(_doc(demo_pki, echo_port=echo.port), audit=audit) as gw:
        port = gw.listener_port("edge")
        configuration = _sm_client(demo_pki, _demo_client_credential(demo_pki))
        status, body, _ = await _sm_get(port, configuration, "/secret")
        assert (status, body) == (200, b"SECRET DATA")
        status, body, _ = await _sm_get(port, configuration, "/who")
        headers = HttpClient.json(None, body)["headers"]  # type: ignore[arg-type]
        anonymous_status, _, _ = await _sm_get(port, _sm_client(demo_pki), "/secret")
    assert status == 200
    assert "demo client" in headers["x-client-cert-subject"] or "demo" in headers["x-client-cert-subject"]
    assert anonymous_status == 403
    verified = [r for r in audit.of("handshake.ok") if r["client_cert"] is not None]
    assert len(verified) == 2 and verified[0]["client_signature_scheme"] == "sm2sig_sm3"


async def test_rogue_sm2_chain_gets_no_identity(demo_pki, rogue) -> None:
    audit = RecordingAudit()
    async with running(_doc(demo_pki), audit=audit) as gw:
        port = gw.listener_port("edge")
        with pytest.raises((TLS13StreamError, ConnectionError)):
            await _sm_get(port, _sm_client(demo_pki, rogue), "/secret")
    assert not [r for r in audit.of("handshake.ok") if r["client_cert"] is not None]
    [refused] = audit.of("handshake.fail")
    assert refused["alert"] in ("unknown_ca", "bad_certificate")


async def test_client_auth_none_takes_no_certificate(demo_pki, echo) -> None:
    """client_auth none: no CertificateRequest, so a client with a certificate is anonymous."""
    doc = _doc(demo_pki, echo_port=echo.port, client_auth="none")
    doc["route_configs"][0]["virtual_hosts"][0]["routes"] = _routes()[2:]
    audit = RecordingAudit()
    async with running(doc, audit=audit) as gw:
        status, _, _ = await _sm_get(
            gw.listener_port("edge"), _sm_client(demo_pki, _demo_client_credential(demo_pki)), "/"
        )
    assert status == 200
    [handshake] = audit.of("handshake.ok")
    assert handshake["client_cert"] is None and "client_cert_unverified" not in handshake


def test_identity_rules_need_sm2_anchors_on_a_tls13_sm_listener(demo_pki) -> None:
    doc = _doc(demo_pki, client_auth="optional")
    doc["listeners"][0]["tls"]["protocols"] = ["tls1.3-sm"]
    del doc["listeners"][0]["tls"]["sm2_trust_anchors"]
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    assert any("client_auth with tls1.3-sm needs sm2_trust_anchors" in e for e in refused.value.errors)
    doc["listeners"][0]["tls"]["client_auth"] = "none"
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    assert sorted(e.split(":")[0] for e in refused.value.errors) == [
        "route_configs[0].virtual_hosts[0].routes[0].access",
        "route_configs[0].virtual_hosts[0].routes[1].route.identity_headers",
    ]


async def test_reload_removing_the_anchor_refuses_full_and_resumed_handshakes(demo_pki, rogue_dir) -> None:
    """A reload starts new ticket keys: a ticket issued under the old anchors cannot resume."""
    doc = _doc(demo_pki, client_auth="required")
    async with running(doc) as gw:
        port = gw.listener_port("edge")
        configuration = _sm_client(demo_pki, _demo_client_credential(demo_pki))
        status, _, first = await _sm_get(port, configuration, "/secret")
        assert status == 200 and first.session is not None
        reduced = _doc(demo_pki, client_auth="required")
        reduced["listeners"][0]["port"] = port
        reduced["listeners"][0]["tls"]["sm2_trust_anchors"] = str(rogue_dir / "ca.pem")
        assert await gw.reload(parse_config(reduced, Path.cwd())) == []
        for attempt in (configuration, replace(configuration, session=first.session)):
            with pytest.raises((TLS13StreamError, ConnectionError)):
                await _sm_get(port, attempt, "/secret")


# -- resumption -------------------------------------------------------------------------------------


async def test_resumption_through_the_gateway_keeps_the_verified_identity(demo_pki) -> None:
    audit = RecordingAudit()
    async with running(_doc(demo_pki), audit=audit) as gw:
        port = gw.listener_port("edge")
        configuration = _sm_client(demo_pki, _demo_client_credential(demo_pki))
        status, _, first = await _sm_get(port, configuration, "/secret")
        session = first.session
        assert status == 200 and isinstance(session, TLS13Session)
        status, body, second = await _sm_get(port, replace(configuration, session=session), "/secret")
    assert second.handshake.session_resumed
    assert (status, body) == (200, b"SECRET DATA")
    handshakes = audit.of("handshake.ok")
    assert [h["resumed"] for h in handshakes] == [False, True]
    assert "signature_scheme" not in handshakes[1]  # nobody signs in a PSK handshake
    assert handshakes[1]["client_cert"] == handshakes[0]["client_cert"] is not None


# -- origination to a BabaSSL upstream --------------------------------------------------------------


def _tcp_proxy_doc(cluster_transport: dict) -> dict:
    return {
        "listeners": [
            {
                "name": "front",
                "port": free_port(),
                "filter_chains": [{"filters": [{"name": "tcp_proxy", "cluster": "sm"}]}],
            }
        ],
        "clusters": [
            {
                "name": "sm",
                "endpoints": [{"address": "127.0.0.1", "port": cluster_transport.pop("port")}],
                "transport_socket": cluster_transport,
            }
        ],
        "admin": None,
    }


async def _echo_through(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    writer.close()
    await writer.wait_closed()
    return echoed


async def test_gateway_originates_rfc8998_to_babassl_with_client_certificate_and_resumption() -> None:
    pki = TONGSUO_PKI
    options = ServerOptions(
        suite="TLS_SM4_GCM_SM3",
        certs=pki.server_files,
        protocol="tls13",
        tickets=True,
        ca_file=pki.ca_file,
        verify_client=True,
        require_client_cert=True,
        connections=2,
        port=free_port(),
    )
    async with BabaSSLServer(options) as upstream:
        doc = _tcp_proxy_doc(
            {
                "type": "tls13_sm",
                "port": upstream.port,
                "trust_anchors": str(pki.ca_file),
                "tls13_sm_cipher_suites": ["TLS_SM4_GCM_SM3"],
                "sign_cert": str(pki.client_files.sign_cert),
                "sign_key": str(pki.client_files.sign_key),
            }
        )
        async with running(doc) as gw:
            port = gw.listener_port("front")
            payload = b"rfc 8998 upstream " * 1000
            assert await _echo_through(port, payload) == payload
            await asyncio.sleep(0.2)  # the ticket follows the handshake
            assert await _echo_through(port, payload) == payload
            connector = gw.cluster_manager.clusters["sm"].connector
            assert isinstance(connector, Tls13SmConnector)
            resumed = connector.resumed
        reports = await upstream.reports()
    assert [r.error for r in reports] == [None, None]
    assert [(r.version, r.cipher) for r in reports] == [("TLSv1.3", "TLS_SM4_GCM_SM3")] * 2
    assert [r.reused for r in reports] == [False, True] and resumed == 1
    assert all(r.peer_subject and "CN=" in r.peer_subject for r in reports)  # our client certificate


class Tls13HttpUpstream:
    """An HTTP/1.1 server on the RFC 8998 engine (keep-alive, h11): answers with its connection count."""

    def __init__(self, demo) -> None:
        self.configuration = TLS13Configuration(
            is_client=False,
            credential=SM2Credential.load(
                demo.sm2.server_sign.cert, demo.sm2.server_sign.key, demo.sm2.chain
            ),
            verify_peer=False,
        )
        self.connections = 0
        self.requests = 0

    async def serve(self, stream: TLS13Stream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.read(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                self.requests += 1
            elif isinstance(event, h11.EndOfMessage):
                body = f"tls13-sm upstream, connection {self.connections}".encode()
                headers = [("content-length", str(len(body)))]
                stream.write(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
                stream.write((conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b""))
                await stream.drain()
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return


async def test_http_route_forwards_over_tls13_sm_and_reuses_the_connection(demo_pki) -> None:
    upstream = Tls13HttpUpstream(demo_pki)
    upstream_port = free_port()
    server = await start_tls13_server(
        "127.0.0.1", upstream_port, lambda: upstream.configuration, upstream.serve
    )
    doc = _doc(demo_pki, echo_port=upstream_port)
    doc["route_configs"][0]["virtual_hosts"][0]["routes"] = [
        {"name": "up", "match": {"prefix": "/"}, "route": {"cluster": "echo"}}
    ]
    doc["clusters"][0]["transport_socket"] = {
        "type": "tls13_sm",
        "server_name": "localhost",
        "trust_anchors": str(demo_pki.sm2.ca_bundle),
    }
    try:
        async with running(doc) as gw:
            port = gw.listener_port("edge")
            answers = [await _sm_get(port, _sm_client(demo_pki), "/a") for _ in range(3)]
    finally:
        server.close()
        await server.wait_closed()
    assert [(status, body) for status, body, _ in answers] == [(200, b"tls13-sm upstream, connection 1")] * 3
    assert (upstream.connections, upstream.requests) == (1, 3)


def test_upstream_tls13_sm_config_is_checked(demo_pki) -> None:
    transport = {
        "type": "tls13_sm",
        "port": 9,
        "trust_anchors": str(demo_pki.sm2.ca_bundle),
        "cipher_suites": ["ECC_SM4_GCM_SM3"],
        "tls13_sm_cipher_suites": ["TLS_SM4_GCM_SM3", "TLS_AES_128_GCM_SHA256"],
        "sign_cert": str(demo_pki.sm2.client_sign.cert),
    }
    with pytest.raises(ConfigError) as refused:
        parse_config(_tcp_proxy_doc(transport), Path.cwd())
    [error] = refused.value.errors
    assert error.startswith("clusters[0].transport_socket.tls13_sm_cipher_suites")
    assert "unknown RFC 8998 cipher suite 'TLS_AES_128_GCM_SHA256'" in error
    transport = {
        "type": "tls13_sm",
        "port": 9,
        "trust_anchors": str(demo_pki.sm2.ca_bundle),
        "cipher_suites": ["ECC_SM4_GCM_SM3"],
        "sign_cert": str(demo_pki.sm2.client_sign.cert),
        "sign_key": str(demo_pki.sm2.client_sign.key),
    }
    with pytest.raises(ConfigError) as refused:
        parse_config(_tcp_proxy_doc(transport), Path.cwd())
    assert "cipher_suites: not for type tls13_sm" in refused.value.errors[0]


# -- smgate client against smgate serve --------------------------------------------------------------


def _smgate_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "client",
        "127.0.0.1",
        str(port),
        "--servername",
        "localhost",
    ]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)


async def test_smgate_serve_one_port_babassl_and_smgate_client_tls13_sm(
    demo_pki, babassl_ca, tmp_path
) -> None:
    """The issue's "done when": under ``smgate serve``, a client offering only TLS_SM4_GCM_SM3 gets its
    HTTP answer on the port where TLCP and standard TLS keep working; ``smgate client --protocol
    tls13-sm`` authenticates with an SM2 certificate and resumes with a ticket."""
    doc = _doc(demo_pki)
    config = write_config(tmp_path / "gateway.yaml", doc)
    check = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    port = doc["listeners"][0]["port"]
    sm2 = demo_pki.sm2
    process = await asyncio.to_thread(serve, config)  # the default loop: uvloop where installed
    try:
        [babassl] = await run_babassl_client(
            ClientOptions(
                port=port,
                protocol="tls13",
                suite="TLS_SM4_GCM_SM3",
                ca_file=babassl_ca,
                server_name="localhost",
                request=REQUEST,
            )
        )
        sm, tlcp, tls = await asyncio.gather(
            asyncio.to_thread(
                _smgate_client,
                port,
                *("--protocol", "tls13-sm", "--cafile", str(sm2.ca_bundle), "--get", "/secret"),
                *("--cert", str(sm2.client_sign.cert), "--key", str(sm2.client_sign.key)),
                *("--chain", str(sm2.chain), "--resume", "1"),
            ),
            asyncio.to_thread(
                _smgate_client, port, "--protocol", "tlcp", "--cafile", str(sm2.ca_bundle), "--get", "/"
            ),
            asyncio.to_thread(
                _smgate_client,
                port,
                "--protocol",
                "tls",
                "--cafile",
                str(demo_pki.rsa.ca_bundle),
                "--get",
                "/",
            ),
        )
    finally:
        await asyncio.to_thread(process.stop)
    assert babassl.error is None, babassl.error
    assert babassl.cipher == "TLS_SM4_GCM_SM3" and babassl.response.endswith("hello")
    assert sm.returncode == 0, sm.stderr
    lines = sm.stdout.splitlines()
    assert "protocol: TLSv1.3" in lines and "cipher: TLS_SM4_GCM_SM3" in lines
    assert "group: curveSM2, signature: sm2sig_sm3, full handshake" in lines
    assert "status: 200" in lines and lines[-1] == "SECRET DATA"
    assert "resume 1/1: resumed (session ticket)" in lines
    assert tlcp.returncode == 0 and "protocol: TLCPv1.1" in tlcp.stdout and tlcp.stdout.endswith("hello")
    assert tls.returncode == 0 and "protocol: TLSv1.3" in tls.stdout and tls.stdout.endswith("hello")
    assert "cipher: TLS_SM4" not in tls.stdout


# -- configuration ----------------------------------------------------------------------------------


def test_listener_tls13_sm_options_are_checked(demo_pki) -> None:
    doc = _doc(demo_pki)
    tls = doc["listeners"][0]["tls"]
    tls["protocols"] = ["tls1.3"]
    tls["tls13_sm"] = {"selection": "standard_first"}
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    assert refused.value.errors == ["listeners[0].tls: tls13_sm options need the tls1.3-sm protocol"]
    doc = _doc(demo_pki)
    tls = doc["listeners"][0]["tls"]
    tls["protocols"] = ["tls1.3-sm"]
    for key in ("sign_cert", "sign_key", "enc_cert", "enc_key", "chain"):
        del tls["certificates"][0][key]
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    assert refused.value.errors == [
        "listeners[0].tls: tls1.3-sm needs a certificate set with an SM2 pair (its sign certificate)"
    ]
    doc = _doc(demo_pki)
    doc["listeners"][0]["tls"]["cipher_suites"] = {"tls13_sm": ["TLS_SM4_GCM_SM3", "TLS_SM4_GCM_SM3"]}
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    assert refused.value.errors[0].startswith("listeners[0].tls.cipher_suites.tls13_sm: ")


async def test_sm_only_listener_hands_every_tls_hello_to_the_engine(demo_pki) -> None:
    """Without OpenSSL on the listener, a standard TLS client meets the RFC 8998 engine's refusal."""
    doc = _doc(demo_pki)
    doc["listeners"][0]["tls"]["protocols"] = ["tls1.3-sm"]
    audit = RecordingAudit()
    async with running(doc, audit=audit) as gw:
        port = gw.listener_port("edge")
        context = ssl.create_default_context(cafile=str(demo_pki.rsa.ca_bundle))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await HttpClient.open(port, context, server_hostname="localhost")
        status, body, _ = await _sm_get(port, _sm_client(demo_pki), "/hello")
    assert (status, body) == (200, b"hello")
    [failure] = audit.of("handshake.fail")
    assert failure["error"].startswith("tls13_sm: ") and failure["alert"] == "handshake_failure"


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(
            bytes.fromhex("1603010008") + bytes.fromhex("0100000403030000"), id="hello-body-too-short"
        ),
        pytest.param(
            bytes.fromhex("1603010006") + bytes.fromhex("0200000203030000"), id="server-hello-first"
        ),
        pytest.param(bytes.fromhex("1603010004") + bytes.fromhex("01ffffff"), id="oversized-length"),
    ],
)
async def test_bad_first_flight_gets_an_alert_from_the_engine(demo_pki, record: bytes) -> None:
    doc = _doc(demo_pki)
    doc["listeners"][0]["tls"]["protocols"] = ["tls1.3-sm"]
    audit = RecordingAudit()
    async with running(doc, audit=audit) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("edge"))
        writer.write(record)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert answer[:1] == b"\x15" and answer[5:6] == b"\x02"  # one fatal alert record, then the close
    [failure] = audit.of("handshake.fail")
    assert failure["error"].startswith("tls13_sm: ") and failure["alert_direction"] == "sent"
