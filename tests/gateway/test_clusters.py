"""Clusters: load balancing, active health checks, outlier ejection, circuit breaking, pooling."""

from __future__ import annotations

import asyncio
import collections

import pytest

from gateway.auditing import NullAudit
from gateway.cluster import Cluster, ClusterOverflow
from gateway.config import ClusterConfig
from gateway.echo import EchoService
from gateway.stats import GatewayStats
from tests.gateway.helpers import HttpClient, base_doc, running


def _cluster(**kw) -> Cluster:
    cfg = ClusterConfig.model_validate(
        {
            "name": "c",
            "endpoints": [{"address": "127.0.0.1", "port": p} for p in (1001, 1002, 1003)],
            **kw,
        }
    )
    return Cluster(cfg, GatewayStats(), NullAudit())


def test_round_robin_spreads_evenly():
    cluster = _cluster()
    picks = collections.Counter(cluster.choose_host().endpoint.port for _ in range(30))
    assert picks == {1001: 10, 1002: 10, 1003: 10}


def test_least_request_prefers_idle_hosts():
    cluster = _cluster(lb_policy="least_request")
    cluster.hosts[0].active_requests = 5
    cluster.hosts[1].active_requests = 1
    assert {cluster.choose_host().endpoint.port for _ in range(10)} == {1003}


def test_ring_hash_is_consistent_and_moves_little():
    cluster = _cluster(lb_policy="ring_hash", hash_policy={"header": "x-user"})
    keys = [f"user-{i}" for i in range(200)]
    before = {k: cluster.choose_host(k).endpoint.port for k in keys}
    assert before == {k: cluster.choose_host(k).endpoint.port for k in keys}
    assert len(set(before.values())) == 3
    cluster.hosts[0].healthy = False
    after = {k: cluster.choose_host(k).endpoint.port for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == 1001 for k in moved)  # only keys of the removed host move


def test_outlier_detection_ejects_and_respects_max_percent():
    cluster = _cluster(
        outlier_detection={"consecutive_errors": 2, "base_ejection_time": 30, "max_ejection_percent": 34}
    )
    first, second = cluster.hosts[0], cluster.hosts[1]
    cluster.report(first, False)
    assert first.available(cluster.clock())
    cluster.report(first, False)
    assert not first.available(cluster.clock())
    cluster.report(second, False)
    cluster.report(second, False)
    assert second.available(cluster.clock())  # a second ejection would exceed 34 %
    assert {cluster.choose_host().endpoint.port for _ in range(6)} == {1002, 1003}


def test_circuit_breaker_max_requests():
    cluster = _cluster(circuit_breakers={"max_requests": 2})
    cluster.begin_request()
    cluster.begin_request()
    with pytest.raises(ClusterOverflow):
        cluster.begin_request()
    cluster.end_request()
    cluster.begin_request()


async def test_health_check_ejects_and_recovers(pki):
    good, flaky = await EchoService(name="good").start(), await EchoService(name="flaky").start()
    extra = {
        "endpoints": [
            {"address": "127.0.0.1", "port": good.port},
            {"address": "127.0.0.1", "port": flaky.port},
        ],
        "health_checks": {
            "type": "http",
            "path": "/healthz",
            "interval": 0.1,
            "timeout": 0.5,
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
        },
    }
    async with running(base_doc(pki, good.port, cluster_extra=extra)) as gw:
        c = await HttpClient.open(gw.listener_port("main"))

        async def served_by() -> set[str]:
            return {(await c.request("GET", "/"))[1]["x-upstream"] for _ in range(6)}

        assert await served_by() == {"good", "flaky"}
        flaky.unhealthy = True
        await asyncio.sleep(0.5)
        assert await served_by() == {"good"}
        health = {e["endpoint"]: e["healthy"] for e in gw.clusters_json()[0]["endpoints"]}
        assert health[f"127.0.0.1:{flaky.port}"] is False
        flaky.unhealthy = False
        await asyncio.sleep(0.5)
        assert await served_by() == {"good", "flaky"}
        await c.close()
    await good.close()
    await flaky.close()


async def test_connection_pool_reuses_upstream_connections(pki):
    echo = await EchoService().start()
    async with running(base_doc(pki, echo.port)) as gw:
        for _ in range(3):
            c = await HttpClient.open(gw.listener_port("main"))
            for _ in range(3):
                assert (await c.request("GET", "/"))[0] == 200
            await c.close()
    assert echo.requests == 9
    assert echo.connections == 1
    await echo.close()


def test_cluster_manager_reuses_unchanged_clusters_unless_their_files_changed(tmp_path):
    from gateway.cluster import ClusterManager

    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder")  # only the path is compared here; nothing loads it
    cfg = ClusterConfig.model_validate(
        {
            "name": "c",
            "endpoints": [{"address": "127.0.0.1", "port": 1}],
            "transport_socket": {"type": "plain", "trust_anchors": str(ca), "verify": False},
        }
    )
    manager = ClusterManager(GatewayStats(), NullAudit())
    manager.clusters, _ = manager.build((cfg,))
    same, retired = manager.build((cfg,))
    assert same["c"] is manager.clusters["c"] and retired == []
    rebuilt, retired = manager.build((cfg,), frozenset({ca}))
    assert rebuilt["c"] is not manager.clusters["c"] and retired == [manager.clusters["c"]]


async def test_circuit_breaker_limits_connections_and_pending():
    echo = await EchoService().start()
    cfg = ClusterConfig.model_validate(
        {
            "name": "c",
            "endpoints": [{"address": "127.0.0.1", "port": echo.port}],
            "connect_timeout": 0.3,
            "circuit_breakers": {"max_connections": 1, "max_pending_requests": 1},
        }
    )
    cluster = Cluster(cfg, GatewayStats(), NullAudit())
    host = cluster.hosts[0]
    first = await cluster.acquire(host, "tcp", None)
    waiting = asyncio.create_task(cluster.acquire(host, "tcp", None))  # pending: waits for a slot
    await asyncio.sleep(0.05)
    with pytest.raises(ClusterOverflow):  # pending queue full
        await cluster.acquire(host, "tcp", None)
    cluster.release(first, reusable=False)
    second = await waiting  # got the freed slot
    with pytest.raises(ClusterOverflow):  # nothing frees up within the connect timeout
        await cluster.acquire(host, "tcp", None)
    cluster.release(second, reusable=False)
    assert cluster.open_connections == 0
    await echo.close()


async def test_upstream_tls_name_mismatch_is_a_connect_failure(pki):
    import ssl

    echo = await EchoService().start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.server_rsa), str(pki.server_rsa_key))
    tls_echo = await EchoService(name="tls").start(ssl=ctx)
    for name, expected in (("localhost", 200), ("wrong.test", 503)):
        extra = {
            "endpoints": [{"address": "127.0.0.1", "port": tls_echo.port}],
            "transport_socket": {"type": "tls", "server_name": name, "trust_anchors": str(pki.ca)},
        }
        async with running(base_doc(pki, echo.port, cluster_extra=extra)) as gw:
            c = await HttpClient.open(gw.listener_port("main"))
            status, headers, _ = await c.request("GET", "/")
            assert status == expected
            if status == 200:
                assert headers["x-upstream"] == "tls"
            await c.close()
    await tls_echo.close()
    await echo.close()
