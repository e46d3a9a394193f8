"""TLCP peer profiles and cipher preference: upstream ``transport_socket.profile``/``cipher_suites`` and the
listener's ``tls.tlcp.profile``, validated at load and carried into the engine; end to end against
BabaSSL (Tongsuo's NTLS), which needs the TONGSUO profile for ECDHE, and the default profile (auto)
recognising BabaSSL or retrying a server that misleads it."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import ConfigError, parse_config
from gateway.transports.tlcp import TlcpConnector, TlcpTransport
from tests.gateway.helpers import running
from tests.gateway.test_tlcp import gateway_doc, tlcp_listener
from tests.interop.babassl import (
    SUITE_NAMES,
    BabaSSLServer,
    ClientOptions,
    ServerOptions,
    run_babassl_client,
)
from tests.interop.identities import PKI, openssl_oneline, smgate_demo_pki
from tests.tlcp.dialect_servers import STANDARD_BEHIND_GMSSL_REQUEST, DialectServer
from tls.tlcp import CipherSuite, PeerProfile

ECDHE = CipherSuite.ECDHE_SM4_GCM_SM3


def client_pair(demo) -> dict:
    sm2 = demo.sm2
    return {
        "sign_cert": str(sm2.client_sign.cert),
        "sign_key": str(sm2.client_sign.key),
        "enc_cert": str(sm2.client_enc.cert),
        "enc_key": str(sm2.client_enc.key),
        "chain": str(sm2.chain),
    }


def tlcp_transport(demo, **extra) -> dict:
    return {"type": "tlcp", "server_name": "localhost", "trust_anchors": str(demo.sm2.ca_bundle), **extra}


def errors_of(doc: dict, tmp_path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, tmp_path)
    return info.value.errors


def test_upstream_profile_and_suites_reach_the_engine(demo_pki, tmp_path):
    transport = tlcp_transport(
        demo_pki,
        profile="gmssl",
        cipher_suites=["ECC_SM4_CBC_SM3", "ECC_SM4_GCM_SM3"],
        **client_pair(demo_pki),
    )
    config = parse_config(gateway_doc(demo_pki, 9, transport=transport), tmp_path)
    connector = TlcpConnector(config.cluster("up").transport_socket)
    assert connector.configuration.profile is PeerProfile.GMSSL
    assert connector.configuration.cipher_suites == (CipherSuite.ECC_SM4_CBC_SM3, CipherSuite.ECC_SM4_GCM_SM3)
    default = TlcpConnector(
        parse_config(gateway_doc(demo_pki, 9, transport=tlcp_transport(demo_pki)), tmp_path)
        .cluster("up")
        .transport_socket
    )
    assert default.configuration.profile is PeerProfile.AUTO


@pytest.mark.parametrize(
    ("transport", "message"),
    [
        ({"type": "plain", "profile": "tongsuo"}, "profile: only for type tlcp"),
        (
            {"type": "tls", "verify": False, "cipher_suites": ["ECC_SM4_GCM_SM3"]},
            "cipher_suites: only for type tlcp",
        ),
        ({"type": "tlcp", "verify": False, "profile": "babassl"}, "profile: Input should be"),
        ({"type": "tls", "verify": False, "profile": "standard"}, "profile: only for type tlcp"),
        (
            {"type": "tlcp", "verify": False, "cipher_suites": ["ECDHE_SM4_GCM_SM3"]},
            "ECDHE cipher suites need an SM2 client pair",
        ),
        (
            {"type": "tlcp", "verify": False, "cipher_suites": ["ECC_SM4_GCM_SM3", "ECC_SM4_GCM_SM3"]},
            "duplicate cipher suites ['ECC_SM4_GCM_SM3']",
        ),
    ],
)
def test_upstream_tlcp_options_are_checked(demo_pki, tmp_path, transport, message):
    (error,) = errors_of(gateway_doc(demo_pki, 9, transport=transport), tmp_path)
    assert error.startswith("clusters[0].transport_socket") and message in error, error


def test_listener_profile(demo_pki, tmp_path):
    listener = tlcp_listener(demo_pki)
    listener["tls"]["tlcp"] = {"profile": "tongsuo"}
    config = parse_config(gateway_doc(demo_pki, 9, listener=listener), tmp_path)
    assert config.listeners[0].tls.tlcp.profile is PeerProfile.TONGSUO
    listener["tls"]["tlcp"] = {"profile": "gmssl"}
    (error,) = errors_of(gateway_doc(demo_pki, 9, listener=listener), tmp_path)
    assert error.startswith("listeners[0].tls.tlcp.profile: gmssl only changes what a client sends")
    listener["tls"]["tlcp"] = {"profile": "auto"}
    (error,) = errors_of(gateway_doc(demo_pki, 9, listener=listener), tmp_path)
    assert error.startswith("listeners[0].tls.tlcp.profile: auto only changes what a client sends")
    listener = tlcp_listener(demo_pki, protocols=("tls1.3",))
    listener["tls"]["tlcp"] = {"profile": "tongsuo"}
    (error,) = errors_of(gateway_doc(demo_pki, 9, listener=listener), tmp_path)
    assert error == "listeners[0].tls: tlcp options need the tlcp protocol"
    listener["tls"]["cipher_suites"] = {"tlcp": []}
    assert "listeners[0].tls.cipher_suites.tlcp: at least one TLCP cipher suite is needed" in errors_of(
        gateway_doc(demo_pki, 9, listener=listener), tmp_path
    )


@pytest.fixture
def babassl_pki(demo_pki) -> PKI:
    """The same demo PKI as files for BabaSSL (its CA file also holds the intermediate)."""
    return smgate_demo_pki(demo_pki.directory.parent)


def tcp_listener(name: str, cluster: str, tls: dict | None = None) -> dict:
    return {
        "name": name,
        "port": 0,
        "handshake_timeout": 10,
        "tls": tls or {"protocols": ["plain"]},
        "filter_chains": [{"filters": [{"name": "tcp_proxy", "cluster": cluster, "idle_timeout": 30}]}],
    }


async def test_ecdhe_to_babassl_needs_the_tongsuo_profile(demo_pki, babassl_pki, tmp_path):
    """BabaSSL client --TLCP ECDHE--> gateway (tongsuo listener) --TLCP ECDHE, tongsuo--> BabaSSL echo;
    the same upstream with the standard profile is refused by BabaSSL, and with the default profile
    (auto) the gateway recognises BabaSSL's dialect by itself."""

    suite = SUITE_NAMES[ECDHE]
    options = ServerOptions(
        suite=suite,
        certs=babassl_pki.server_files,
        ca_file=babassl_pki.peer_ca_file,
        verify_client=True,
        require_client_cert=True,
        connections=3,
    )
    async with BabaSSLServer(options) as babassl:
        edge = tlcp_listener(
            demo_pki, client_auth="required", protocols=("tlcp",), suites=["ECDHE_SM4_GCM_SM3"]
        )
        edge["tls"]["tlcp"] = {"profile": "tongsuo"}
        upstream = {"address": "127.0.0.1", "port": babassl.port}
        clusters = [
            {
                "name": name,
                "endpoints": [upstream],
                "connect_timeout": 10,
                "outlier_detection": None,
                "transport_socket": tlcp_transport(
                    demo_pki, cipher_suites=["ECDHE_SM4_GCM_SM3"], **client_pair(demo_pki), **profile
                ),
            }
            for name, profile in (
                ("standard", {"profile": "standard"}),
                ("tongsuo", {"profile": "tongsuo"}),
                ("auto", {}),
            )
        ]
        doc = {
            "listeners": [
                tcp_listener("standard", "standard"),
                tcp_listener("tongsuo", "tongsuo", edge["tls"]),
                tcp_listener("auto", "auto"),
            ],
            "clusters": clusters,
            "admin": None,
        }
        async with running(doc) as gw:
            transport = gw.generation.listener_transports["tongsuo"]["tlcp"]
            assert isinstance(transport, TlcpTransport)
            assert transport.policy.configuration.profile is PeerProfile.TONGSUO
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("standard"))
            writer.write(b"refused upstream")
            async with asyncio.timeout(15):
                assert await reader.read() == b""  # the upstream handshake failed: nothing to relay
            writer.close()
            payload = 20_000
            (report,) = await run_babassl_client(
                ClientOptions(
                    port=gw.listener_port("tongsuo"),
                    suite=suite,
                    certs=babassl_pki.client_files,
                    ca_file=babassl_pki.peer_ca_file,
                    server_name="localhost",
                    payload_size=payload,
                )
            )
            assert report.error is None and report.cipher == suite
            assert report.payload_ok and report.received == payload
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("auto"))
            writer.write(b"through auto")
            async with asyncio.timeout(15):
                assert await reader.readexactly(12) == b"through auto"
            writer.close()
            connector = gw.cluster_manager.get("auto").connector
            assert isinstance(connector, TlcpConnector)
            assert connector.dialects.stats.handshakes == {("tongsuo", "recognised"): 1}
            assert connector.dialects.stats.retries == 0
        reports = await babassl.reports()
    failed = [r.error for r in reports if r.error is not None]
    served = [r for r in reports if r.error is None]
    # BabaSSL reads the standard (opaque<2>-wrapped) ECDHE ClientKeyExchange as a bad length.
    assert len(failed) == 1 and "ntls_process_cke_sm2dhe:length mismatch" in failed[0].lower()
    assert len(served) == 2 and all(r.cipher == suite for r in served)
    assert sorted(r.received for r in served) == [12, payload]
    for report in served:  # the gateway authenticated to BabaSSL with its configured SM2 client pair
        assert report.verify_result == 0
        assert report.peer_subject == openssl_oneline(babassl_pki.client_set.sign_cert)


