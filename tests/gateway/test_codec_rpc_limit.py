"""The worked RPC codec honours the body limit the HTTP connection manager now passes every codec."""

from __future__ import annotations

import pytest

from examples.rpc_codec import RpcCodecFactory, encode_frame
from gateway.codec.base import Body, CodecProtocolError, RequestHead


def test_a_frame_whose_body_exceeds_the_limit_is_refused_from_its_length() -> None:
    call = encode_frame({"service": "billing", "method": "Charge"}, b"x" * 20)
    within = RpcCodecFactory().server_codec(1024, max_body_bytes=20)
    within.receive_data(call)
    assert isinstance(within.next_event(), RequestHead)
    assert within.next_event() == Body(b"x" * 20)
    beyond = RpcCodecFactory().server_codec(1024, max_body_bytes=19)
    beyond.receive_data(call[:6])  # the lengths alone: refused before the body arrives
    with pytest.raises(CodecProtocolError) as refused:
        beyond.next_event()
    assert refused.value.status == 413
