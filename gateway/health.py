"""Active health checking (Envoy's ``HealthChecker``): TCP connect, HTTP GET, a TLS/TLCP handshake, or
gRPC's grpc.health.v1 ``Check`` (SERVING with ``grpc-status: 0``) over the cluster's HTTP/2 transport.

One task per cluster probes every host each ``interval``; ``unhealthy_threshold`` consecutive failures
mark a host unhealthy, ``healthy_threshold`` successes bring it back. ``tls``/``tlcp`` checks open a
connection with the cluster's own transport socket, so a completed handshake is the success criterion.
"""

from __future__ import annotations

import asyncio
import contextlib

import h11

from gateway import grpc
from gateway.cluster import Cluster, Host
from gateway.codec.base import RequestHead
from gateway.config import HealthCheck
from gateway.http2.connection import H2ClientConnection, H2ConnectionError
from gateway.http2.events import (
    BodyReceived,
    ConnectionEnded,
    ResponseStarted,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from gateway.stream import ByteStream, close_stream
from gateway.transports.base import UpstreamConnectError
from gateway.transports.plain import PlainConnector


class HealthChecker:
    def __init__(self, cluster: Cluster, config: HealthCheck) -> None:
        self.cluster = cluster
        self.config = config
        self._successes: dict[int, int] = {}
        self._failures: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"health:{self.cluster.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.gather(*(self._check_host(h) for h in self.cluster.hosts))
            await asyncio.sleep(self.config.interval)

    async def _check_host(self, host: Host) -> None:
        try:
            async with asyncio.timeout(self.config.timeout):
                ok = await self.probe(host)
        except (TimeoutError, OSError, UpstreamConnectError, h11.ProtocolError, H2ConnectionError):
            ok = False
        key = id(host)
        if ok:
            self._failures[key] = 0
            self._successes[key] = self._successes.get(key, 0) + 1
            if not host.healthy and self._successes[key] >= self.config.healthy_threshold:
                self.cluster.set_health(host, True)
        else:
            self._successes[key] = 0
            self._failures[key] = self._failures.get(key, 0) + 1
            if host.healthy and self._failures[key] >= self.config.unhealthy_threshold:
                self.cluster.set_health(host, False)

    async def probe(self, host: Host) -> bool:
        address, port = host.endpoint.address, host.endpoint.port
        connector = PlainConnector() if self.config.type == "tcp" else self.cluster.connector
        preamble = self.cluster.proxy_header(None)
        stream = await connector.connect(address, port, self.config.timeout, preamble=preamble)
        try:
            if self.config.type == "http":
                return await self._http_probe(stream, host)
            if self.config.type == "grpc":
                return await self._grpc_probe(stream, host)
            return True
        finally:
            await close_stream(stream, 0.5)

    async def _http_probe(self, stream: ByteStream, host: Host) -> bool:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=self.config.path,
            headers=[
                ("host", host.endpoint.address),
                ("user-agent", "smgate-health"),
                ("connection", "close"),
            ],
        )
        stream.write((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        await stream.drain()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.read(65536))
                continue
            if isinstance(event, h11.Response):
                return event.status_code in self.config.expected_statuses
            if isinstance(event, h11.ConnectionClosed):
                return False

    async def _grpc_probe(self, stream: ByteStream, host: Host) -> bool:
        """grpc.health.v1.Health/Check: SERVING in the reply and ``grpc-status: 0``."""
        h2 = H2ClientConnection()
        scheme = "http" if self.cluster.config.transport_socket.type == "plain" else "https"
        head = RequestHead(
            "POST",
            host.endpoint.address,
            grpc.HEALTH_CHECK_PATH,
            (("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "smgate-health")),
            None,
        )
        stream_id = h2.send_request(head, scheme)
        h2.send_data(stream_id, grpc.health_check_request(self.config.service_name), end_stream=True)
        stream.write(h2.data_to_send())
        body = bytearray()
        status: str | None = None
        loop = asyncio.get_running_loop()
        while True:
            data = await stream.read(65536)
            if not data:
                return False
            for event in h2.receive_data(data, loop.time()):
                if isinstance(event, ResponseStarted):
                    status = event.head.header("grpc-status") or status
                elif isinstance(event, BodyReceived):
                    body += event.data
                    h2.consumed(stream_id, event.flow_controlled_length)
                elif isinstance(event, TrailersReceived):
                    status = dict(event.headers).get("grpc-status", status)
                elif isinstance(event, (StreamReset, ConnectionEnded)):
                    return False
                elif isinstance(event, StreamEnded):
                    return status == "0" and grpc.health_check_serving(bytes(body))
            stream.write(h2.data_to_send())