async def test_auto_upstream_retries_a_misleading_server_once(demo_pki, babassl_pki, caplog):
    """A server with GmSSL's CertificateRequest that wants the standard forms: the first connection
    through the gateway pays one refused handshake, logs the dialect found, later ones go straight."""
    server = DialectServer(
        STANDARD_BEHIND_GMSSL_REQUEST, babassl_pki, suites=(CipherSuite.ECC_SM4_GCM_SM3,), client_auth=True
    )
    async with server.running():
        cluster = {
            "name": "misleading",
            "endpoints": [{"address": "127.0.0.1", "port": server.port}],
            "connect_timeout": 10,
            "outlier_detection": None,
            # without resumption the second connection is a full handshake that needs the dialect again
            "transport_socket": tlcp_transport(
                demo_pki,
                cipher_suites=["ECC_SM4_GCM_SM3"],
                session_resumption=False,
                **client_pair(demo_pki),
            ),
        }
        doc = {"listeners": [tcp_listener("edge", "misleading")], "clusters": [cluster], "admin": None}
        caplog.set_level("INFO", logger="gateway.transports.tlcp")
        async with running(doc) as gw:
            for message in (b"first", b"second"):
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("edge"))
                writer.write(message)
                async with asyncio.timeout(15):
                    assert await reader.readexactly(len(message)) == message
                writer.close()
            connector = gw.cluster_manager.get("misleading").connector
            assert isinstance(connector, TlcpConnector)
            stats = connector.dialects.stats
    assert (stats.retries, stats.retries_succeeded) == (1, 1)
    assert stats.handshakes == {("standard", "retried"): 1, ("standard", "remembered"): 1}
    assert [s.refusal is not None for s in server.served] == [True, False, False]
    (record,) = [r for r in caplog.records if "speaks dialect" in r.getMessage()]
    assert record.getMessage() == (
        f"tlcp upstream 127.0.0.1:{server.port} speaks dialect standard "
        "(retried: the server refused gmssl (handshake_failure))"
    )
