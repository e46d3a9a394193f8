"""Issue 10: a client identity exists only for a chain validated against the listener's trust anchors.

The probe is the one from the report: a client that made its own SM2 root CA and issued itself a TLCP
sign/enc pair connects with ECDHE (which makes the server ask for certificates even with
``client_auth: none``) and asks for routes guarded by ``authenticated: true`` and by a subject rule.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import h11
import pytest

from certs import TrustStore, load_sm2_certificate_set
from certs.pki import TLCPPair, certificates_pem, create_sm2_root_ca, issue_tlcp_pair, save_issued
from certs.profile import Subject
from gateway.config import ConfigError, parse_config
from gateway.echo import EchoService
from tests.gateway.helpers import HttpClient, RecordingAudit, client_context, demo_certificate_set, running
from tests.gateway.test_tls_listener import base_doc
from tls.tlcp import CipherSuite, TLCPConfiguration
from tls.tlcp.aio import TLCPStreamError, tlcp_connect

if TYPE_CHECKING:
    from tests.gateway.pki import TestPKI

ROGUE_SUBJECT = "rogue_client_sign"


def _pair_files(pair: TLCPPair, directory: Path, name: str) -> dict[str, str]:
    paths = {k: str(directory / f"{name}_{k}") for k in ("sign.crt", "sign.key", "enc.crt", "enc.key")}
    save_issued(pair.sign, paths["sign.crt"], paths["sign.key"])
    save_issued(pair.enc, paths["enc.crt"], paths["enc.key"])
    return paths


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-made SM2 root CA and a client sign/enc pair it issued."""
    directory = tmp_path_factory.mktemp("rogue")
    ca = create_sm2_root_ca(Subject("rogue root"))
    pair = issue_tlcp_pair(Subject(ROGUE_SUBJECT), ca, role="client")
    paths = _pair_files(pair, directory, "rogue")
    (directory / "ca.pem").write_bytes(certificates_pem([ca.certificate]))
    paths["ca"] = str(directory / "ca.pem")
    return paths


@pytest.fixture(scope="module")
def second_ca(tmp_path_factory: pytest.TempPathFactory, demo_pki) -> dict[str, str]:
    """A second, trusted-at-first SM2 CA with a client pair, and a bundle of both anchors."""
    directory = tmp_path_factory.mktemp("second")
    ca = create_sm2_root_ca(Subject("second root"))
    paths = _pair_files(issue_tlcp_pair(Subject("second_client"), ca, role="client"), directory, "second")
    bundle = directory / "both.pem"
    bundle.write_bytes(Path(demo_pki.sm2.ca_bundle).read_bytes() + certificates_pem([ca.certificate]))
    paths["bundle"] = str(bundle)
    return paths


def _routes() -> list[dict]:
    return [
        {
            "name": "secret",
            "match": {"prefix": "/secret"},
            "access": {"allow": [{"authenticated": True}]},
            "direct_response": {"status": 200, "body": "SECRET DATA"},
        },
        {
            "name": "payments",
            "match": {"prefix": "/payments"},
            "access": {"allow": [{"subject": f"CN={ROGUE_SUBJECT}"}]},
            "direct_response": {"status": 200, "body": "PAYMENTS"},
        },
        {"name": "echo", "match": {"prefix": "/"}, "route": {"cluster": "echo"}},
    ]


def _doc(demo, upstream_port: int, *, client_auth: str, sm2_anchors: str | None, routes: list[dict]) -> dict:
    tls: dict = {
        "protocols": ["tlcp"],
        "client_auth": client_auth,
        "certificates": [demo_certificate_set(demo)],
    }
    if sm2_anchors is not None:
        tls["sm2_trust_anchors"] = sm2_anchors
    return {
        "listeners": [
            {
                "name": "edge",
                "port": 0,
                "tls": tls,
                "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "main"}]}],
            }
        ],
        "route_configs": [{"name": "main", "virtual_hosts": [{"name": "all", "routes": routes}]}],
        "clusters": [{"name": "echo", "endpoints": [{"address": "127.0.0.1", "port": upstream_port}]}],
        "admin": None,
    }


