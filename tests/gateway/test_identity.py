"""PeerIdentity from a Python ssl server handshake: leaf, verified chain, fingerprints."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

from gateway.identity import PeerIdentity, identity_from_ssl
from tls.crypto import sm3


async def test_identity_carries_the_verified_client_chain(pki):
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(pki.server_rsa), str(pki.server_rsa_key))
    server_ctx.load_verify_locations(cafile=str(pki.ca))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    seen: asyncio.Future[PeerIdentity] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(identity_from_ssl(writer.get_extra_info("ssl_object"), "localhost", ("127.0.0.1", 1)))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca))
    client_ctx.load_cert_chain(str(pki.client), str(pki.client_key))
    _, writer = await asyncio.open_connection(
        "127.0.0.1", server.sockets[0].getsockname()[1], ssl=client_ctx, server_hostname="localhost"
    )
    identity = await asyncio.wait_for(seen, 5)
    writer.close()
    server.close()
    assert identity.protocol == "tls1.3" and identity.authenticated and identity.sni == "localhost"
    assert [c.subject for c in identity.peer_chain] == [
        "CN=client.test,O=smgate test",
        "CN=smgate test CA,O=smgate test",
    ]
    leaf = identity.peer
    assert leaf is not None and leaf.fingerprint_sha256 == pki.client_fingerprint
    assert leaf.fingerprint_sha256 == hashlib.sha256(leaf.der).hexdigest()
    assert leaf.fingerprint_sm3 == sm3(leaf.der).hex()
    assert leaf.san_dns == ("client.test",)
