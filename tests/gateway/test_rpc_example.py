"""The worked example: a private length-prefixed RPC codec routed by the ordinary route configuration."""

from __future__ import annotations

import asyncio
import json

from examples.rpc_codec import rpc_call, start_rpc_echo_server
from tests.gateway.helpers import RecordingAudit, running


def rpc_doc(pki, billing_port: int, ledger_port: int) -> dict:
    return {
        "listeners": [
            {
                "name": "rpc",
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"protocols": ["plain"]},
                "filter_chains": [
                    {
                        "filters": [
                            {
                                "name": "http_connection_manager",
                                "route_config": "rpc",
                                "codec": "examples.rpc_codec:RpcCodecFactory",
                            }
                        ]
                    }
                ],
            }
        ],
        "route_configs": [
            {
                "name": "rpc",
                "virtual_hosts": [
                    {
                        "name": "billing",
                        "domains": ["billing"],
                        "routes": [
                            {
                                "name": "refund",
                                "match": {"path": "/billing/Refund"},
                                "access": {"deny": [{}]},  # everyone: a plain listener has no identity
                                "route": {"cluster": "billing"},
                            },
                            {
                                "name": "billing",
                                "match": {"prefix": "/billing/"},
                                "route": {
                                    "cluster": "billing",
                                    "request_headers_to_add": [{"name": "x-via", "value": "smgate"}],
                                },
                            },
                        ],
                    },
                    {
                        "name": "ledger",
                        "domains": ["ledger"],
                        "routes": [
                            {"name": "ledger", "match": {"prefix": "/"}, "route": {"cluster": "ledger"}}
                        ],
                    },
                ],
            }
        ],
        "clusters": [
            {"name": "billing", "endpoints": [{"address": "127.0.0.1", "port": billing_port}]},
            {"name": "ledger", "endpoints": [{"address": "127.0.0.1", "port": ledger_port}]},
        ],
        "admin": None,
    }


async def test_rpc_codec_routes_services_and_methods(pki):
    billing = await start_rpc_echo_server("billing-backend")
    ledger = await start_rpc_echo_server("ledger-backend")
    ports = [s.sockets[0].getsockname()[1] for s in (billing, ledger)]
    audit = RecordingAudit()
    async with running(rpc_doc(pki, *ports), audit=audit) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("rpc"))
        status, headers, body = await rpc_call(
            reader, writer, "billing", "Charge", b"x" * 100, {"tenant": "t1"}
        )
        reply = json.loads(body)
        assert status == 200 and headers["backend"] == "billing-backend"
        assert reply["method"] == "Charge" and reply["body_bytes"] == 100
        assert reply["headers"]["tenant"] == "t1" and reply["headers"]["x-via"] == "smgate"
        status, _, body = await rpc_call(reader, writer, "ledger", "Balance")
        assert status == 200 and json.loads(body)["backend"] == "ledger-backend"
        status, _, body = await rpc_call(reader, writer, "billing", "Refund")  # no client certificate
        assert status == 403
        status, _, _ = await rpc_call(reader, writer, "inventory", "List")
        assert status == 404
        writer.close()
        requests = {k: v for k, v in gw.stats.as_json().items() if k.startswith("smgate_requests_total")}
        assert requests["smgate_requests_total{route=billing,status=200}"] == 1
        assert requests["smgate_requests_total{route=refund,status=403}"] == 1
    decisions = [
        (r["route"], r["cluster"], r["upstream"], r["verdict"], r["reason"], r["codec"])
        for r in audit.of("http.request")
    ]
    assert decisions == [
        ("billing", "billing", f"127.0.0.1:{ports[0]}", "allow", "forward", "rpc"),
        ("ledger", "ledger", f"127.0.0.1:{ports[1]}", "allow", "forward", "rpc"),
        ("refund", "billing", None, "deny", "access_control", "rpc"),
        (None, None, None, "deny", "no_route", "rpc"),
    ]
    assert [r["path"] for r in audit.of("http.request")] == [
        "/billing/Charge",
        "/ledger/Balance",
        "/billing/Refund",
        "/inventory/List",
    ]
    billing.close()
    ledger.close()