def _client(demo, pair: dict[str, str]) -> TLCPConfiguration:
    return TLCPConfiguration(
        is_client=True,
        cipher_suites=(CipherSuite.ECDHE_SM4_GCM_SM3,),
        certificate_set=load_sm2_certificate_set(
            pair["sign.crt"], pair["sign.key"], pair["enc.crt"], pair["enc.key"], pair.get("chain")
        ),
        trust_store=demo.sm2_trust_store(),
        server_name="localhost",
    )


async def _get(port: int, configuration: TLCPConfiguration, path: str) -> tuple[int, dict[str, str], bytes]:
    stream = await tlcp_connect("127.0.0.1", port, configuration, handshake_timeout=5)
    client = HttpClient(stream, stream)  # type: ignore[arg-type]
    try:
        status, headers, body = await client.request("GET", path)
    finally:
        stream.close()
    return status, headers, body


@pytest.fixture
async def echo():
    service = await EchoService(name="echo").start()
    yield service
    await service.close()


def test_identity_rules_on_an_unverifying_listener_are_refused(demo_pki) -> None:
    doc = _doc(demo_pki, 9, client_auth="none", sm2_anchors=None, routes=_routes())
    doc["listeners"][0]["filter_chains"][0]["filters"][0]["identity_headers"] = {"enabled": True}
    doc["clusters"][0]["lb_policy"] = "ring_hash"
    doc["clusters"][0]["hash_policy"] = {"client_cert_fingerprint": True}
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    paths = sorted(e.split(":")[0] for e in refused.value.errors)
    assert paths == [
        "clusters[0].hash_policy.client_cert_fingerprint",
        "listeners[0].filter_chains[0].filters[0].identity_headers",
        "route_configs[0].virtual_hosts[0].routes[0].access",
        "route_configs[0].virtual_hosts[0].routes[1].access",
    ]
    assert all("listener 'edge'" in e and "client_auth: none" in e for e in refused.value.errors)


def test_rbac_filter_needing_identity_is_refused_with_its_path(demo_pki) -> None:
    doc = _doc(demo_pki, 9, client_auth="none", sm2_anchors=None, routes=_routes()[2:])
    chain = doc["listeners"][0]["filter_chains"][0]
    chain["filters"].insert(0, {"name": "rbac", "access": {"deny": [{"issuer": "CN=Revoked"}]}})
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    assert [e.split(":")[0] for e in refused.value.errors] == [
        "listeners[0].filter_chains[0].filters[0].access"
    ]


async def test_config_check_cli_refuses_the_reported_config(demo_pki, tmp_path: Path) -> None:
    import yaml

    from gateway.cli import main

    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_doc(demo_pki, 9, client_auth="none", sm2_anchors=None, routes=_routes())))
    assert main(["config", "check", str(path)]) != 0


async def test_rogue_ecdhe_client_has_no_identity_on_a_listener_without_anchors(
    demo_pki, rogue, echo
) -> None:
    """Without anchors the server still takes the ECDHE client's certificates, but only as a claim."""
    audit = RecordingAudit()
    doc = _doc(demo_pki, echo.port, client_auth="none", sm2_anchors=None, routes=_routes()[2:])
    async with running(doc, audit=audit) as gw:
        status, _, body = await _get(gw.listener_port("edge"), _client(demo_pki, rogue), "/who")
    assert status == 200
    upstream_headers = HttpClient.json(None, body)["headers"]  # type: ignore[arg-type]
    assert not [h for h in upstream_headers if h.startswith(("x-client-cert", "x-ssl-client"))]
    [handshake] = audit.of("handshake.ok")
    assert handshake["client_cert"] is None
    assert handshake["client_cert_unverified"]["subject"] == f"CN={ROGUE_SUBJECT}"
    [request] = audit.of("http.request")
    assert not request.get("client_cert")


