"""Issue 15's "done when" over TLCP (and TLS 1.3-SM): a grpcio client calls a grpcio server through
``smgate serve``, streaming included, with access control by client certificate and one audit record per
call.

grpcio speaks no TLCP, so the national-crypto hop is the service-hop deployment, two real processes::

    grpcio client --h2c--> smgate A (outbound: HTTP/2 cluster over TLCP with an SM2 client pair)
                  --TLCP, ALPN h2--> smgate B (TLCP listener, client_auth required, route access on the
                  client certificate's subject, audit trail) --h2c--> grpcio server

A second listener of A presents another SM2 pair from the same CA (authenticated, but not allowed), and
a third goes over TLS 1.3-SM (``tls13_sm`` cluster to B's ``tls1.3-sm``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from audit.keys import write_audit_key
from certs.pki import issue_tlcp_pair, load_sm2_issuer, save_issued
from certs.profile import Subject
from tests.gateway.conftest import write_config
from tests.gateway.process import GatewayProcess, serve
from tests.gateway.test_grpc_gateway import SERVICE, _exercise, _method, grpc_upstream  # noqa: F401
from tests.ports import free_ports

ALLOWED_SUBJECT = "CN=smgate demo client"


@pytest.fixture(scope="module")
def other_client(demo_pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A TLCP client pair from the demo CA with another subject: authenticated, not allowed."""
    intermediate = load_sm2_issuer(demo_pki.sm2.intermediate.cert, demo_pki.sm2.intermediate.key)
    pair = issue_tlcp_pair(
        Subject("other service", "smgate demo", "tlcp client", "CN"), intermediate, role="client"
    )
    directory = tmp_path_factory.mktemp("other-client")
    files = {name: str(directory / name) for name in ("sign.pem", "sign.key", "enc.pem", "enc.key")}
    save_issued(pair.sign, files["sign.pem"], files["sign.key"])
    save_issued(pair.enc, files["enc.pem"], files["enc.key"])
    return {
        "sign_cert": files["sign.pem"],
        "sign_key": files["sign.key"],
        "enc_cert": files["enc.pem"],
        "enc_key": files["enc.key"],
    }


def inbound_doc(demo, port: int, grpc_port: int, audit_dir: Path) -> dict:
    """smgate B: TLCP and TLS 1.3-SM, client certificates required, gRPC to an h2c upstream."""
    certificate = {
        "name": "default",
        "sign_cert": str(demo.sm2.server_sign.cert),
        "sign_key": str(demo.sm2.server_sign.key),
        "enc_cert": str(demo.sm2.server_enc.cert),
        "enc_key": str(demo.sm2.server_enc.key),
        "chain": str(demo.sm2.chain),
    }
    route = {
        "name": "echo",
        "match": {"prefix": f"/{SERVICE}/"},
        "access": {"allow": [{"subject": ALLOWED_SUBJECT}]},
        "route": {"cluster": "grpc-app"},
    }
    write_audit_key(audit_dir / "chain.key")
    return {
        "listeners": [
            {
                "name": "inbound",
                "address": "127.0.0.1",
                "port": port,
                "tls": {
                    "protocols": ["tlcp", "tls1.3-sm"],
                    "client_auth": "required",
                    "sm2_trust_anchors": str(demo.sm2.ca_bundle),
                    "alpn": ["h2", "http/1.1"],
                    "certificates": [certificate],
                },
                "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "in"}]}],
            }
        ],
        "route_configs": [{"name": "in", "virtual_hosts": [{"name": "grpc", "routes": [route]}]}],
        "clusters": [
            {
                "name": "grpc-app",
                "http2_protocol_options": {},
                "endpoints": [{"address": "127.0.0.1", "port": grpc_port}],
            }
        ],
        "audit": {
            "key_file": str(audit_dir / "chain.key"),
            "pipeline": "thread",
            "sinks": [{"type": "file", "directory": str(audit_dir / "log")}],
        },
        "admin": None,
    }


def outbound_doc(demo, ports: dict[str, int], inbound_port: int, other_pair: dict[str, str]) -> dict:
    """smgate A: one h2c listener per way of reaching B (TLCP, TLCP with the other pair, TLS 1.3-SM)."""
    client_pair = {
        "sign_cert": str(demo.sm2.client_sign.cert),
        "sign_key": str(demo.sm2.client_sign.key),
        "enc_cert": str(demo.sm2.client_enc.cert),
        "enc_key": str(demo.sm2.client_enc.key),
        "chain": str(demo.sm2.chain),
    }
    verify = {"server_name": "localhost", "trust_anchors": str(demo.sm2.ca_bundle)}
    transports = {
        "tlcp": {"type": "tlcp", **verify, **client_pair},
        "tlcp-other": {"type": "tlcp", **verify, **other_pair, "chain": client_pair["chain"]},
        "sm": {
            "type": "tls13_sm",
            **verify,
            "sign_cert": client_pair["sign_cert"],
            "sign_key": client_pair["sign_key"],
            "chain": client_pair["chain"],
        },
    }
    listeners, route_configs, clusters = [], [], []
    for name, transport in transports.items():
        listeners.append(
            {
                "name": name,
                "address": "127.0.0.1",
                "port": ports[name],
                "filter_chains": [
                    {
                        "filters": [
                            {
                                "name": "http_connection_manager",
                                "route_config": name,
                                "h2c_prior_knowledge": True,
                            }
                        ]
                    }
                ],
            }
        )
        route = {"name": "hop", "match": {"prefix": "/"}, "route": {"cluster": name}}
        route_configs.append({"name": name, "virtual_hosts": [{"name": "all", "routes": [route]}]})
        clusters.append(
            {
                "name": name,
                "transport_socket": transport,
                "http2_protocol_options": {},
                "endpoints": [{"address": "127.0.0.1", "port": inbound_port}],
            }
        )
    return {"listeners": listeners, "route_configs": route_configs, "clusters": clusters, "admin": None}


