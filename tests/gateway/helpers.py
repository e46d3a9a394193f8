"""Config documents and small clients shared by the gateway tests."""

from __future__ import annotations

import asyncio
import json
import ssl
from contextlib import asynccontextmanager
from pathlib import Path

import h11

from gateway.auditing import NullAudit
from gateway.config import parse_config
from gateway.server import Gateway
from tests.gateway.pki import TestPKI


def base_doc(
    pki: TestPKI,
    upstream_port: int,
    *,
    protocols=("tls1.3", "tls1.2", "plain"),
    client_auth="none",
    routes=None,
    cluster_extra=None,
    listener_port=0,
) -> dict:
    routes = routes or [{"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "echo"}}]
    return {
        "listeners": [
            {
                "name": "main",
                "address": "127.0.0.1",
                "port": listener_port,
                "handshake_timeout": 2.0,
                "tls": {
                    "protocols": list(protocols),
                    "client_auth": client_auth,
                    "trust_anchors": str(pki.ca),
                    "certificates": [
                        {
                            "name": "default",
                            "tls_certificates": [
                                {"cert_chain": str(pki.server_rsa), "private_key": str(pki.server_rsa_key)},
                                {
                                    "cert_chain": str(pki.server_ecdsa),
                                    "private_key": str(pki.server_ecdsa_key),
                                },
                            ],
                        },
                        {
                            "name": "other",
                            "server_names": ["other.test"],
                            "tls_certificates": [
                                {"cert_chain": str(pki.other), "private_key": str(pki.other_key)}
                            ],
                        },
                    ],
                },
                "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "main"}]}],
            }
        ],
        "route_configs": [
            {"name": "main", "virtual_hosts": [{"name": "any", "domains": ["*"], "routes": routes}]}
        ],
        "clusters": [
            {
                "name": "echo",
                "connect_timeout": 1.0,
                "endpoints": [{"address": "127.0.0.1", "port": upstream_port}],
                **(cluster_extra or {}),
            }
        ],
        "admin": {"port": 0},
    }


def demo_certificate_set(demo, *, tls_certificates: bool = False) -> dict:
    """The demo PKI's server certificate set: the SM2 sign/enc pair and chain (TLCP, TLS 1.3-SM), and
    with ``tls_certificates`` the RSA server certificate for standard TLS on the same listener."""
    certificate: dict = {
        "name": "default",
        "sign_cert": str(demo.sm2.server_sign.cert),
        "sign_key": str(demo.sm2.server_sign.key),
        "enc_cert": str(demo.sm2.server_enc.cert),
        "enc_key": str(demo.sm2.server_enc.key),
        "chain": str(demo.sm2.chain),
    }
    if tls_certificates:
        certificate["tls_certificates"] = [
            {"cert_chain": str(demo.rsa.server.cert), "private_key": str(demo.rsa.server.key)}
        ]
    return certificate


class RecordingAudit(NullAudit):
    """An audit handle that keeps every event (type and fields) for assertions."""

    enabled = True

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict] = []

    def emit(self, event_type: str, **fields: object) -> None:
        super().emit(event_type, **fields)
        self.records.append({"event": str(event_type), **fields})

    def of(self, event_type: str) -> list[dict]:
        return [r for r in self.records if r["event"] == event_type]


@asynccontextmanager
async def running(doc: dict, base_dir: Path | None = None, audit: NullAudit | None = None):
    gateway = Gateway(parse_config(doc, base_dir or Path.cwd()), audit=audit)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


def client_context(
    pki: TestPKI, *, version: str | None = None, cert: bool = False, rogue: bool = False
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert:
        ctx.load_cert_chain(str(pki.client), str(pki.client_key))
    if rogue:
        ctx.load_cert_chain(str(pki.rogue_client), str(pki.rogue_client_key))
    return ctx


class HttpClient:
    """A keep-alive HTTP/1.1 client over one connection (plain or TLS)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int, ssl_ctx: ssl.SSLContext | None = None, server_hostname: str | None = None):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=ssl_ctx,
            server_hostname=(server_hostname or "localhost") if ssl_ctx else None,
        )
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"", headers=(), host: str = "localhost"):
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        hdrs = [("host", host), *headers]
        if body:
            hdrs.append(("content-length", str(len(body))))
        self.writer.write(self.conn.send(h11.Request(method=method, target=path, headers=hdrs)))
        if body:
            self.writer.write(self.conn.send(h11.Data(data=body)))
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        status, resp_headers, data = 0, {}, bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                resp_headers = {k.decode(): v.decode() for k, v in event.headers.raw_items()}
            elif isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, resp_headers, bytes(data)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed")

    def json(self, body: bytes) -> dict:
        return json.loads(body)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except Exception:
            pass


async def raw_exchange(port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = bytearray()
    try:
        async with asyncio.timeout(read_timeout):
            while chunk := await reader.read(65536):
                out += chunk
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return bytes(out)
