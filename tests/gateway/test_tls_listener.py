"""Standard TLS 1.3/1.2 and plaintext on one listener port: versions, SNI certificate sets, mTLS."""

from __future__ import annotations

import ssl

import h11
import pytest

from gateway.echo import EchoService
from tests.gateway.helpers import HttpClient, base_doc, client_context, running


@pytest.fixture
async def echo():
    service = await EchoService(name="echo").start()
    yield service
    await service.close()


@pytest.mark.parametrize("version", ["1.3", "1.2"])
async def test_tls_versions_on_one_port_and_plain(pki, echo, version):
    async with running(base_doc(pki, echo.port)) as gw:
        port = gw.listener_port("main")
        client = await HttpClient.open(port, client_context(pki, version=version))
        status, headers, body = await client.request("GET", "/hello")
        assert status == 200
        assert headers["x-upstream"] == "echo"
        seen = client.json(body)
        assert seen["path"] == "/hello"
        assert seen["headers"]["x-forwarded-proto"] == "https"
        ssl_object = client.writer.get_extra_info("ssl_object")
        assert ssl_object.version() == f"TLSv{version}"
        # keep-alive: a second request on the same connection
        status, _, _ = await client.request("GET", "/again")
        assert status == 200
        await client.close()
        plain = await HttpClient.open(port)
        status, _, body = await plain.request("GET", "/plain")
        assert status == 200 and plain.json(body)["headers"]["x-forwarded-proto"] == "http"
        await plain.close()
        assert echo.connections == 1 or echo.requests == 3


async def test_sni_selects_certificate_set(pki, echo):
    async with running(base_doc(pki, echo.port)) as gw:
        port = gw.listener_port("main")
        for name, expected in (("other.test", "CN=other.test"), ("localhost", "CN=server_")):
            client = await HttpClient.open(port, client_context(pki), server_hostname=name)
            der = client.writer.get_extra_info("ssl_object").getpeercert()
            subject = dict(x[0] for x in der["subject"])
            assert subject["commonName"].startswith(expected.split("=")[1])
            await client.close()


async def test_mtls_required_refuses_missing_and_foreign_certs(pki, echo):
    doc = base_doc(
        pki,
        echo.port,
        client_auth="required",
        routes=[
            {"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "echo", "identity_headers": True}}
        ],
    )
    async with running(doc) as gw:
        port = gw.listener_port("main")
        client = await HttpClient.open(port, client_context(pki, cert=True))
        status, _, body = await client.request("GET", "/who")
        assert status == 200
        headers = client.json(body)["headers"]
        assert headers["x-client-cert-fingerprint-sha256"] == pki.client_fingerprint
        assert "client.test" in headers["x-client-cert-san"]
        await client.close()
        for ctx in (client_context(pki), client_context(pki, rogue=True)):
            with pytest.raises((ssl.SSLError, ConnectionError, h11.RemoteProtocolError)):
                c = await HttpClient.open(port, ctx)
                # TLS 1.3: the server's refusal arrives after the client's Finished
                await c.request("GET", "/who")
        failures = gw.stats.as_json()
        refused = [v for k, v in failures.items() if k.startswith("smgate_handshake_failures_total")]
        assert sum(refused) == 2


async def test_mtls_optional_and_route_access_control(pki, echo):
    routes = [
        {
            "name": "admin",
            "match": {"prefix": "/admin"},
            "access": {"allow": [{"fingerprint": pki.client_fingerprint}]},
            "route": {"cluster": "echo"},
        },
        {"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "echo"}},
    ]
    async with running(base_doc(pki, echo.port, client_auth="optional", routes=routes)) as gw:
        port = gw.listener_port("main")
        anonymous = await HttpClient.open(port, client_context(pki))
        assert (await anonymous.request("GET", "/public"))[0] == 200
        assert (await anonymous.request("GET", "/admin/x"))[0] == 403
        await anonymous.close()
        known = await HttpClient.open(port, client_context(pki, cert=True))
        assert (await known.request("GET", "/admin/x"))[0] == 200
        await known.close()


async def test_identity_headers_from_clients_are_stripped(pki, echo):
    async with running(base_doc(pki, echo.port)) as gw:
        client = await HttpClient.open(gw.listener_port("main"), client_context(pki))
        _, _, body = await client.request("GET", "/", headers=[("x-client-cert-subject", "CN=forged")])
        assert "x-client-cert-subject" not in client.json(body)["headers"]
        await client.close()