async def start_hop(demo, tmp_path: Path, grpc_port: int, other_pair: dict[str, str]):
    inbound_port, tlcp_port, other_port, sm_port = free_ports(4)
    inbound = await asyncio.to_thread(
        serve, write_config(tmp_path / "b.yaml", inbound_doc(demo, inbound_port, grpc_port, tmp_path))
    )
    ports = {"tlcp": tlcp_port, "tlcp-other": other_port, "sm": sm_port}
    try:
        outbound = await asyncio.to_thread(
            serve, write_config(tmp_path / "a.yaml", outbound_doc(demo, ports, inbound_port, other_pair))
        )
    except BaseException:
        inbound.stop()
        raise
    return inbound, outbound


def stop(*processes: GatewayProcess) -> None:
    for process in processes:
        assert process.stop() == 0, process.output()


def audit_records(tmp_path: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted((tmp_path / "log").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


async def test_grpc_through_a_tlcp_service_hop(demo_pki, grpc_upstream, other_client, tmp_path):  # noqa: F811
    inbound, outbound = await start_hop(demo_pki, tmp_path, grpc_upstream, other_client)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{outbound.port('tlcp')}") as channel:
            await _exercise(channel)  # unary, server/client/bidi streaming, a failing method: 5 calls
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await _method(channel, "unary_unary", "Slow")(b"5", timeout=0.5)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        async with grpc.aio.insecure_channel(f"127.0.0.1:{outbound.port('tlcp-other')}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await _method(channel, "unary_unary", "Unary")(b"not you")
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        stop(outbound, inbound)
    records = audit_records(tmp_path)
    handshakes = [r for r in records if r["event"] == "handshake.ok"]
    assert {(r["protocol"], r["alpn"]) for r in handshakes} == {("TLCP", "h2")}
    calls = [r for r in records if r["event"] == "http.request"]
    methods = [r["path"].rsplit("/", 1)[1] for r in calls]
    assert sorted(methods) == sorted(
        ["Unary", "ServerStream", "ClientStream", "Bidi", "Fail", "Slow", "Unary"]
    )
    assert all(
        r["protocol"] == "TLCP" and r["http_version"] == "HTTP/2" and r["stream_id"] >= 1 for r in calls
    )
    allowed = [r for r in calls if r["client_cert"]["subject"].startswith(ALLOWED_SUBJECT)]
    (refused,) = [r for r in calls if r not in allowed]
    assert len(allowed) == 6 and all(
        r["status"] == 200 for r in allowed if r["path"].endswith(("/Unary", "/Bidi"))
    )
    assert refused["client_cert"]["subject"].startswith("CN=other service") and refused["status"] == 403


async def test_grpc_through_a_tls13_sm_service_hop(demo_pki, grpc_upstream, other_client, tmp_path):  # noqa: F811
    inbound, outbound = await start_hop(demo_pki, tmp_path, grpc_upstream, other_client)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{outbound.port('sm')}") as channel:
            assert await _method(channel, "unary_unary", "Unary")(b"sm") == b"echo:sm"
            parts = [m async for m in _method(channel, "unary_stream", "ServerStream")(b"20")]
            assert parts == [f"part-{i}".encode() * 100 for i in range(20)]
            bidi = _method(channel, "stream_stream", "Bidi")()
            for word in (b"one", b"two" * 10_000):
                await bidi.write(word)
                assert await bidi.read() == word[::-1]
            await bidi.done_writing()
            assert await bidi.read() == grpc.aio.EOF
    finally:
        stop(outbound, inbound)
    records = audit_records(tmp_path)
    (handshake,) = [r for r in records if r["event"] == "handshake.ok"]
    assert (handshake["protocol"], handshake["alpn"], handshake["cipher_suite"]) == (
        "TLSv1.3",
        "h2",
        "TLS_SM4_GCM_SM3",
    )
    calls = [r for r in records if r["event"] == "http.request"]
    assert [r["path"].rsplit("/", 1)[1] for r in calls] == ["Unary", "ServerStream", "Bidi"]
    assert all(
        r["http_version"] == "HTTP/2" and r["client_cert"]["subject"].startswith(ALLOWED_SUBJECT)
        for r in calls
    )