async def test_rogue_ecdhe_client_is_refused_where_identity_rules_are_allowed(demo_pki, rogue, echo) -> None:
    """The second config passes check (anchors, client_auth optional) and still keeps the rogue out."""
    doc = _doc(
        demo_pki, echo.port, client_auth="optional", sm2_anchors=str(demo_pki.sm2.ca_bundle), routes=_routes()
    )
    trusted = {
        "sign.crt": str(demo_pki.sm2.client_sign.cert),
        "sign.key": str(demo_pki.sm2.client_sign.key),
        "enc.crt": str(demo_pki.sm2.client_enc.cert),
        "enc.key": str(demo_pki.sm2.client_enc.key),
        "chain": str(demo_pki.sm2.chain),
    }
    async with running(doc) as gw:
        port = gw.listener_port("edge")
        for path in ("/secret", "/payments"):
            with pytest.raises((TLCPStreamError, ConnectionError)):
                await _get(port, _client(demo_pki, rogue), path)
        status, _, body = await _get(port, _client(demo_pki, trusted), "/secret")
        assert (status, body) == (200, b"SECRET DATA")
        status, _, _ = await _get(port, _client(demo_pki, trusted), "/payments")
        assert status == 403  # a verified identity, but not the subject the rule names


async def test_tls_optional_client_auth_refuses_an_untrusted_certificate(pki: TestPKI, echo) -> None:
    routes = [
        {
            "name": "secret",
            "match": {"prefix": "/secret"},
            "access": {"allow": [{"authenticated": True}]},
            "route": {"cluster": "echo", "identity_headers": True},
        }
    ]
    audit = RecordingAudit()
    async with running(base_doc(pki, echo.port, client_auth="optional", routes=routes), audit=audit) as gw:
        port = gw.listener_port("main")
        with pytest.raises((ssl.SSLError, ConnectionError, h11.RemoteProtocolError)):
            client = await HttpClient.open(port, client_context(pki, rogue=True))
            await client.request("GET", "/secret")  # TLS 1.3: the refusal follows the client's Finished
        anonymous = await HttpClient.open(port, client_context(pki))
        status, _, _ = await anonymous.request("GET", "/secret")
        await anonymous.close()
    assert status == 403
    assert not [r for r in audit.of("handshake.ok") if r["client_cert"] is not None]


async def test_reload_removing_an_anchor_refuses_chains_under_it(demo_pki, second_ca, echo, tmp_path) -> None:
    routes = _routes()[:1]
    doc = _doc(demo_pki, echo.port, client_auth="required", sm2_anchors=second_ca["bundle"], routes=routes)
    async with running(doc) as gw:
        port = gw.listener_port("edge")
        client = _client(demo_pki, second_ca)
        stream = await tlcp_connect("127.0.0.1", port, client, handshake_timeout=5)
        session = stream.session
        stream.close()
        assert session is not None
        reduced = _doc(
            demo_pki,
            echo.port,
            client_auth="required",
            sm2_anchors=str(demo_pki.sm2.ca_bundle),
            routes=routes,
        )
        assert await gw.reload(parse_config(reduced, Path.cwd())) == []
        from dataclasses import replace

        for configuration in (client, replace(client, session=session)):  # full, and an offered resumption
            with pytest.raises((TLCPStreamError, ConnectionError)):
                await _get(port, configuration, "/secret")


def test_trust_store_of_rogue_ca_does_not_vouch_for_demo_clients(demo_pki, rogue) -> None:
    """Sanity for the fixtures: the rogue CA is a different anchor from the demo one."""
    rogue_store = TrustStore.from_pem_file(Path(rogue["ca"]))
    demo_store = demo_pki.sm2_trust_store()
    assert set(rogue_store.ca_names_der()).isdisjoint(demo_store.ca_names_der())
