"""HTTP/1.1 codec behaviour the gateway relies on (issue 11, point 3), on both codecs and end to end.

Request smuggling shapes and bad chunk lines get an answer, not a silent close; a chunk that would
take the body past ``max_request_body_bytes`` gets 413 as soon as its size is read; the gateway's
own responses carry a reason phrase.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.codec.base import NEED_DATA, Body, CodecFactory, CodecProtocolError, RequestHead
from gateway.echo import EchoService
from tests.gateway.codec_harness import H11, LLHTTP, server_transcript
from tests.gateway.helpers import base_doc, raw_exchange, running

CODECS = pytest.mark.parametrize("factory", [LLHTTP, H11], ids=["llhttp", "h11"])

SMUGGLING = {
    "content-length first": b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    "transfer-encoding first": b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
    b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
}
CHUNKED_HEAD = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
BAD_CHUNKS = {
    "zz": b"zz\r\nhello\r\n0\r\n\r\n",
    "-1": b"-1\r\nhello\r\n0\r\n\r\n",
    "0x5": b"0x5\r\nhello\r\n0\r\n\r\n",
    "data without CRLF": b"5\r\nhelloXX0\r\n\r\n",
    "size without CRLF": b"5hello\r\n0\r\n\r\n",
}


@CODECS
@pytest.mark.parametrize("stream", SMUGGLING.values(), ids=SMUGGLING)
def test_content_length_with_transfer_encoding_is_refused(factory: CodecFactory, stream: bytes) -> None:
    """RFC 9112 §6.1: such a request may be a smuggling attempt; the codec refuses it with 400."""
    assert server_transcript(factory, [stream])[0] == ("refused", 400)


@CODECS
@pytest.mark.parametrize("chunk", BAD_CHUNKS.values(), ids=BAD_CHUNKS)
def test_invalid_chunk_lines_are_refused(factory: CodecFactory, chunk: bytes) -> None:
    log = server_transcript(factory, [CHUNKED_HEAD + chunk])
    assert log[0][0] == "head"
    assert ("refused", 400) in log


def _read(
    codec_factory: CodecFactory, fragments: list[bytes], max_body_bytes: int
) -> tuple[bytes, int | None]:
    """Feed ``fragments`` (the peer then waits, it does not close); the body read and any refusal."""
    codec = codec_factory.server_codec(4096, max_body_bytes)
    body = b""
    try:
        for data in fragments:
            codec.receive_data(data)
            while (event := codec.next_event()) is not NEED_DATA:
                if isinstance(event, Body):
                    body += event.data
                else:
                    assert isinstance(event, RequestHead)
    except CodecProtocolError as exc:
        return body, exc.status
    return body, None


@CODECS
def test_a_chunk_beyond_the_body_limit_is_refused_before_its_data(factory: CodecFactory) -> None:
    first = b"3\r\nabc\r\n"
    oversized = b"100000;x=y\r\n"  # 1 MiB, with the limit at 1000 bytes
    stream = CHUNKED_HEAD + first + oversized + b"x" * 20
    for cut in range(len(CHUNKED_HEAD), len(stream)):
        assert _read(factory, [stream[:cut], stream[cut:]], 1000) == (b"abc", 413), cut
    assert _read(factory, [CHUNKED_HEAD + first + oversized], 1000) == (b"abc", 413)
    # Within the limit, chunk by chunk, nothing is refused; past it, the chunk that crosses is.
    assert _read(factory, [CHUNKED_HEAD + b"3e8\r\n" + b"y" * 1000 + b"\r\n"], 1000) == (b"y" * 1000, None)
    assert _read(factory, [CHUNKED_HEAD + first + b"3e6\r\n" + b"y" * 900], 1000) == (b"abc", 413)


@CODECS
def test_replies_of_the_gateway_carry_the_reason_phrase(factory: CodecFactory) -> None:
    codec = factory.server_codec(4096)
    codec.receive_data(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert isinstance(codec.next_event(), RequestHead)
    assert codec.encode_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert codec.local_reply(200, b"ok\n").startswith(b"HTTP/1.1 200 OK\r\n")
    refusal = factory.server_codec(4096)
    refusal.receive_data(b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n")
    with pytest.raises(CodecProtocolError) as refused:
        refusal.next_event()
    assert refusal.local_reply(refused.value.status, b"no\n").startswith(b"HTTP/1.1 400 Bad Request\r\n")


@CODECS
def test_a_refused_head_request_is_answered_without_a_body(factory: CodecFactory) -> None:
    """The refusal answers the HEAD request it refuses (h11's rule): no body follows the head."""
    codec = factory.server_codec(4096)
    codec.receive_data(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(codec.next_event(), RequestHead)
    codec.next_event()
    assert codec.local_reply(200, b"hello\n").endswith(b"\r\n\r\n")
    codec.start_next_cycle()
    with pytest.raises(CodecProtocolError) as refused:
        codec.next_event()
    reply = codec.local_reply(refused.value.status, b"refused\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n") and reply.endswith(b"refused\n")


# -- through the gateway ---------------------------------------------------------------------------


@pytest.fixture
async def echo():
    service = await EchoService(name="a").start()
    yield service
    await service.close()


def _doc(pki, echo_port: int) -> dict:
    routes = [
        {"name": "hello", "match": {"path": "/hello"}, "direct_response": {"status": 200, "body": "hi\n"}},
        {"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "echo", "timeout": 60}},
    ]
    doc = base_doc(pki, echo_port, routes=routes)
    doc["listeners"][0]["filter_chains"][0]["filters"][0]["max_request_body_bytes"] = 1000
    return doc


async def test_the_gateway_refuses_content_length_with_transfer_encoding(pki, echo) -> None:
    async with running(_doc(pki, echo.port)) as gw:
        port = gw.listener_port("main")
        for stream in SMUGGLING.values():
            assert (await raw_exchange(port, stream)).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert echo.requests == 0


async def test_the_gateway_answers_bad_chunk_lines(pki, echo) -> None:
    """The request is under way (its head went upstream) when the bad chunk line arrives: the
    request still gets its 400 rather than a closed connection."""
    async with running(_doc(pki, echo.port)) as gw:
        port = gw.listener_port("main")
        for chunk in BAD_CHUNKS.values():
            answer = await raw_exchange(port, CHUNKED_HEAD + chunk)
            assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (chunk, answer)


async def test_the_gateway_refuses_an_oversized_chunk_at_once(pki, echo) -> None:
    """The route allows 60 s; the answer comes when the chunk size is read, not when that runs out."""
    async with running(_doc(pki, echo.port)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        writer.write(CHUNKED_HEAD + b"3\r\nabc\r\nfffff\r\n" + b"x" * 100)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert head.startswith(b"HTTP/1.1 413 ")
        writer.close()


async def test_direct_responses_carry_the_reason_phrase(pki, echo) -> None:
    async with running(_doc(pki, echo.port)) as gw:
        answer = await raw_exchange(
            gw.listener_port("main"), b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n", read_timeout=1
        )
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


# -- bounds and selection -----------------------------------------------------------------------------


@CODECS
@pytest.mark.parametrize(
    "start",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Drip: ",  # a field value that never ends
        CHUNKED_HEAD + b"5;ext=",  # a chunk extension that never ends
        CHUNKED_HEAD + b"0\r\nTrailer: ",  # a trailer that never ends
    ],
    ids=["field value", "chunk extension", "trailer"],
)
def test_bytes_held_without_progress_are_bounded(factory: CodecFactory, start: bytes) -> None:
    """llhttp holds no limit of its own; like h11 the codec answers 431 past max_header_bytes."""
    drip = [start] + [b"a" * 100] * 30
    log = server_transcript(factory, drip, max_header_bytes=1024)
    assert ("refused", 431) in log


def test_pipelined_upgrade_requests_are_plain_requests() -> None:
    """llhttp pauses after each Upgrade request; the codec goes on with the next one, as h11 does."""
    upgrade = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    stream = [upgrade * 20]
    log = server_transcript(LLHTTP, stream)
    assert log == server_transcript(H11, stream)
    assert sum(entry[0] == "head" for entry in log) == 20


def test_the_default_http1_codec_is_llhttp_and_h11_is_selectable() -> None:
    from gateway.codec.http1 import Http1CodecFactory
    from gateway.codec.http1_h11 import H11CodecFactory
    from gateway.runtime import load_codec_factory

    assert isinstance(load_codec_factory("http1"), Http1CodecFactory)
    assert isinstance(load_codec_factory("gateway.codec.http1_h11:H11CodecFactory"), H11CodecFactory)
