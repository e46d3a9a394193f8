"""HTTP/1.1 routing: matching, rewrites, direct responses, redirects, retries, limits, malformed input."""

from __future__ import annotations

import asyncio

import pytest

from gateway.echo import EchoService
from tests.gateway.helpers import HttpClient, base_doc, raw_exchange, running
from tests.ports import free_port


@pytest.fixture
async def echo():
    service = await EchoService(name="a").start()
    yield service
    await service.close()


ROUTES = [
    {"name": "exact", "match": {"path": "/exact"}, "direct_response": {"status": 200, "body": "exact\n"}},
    {
        "name": "regex",
        "match": {"regex": "/items/[0-9]+"},
        "direct_response": {"status": 200, "body": "item\n"},
    },
    {"name": "posts-only", "match": {"prefix": "/post", "methods": ["POST"]}, "route": {"cluster": "echo"}},
    {
        "name": "header",
        "match": {"prefix": "/h", "headers": [{"name": "x-tenant", "exact": "blue"}]},
        "direct_response": {"status": 200, "body": "blue\n"},
    },
    {
        "name": "redirect",
        "match": {"prefix": "/old"},
        "redirect": {"path_redirect": "/new", "response_code": 308},
    },
    {
        "name": "rewrite",
        "match": {"prefix": "/api/"},
        "route": {
            "cluster": "echo",
            "prefix_rewrite": "/v2/",
            "host_rewrite": "upstream.internal",
            "request_headers_to_add": [{"name": "x-added", "value": "yes"}],
            "request_headers_to_remove": ["x-secret"],
            "response_headers_to_add": [{"name": "x-gateway", "value": "smgate"}],
        },
    },
    {"name": "slow", "match": {"prefix": "/delay"}, "route": {"cluster": "echo", "timeout": 0.3}},
    {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": "echo"}},
]


def _doc(pki, port, routes=ROUTES, **kw):
    doc = base_doc(pki, port, routes=routes, **kw)
    doc["route_configs"][0]["virtual_hosts"].insert(
        0,
        {
            "name": "special",
            "domains": ["special.test"],
            "routes": [
                {
                    "name": "special",
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": "special\n"},
                }
            ],
        },
    )
    return doc


async def test_route_matching_and_actions(pki, echo):
    async with running(_doc(pki, echo.port)) as gw:
        c = await HttpClient.open(gw.listener_port("main"))
        assert (await c.request("GET", "/exact"))[2] == b"exact\n"
        assert (await c.request("GET", "/items/42"))[2] == b"item\n"
        assert (await c.request("GET", "/items/x"))[1]["x-upstream"] == "a"
        assert c.json((await c.request("POST", "/post", body=b"abc"))[2])["body_bytes"] == 3
        assert c.json((await c.request("GET", "/post"))[2])["path"] == "/post"  # falls to default
        assert (await c.request("GET", "/h", headers=[("x-tenant", "blue")]))[2] == b"blue\n"
        status, headers, _ = await c.request("GET", "/old/page")
        assert status == 308 and headers["location"] == "http://localhost/new"
        assert (await c.request("GET", "/", host="special.test:8080"))[2] == b"special\n"
        status, headers, body = await c.request("GET", "/api/users?q=1", headers=[("x-secret", "s")])
        seen = c.json(body)
        assert seen["path"] == "/v2/users?q=1"
        assert seen["headers"]["host"] == "upstream.internal"
        assert seen["headers"]["x-added"] == "yes" and "x-secret" not in seen["headers"]
        assert headers["x-gateway"] == "smgate"
        await c.close()


async def test_no_route_and_upstream_failures(pki, echo):
    routes = [
        {"name": "down", "match": {"prefix": "/down"}, "route": {"cluster": "dead"}},
        {"name": "slow", "match": {"prefix": "/delay"}, "route": {"cluster": "echo", "timeout": 0.3}},
    ]
    doc = base_doc(pki, echo.port, routes=routes)
    doc["clusters"].append(
        {
            "name": "dead",
            "connect_timeout": 0.5,
            "endpoints": [{"address": "127.0.0.1", "port": free_port()}],
        }
    )
    async with running(doc) as gw:
        c = await HttpClient.open(gw.listener_port("main"))
        assert (await c.request("GET", "/nothing"))[0] == 404
        assert (await c.request("GET", "/down"))[0] == 503
        assert (await c.request("GET", "/delay/2000"))[0] == 504
        await c.close()


async def test_retries_on_connect_failure_and_503(pki, echo):
    other = await EchoService(name="b").start()
    routes = [
        {
            "name": "r",
            "match": {"prefix": "/"},
            "route": {
                "cluster": "echo",
                "retry_policy": {"num_retries": 2, "retry_on": ["connect-failure", "503"]},
            },
        }
    ]
    extra = {
        "endpoints": [
            {"address": "127.0.0.1", "port": free_port()},
            {"address": "127.0.0.1", "port": echo.port},
        ],
        "outlier_detection": None,
    }
    async with running(base_doc(pki, echo.port, routes=routes, cluster_extra=extra)) as gw:
        c = await HttpClient.open(gw.listener_port("main"))
        statuses = [(await c.request("GET", "/x"))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 200]
        retries = {
            k: v for k, v in gw.stats.as_json().items() if k.startswith("smgate_upstream_retries_total")
        }
        assert sum(retries.values()) >= 2  # each request that picked the dead endpoint first was retried
        # 503 from the upstream is retried; a persistent 503 is answered after the retries run out
        status, _, _ = await c.request("GET", "/status/503")
        assert status == 503
        await c.close()
    await other.close()


async def test_malformed_requests_get_4xx(pki, echo):
    async with running(base_doc(pki, echo.port)) as gw:
        port = gw.listener_port("main")
        assert (await raw_exchange(port, b"GARBAGE\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (
            await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n")
        ).startswith(b"HTTP/1.1 400")
        huge = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
        assert (await raw_exchange(port, huge)).startswith(b"HTTP/1.1 431")
        assert (await raw_exchange(port, b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n")).startswith(
            b"HTTP/1.1 400"
        )


async def test_request_body_limit(pki, echo):
    doc = base_doc(pki, echo.port)
    doc["listeners"][0]["filter_chains"][0]["filters"][0]["max_request_body_bytes"] = 1000
    async with running(doc) as gw:
        port = gw.listener_port("main")
        c = await HttpClient.open(port)
        assert (await c.request("POST", "/", body=b"x" * 2000))[0] == 413
        await c.close()
        chunked = (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"200\r\n" + b"y" * 512 + b"\r\n" for _ in range(4))
            + b"0\r\n\r\n"
        )
        assert (await raw_exchange(port, chunked, read_timeout=0.5)).startswith(b"HTTP/1.1 413")


async def test_streaming_bodies_both_ways(pki, echo):
    size = 8 * 1024 * 1024
    async with running(base_doc(pki, echo.port)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"z" * 65536
        for _ in range(size // len(chunk)):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        body = await reader.readexactly(length)
        assert b'"body_bytes": %d' % size in body
        writer.write(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        received = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            n = int(line.strip(), 16)
            if n == 0:
                await reader.readuntil(b"\r\n")
                break
            received += len(await reader.readexactly(n + 2)) - 2
        assert received == size
        writer.close()


async def test_pipelining_slow_headers_and_request_ids(pki, echo):
    doc = base_doc(pki, echo.port)
    doc["listeners"][0]["filter_chains"][0]["filters"][0]["request_headers_timeout"] = 0.3
    async with running(doc) as gw:
        port = gw.listener_port("main")
        two = (
            b"GET /one HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n"
            b"GET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        answer = await raw_exchange(port, two)
        assert answer.count(b"HTTP/1.1 200") == 2
        assert answer.index(b'"path": "/one"') < answer.index(b'"path": "/two"')
        assert b'"x-request-id": "abc-123"' in answer
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")  # the rest of the head never comes
        assert (await asyncio.wait_for(reader.read(-1), 5)).startswith(b"HTTP/1.1 408")
        writer.close()


async def test_per_try_timeout_is_retried_then_answered_504(pki, echo):
    routes = [
        {
            "name": "r",
            "match": {"prefix": "/"},
            "route": {
                "cluster": "echo",
                "timeout": 10,
                "retry_policy": {"num_retries": 1, "retry_on": ["504"], "per_try_timeout": 0.2},
            },
        }
    ]
    async with running(base_doc(pki, echo.port, routes=routes)) as gw:
        c = await HttpClient.open(gw.listener_port("main"))
        assert (await c.request("GET", "/delay/1000"))[0] == 504  # both tries time out (the route would not)
        assert (await c.request("GET", "/fast"))[0] == 200
        await c.close()
        assert gw.stats.as_json()["smgate_upstream_retries_total{cluster=echo}"] == 1


async def test_access_log_line_per_request(pki, echo, tmp_path):
    path = tmp_path / "access.log"
    doc = base_doc(pki, echo.port, routes=ROUTES)
    doc["clusters"].append(
        {
            "name": "dead",
            "connect_timeout": 0.5,
            "endpoints": [{"address": "127.0.0.1", "port": free_port()}],
        }
    )
    doc["route_configs"][0]["virtual_hosts"][0]["routes"].insert(
        0, {"name": "down", "match": {"prefix": "/down"}, "route": {"cluster": "dead"}}
    )
    doc["logging"] = {
        "access_logs": [
            {
                "path": str(path),
                "format": "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %ROUTE_NAME% "
                "%UPSTREAM_CLUSTER% %UPSTREAM_HOST% %RESP(X-UPSTREAM)%",
            }
        ]
    }
    async with running(doc) as gw:
        c = await HttpClient.open(gw.listener_port("main"))
        assert (await c.request("GET", "/items/x"))[0] == 200
        assert (await c.request("GET", "/exact"))[0] == 200
        assert (await c.request("GET", "/down/x"))[0] == 503
        await c.close()
    lines = path.read_text().splitlines()
    assert lines[0] == f"GET /items/x 200 - default echo 127.0.0.1:{echo.port} a"
    assert lines[1] == "GET /exact 200 - exact - - -"
    assert lines[2].startswith("GET /down/x 503 UF down dead 127.0.0.1:")


async def _drip(port: int, at_once: bytes, dripped: bytes, interval: float = 0.05) -> bytes:
    """Send ``at_once``, then ``dripped`` one byte at a time; return what the gateway answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = bytearray()

    async def read() -> None:
        while chunk := await reader.read(4096):
            answer.extend(chunk)

    reading = asyncio.create_task(read())
    try:
        writer.write(at_once)
        for i in range(len(dripped)):
            if reading.done():
                break
            writer.write(dripped[i : i + 1])
            await writer.drain()
            await asyncio.sleep(interval)
        async with asyncio.timeout(5):
            await reading
    except (ConnectionError, TimeoutError):
        pass
    writer.close()
    return bytes(answer)


async def test_request_headers_timeout_is_a_total_not_per_byte(pki, echo):
    doc = base_doc(pki, echo.port)
    doc["listeners"][0]["filter_chains"][0]["filters"][0]["request_headers_timeout"] = 0.5
    async with running(doc) as gw:
        # 80 header bytes at 50 ms each: 4 s of head, every byte well inside the timeout of the last.
        head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 44 + b"\r\n\r\n"
        answer = await _drip(gw.listener_port("main"), b"", head)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:60]


async def test_request_timeout_bounds_a_dripped_body(pki, echo):
    doc = base_doc(pki, echo.port)
    doc["listeners"][0]["filter_chains"][0]["filters"][0]["request_timeout"] = 0.5
    async with running(doc) as gw:
        # The head at once, then 80 body bytes at 50 ms each.
        head = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 80\r\n\r\n"
        answer = await _drip(gw.listener_port("main"), head, b"b" * 80)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:60]


async def test_upstream_failures_answer_generic_bodies_and_audit_the_detail(pki, echo):
    from tests.gateway.helpers import RecordingAudit

    routes = [{"name": "down", "match": {"prefix": "/"}, "route": {"cluster": "dead"}}]
    doc = base_doc(pki, echo.port, routes=routes)
    dead_port = free_port()
    doc["clusters"].append(
        {"name": "dead", "connect_timeout": 0.5, "endpoints": [{"address": "127.0.0.1", "port": dead_port}]}
    )
    audit = RecordingAudit()
    async with running(doc, audit=audit) as gw:
        c = await HttpClient.open(gw.listener_port("main"))
        status, _, body = await c.request("GET", "/x")
        await c.close()
    assert status == 503
    assert body == b"upstream unavailable\n"
    assert str(dead_port).encode() not in body and b"Errno" not in body
    (record,) = audit.of("http.request")
    assert record["error"].startswith(f"upstream connect error: connect 127.0.0.1:{dead_port}")
    (failure,) = audit.of("upstream.fail")
    assert failure["upstream"] == f"127.0.0.1:{dead_port}" and "connect_failure" in failure["reason"]
