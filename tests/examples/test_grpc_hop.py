"""examples/grpc-hop-{outbound,inbound}.yaml: a grpcio client -> h2c -> sidecar -> TLCP, ALPN h2 ->
gateway -> h2c -> a grpcio server, unary and server streaming, as shipped."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.examples.conftest import check_clean, localized, place
from tests.gateway.process import serve
from tests.ports import free_ports


def _charge(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"charged:" + request


def _watch(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(int(request)):
        yield f"event-{i}".encode()


@pytest.fixture
def payments_grpc() -> Iterator[int]:
    """A grpcio server for bank.Payments (raw bytes, no stubs) on a free port below 32768."""
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    handlers = {
        "Charge": grpc.unary_unary_rpc_method_handler(_charge),
        "Watch": grpc.unary_stream_rpc_method_handler(_watch),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bank.Payments", handlers),))
    (port,) = free_ports(1)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def test_grpc_crosses_the_tlcp_hop(example_pki, payments_grpc, tmp_path):
    inbound_config = place("grpc-hop-inbound.yaml", tmp_path, example_pki)
    outbound_config = place("grpc-hop-outbound.yaml", tmp_path, example_pki)
    check_clean(inbound_config)
    check_clean(outbound_config)
    inbound_port, outbound_port = free_ports(2)
    inbound = serve(localized(inbound_config, {"inbound": inbound_port}, {"payments-grpc": [payments_grpc]}))
    try:
        outbound = serve(
            localized(outbound_config, {"outbound": outbound_port}, {"payments": [inbound_port]})
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{outbound_port}") as channel:
                charge = channel.unary_unary("/bank.Payments/Charge")
                assert charge(b"42", timeout=10) == b"charged:42"
                watch = channel.unary_stream("/bank.Payments/Watch")
                assert list(watch(b"5", timeout=10)) == [f"event-{i}".encode() for i in range(5)]
                with pytest.raises(grpc.RpcError) as unrouted:
                    channel.unary_unary("/bank.Refunds/Make")(b"", timeout=10)
                assert unrouted.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            assert outbound.stop() == 0, outbound.output()
    finally:
        assert inbound.stop() == 0, inbound.output()
