"""examples/rpc-codec.yaml: the private RPC codec served by `smgate serve` over TLS 1.3, with the
refund route open only to an operator's client certificate; examples/README.md shows this very file."""

from __future__ import annotations

import asyncio
import json
import re
import ssl

from examples.rpc_codec import rpc_call, start_rpc_echo_server
from tests.examples.conftest import EXAMPLES, check_clean, localized, place
from tests.gateway.process import serve
from tests.ports import free_ports


async def call(port: int, ctx: ssl.SSLContext, method: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    try:
        status, _headers, body = await rpc_call(reader, writer, "billing", method, b"{}")
    finally:
        writer.close()
    return status, body


async def test_rpc_codec_example_routes_services_and_methods(example_pki, tmp_path):
    config = place("rpc-codec.yaml", tmp_path, example_pki)
    check_clean(config)
    gateway_port, first_port, second_port = free_ports(3)
    backends = [
        await start_rpc_echo_server("billing-1", port=first_port),
        await start_rpc_echo_server("billing-2", port=second_port),
    ]
    local = localized(config, {"rpc": gateway_port}, {"billing": [first_port, second_port]})
    gateway = await asyncio.to_thread(serve, local)
    try:
        anonymous = ssl.create_default_context(cafile=str(example_pki / "tls_root.pem"))
        anonymous.minimum_version = ssl.TLSVersion.TLSv1_3
        status, body = await call(gateway_port, anonymous, "Charge")
        assert status == 200
        reply = json.loads(body)
        assert reply["service"] == "billing" and reply["method"] == "Charge"
        assert reply["backend"] in ("billing-1", "billing-2")
        status, _ = await call(gateway_port, anonymous, "Refund")
        assert status == 403
        operator = ssl.create_default_context(cafile=str(example_pki / "tls_root.pem"))
        operator.load_cert_chain(example_pki / "ops_client.pem", example_pki / "ops_client.key")
        status, body = await call(gateway_port, operator, "Refund")
        assert status == 200 and json.loads(body)["method"] == "Refund"
    finally:
        assert await asyncio.to_thread(gateway.stop) == 0, gateway.output()
        for backend in backends:
            backend.close()


def test_examples_readme_shows_the_rpc_config_that_is_tested():
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    assert (EXAMPLES / "rpc-codec.yaml").read_text(encoding="utf-8") in blocks
