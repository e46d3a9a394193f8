"""Per-request cost of the HTTP/1.1 codecs: the llhttp default beside the h11 reference, in one run.

Usage: ``.venv/bin/python bench/codec.py [--requests 2000] [--samples 15]`` (a few seconds).

No sockets, no event loop: one keep-alive exchange as the proxy makes it, in memory, over and over.
The downstream side parses a typical browser GET and writes the upstream's response back (status line,
five fields, a 20-byte body); the upstream side writes the forwarded request and parses that response.
Each side runs through the codec's public calls in the order the HTTP connection manager and the
router use them (``receive_data``, ``next_event`` until ``NEED_DATA``, ``encode_*``, ``keep_alive``,
``start_next_cycle``).

Time is CPU time of this thread. The machine is shared, so the codecs are measured interleaved, batch
by batch, and each figure is the median of the samples; ratios compare medians taken side by side.
Beside them, the floor: httptools alone feeding the same bytes to callbacks that do nothing.

Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httptools  # noqa: E402

from gateway.codec.base import NEED_DATA, CodecFactory, RequestHead, ResponseHead  # noqa: E402
from gateway.codec.http1 import Http1CodecFactory  # noqa: E402
from gateway.codec.http1_h11 import H11CodecFactory  # noqa: E402

REQUEST = (
    b"GET /api/v1/items?id=42 HTTP/1.1\r\n"
    b"Host: api.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Mon, 06 May 2024 10:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 20\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
    b'{"id":42,"ok":true}\n'
)


def downstream_exchange(factory: CodecFactory) -> Callable[[], None]:
    """One request in, one response out, on a kept-alive downstream connection."""
    codec = factory.server_codec(65536, 16 * 1024 * 1024)
    response = ResponseHead(
        200,
        (
            ("server", "nginx/1.22.1"),
            ("date", "Mon, 06 May 2024 10:00:00 GMT"),
            ("content-type", "application/json"),
            ("content-length", "20"),
            ("x-gateway", "smgate"),
        ),
        "OK",
    )
    body = b'{"id":42,"ok":true}\n'

    def exchange() -> None:
        codec.receive_data(REQUEST)
        while codec.next_event() is not NEED_DATA:
            pass
        codec.encode_response_head(response) + codec.encode_body(body) + codec.encode_end()
        if codec.keep_alive():
            codec.start_next_cycle()

    return exchange


def upstream_exchange(factory: CodecFactory) -> Callable[[], None]:
    """One request out, one response in, on a pooled upstream connection."""
    codec = factory.client_codec()
    head = RequestHead(
        "GET",
        "api.internal",
        "/api/v1/items?id=42",
        (
            ("host", "api.example.com"),
            ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"),
            ("accept", "application/json, text/plain, */*"),
            ("accept-encoding", "gzip, deflate, br"),
            ("accept-language", "en-US,en;q=0.9"),
            ("x-forwarded-for", "192.0.2.7"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "c0ffee-1"),
        ),
        0,
    )

    def exchange() -> None:
        codec.encode_request_head(head) + codec.encode_end()
        codec.receive_data(RESPONSE)
        while codec.next_event() is not NEED_DATA:
            pass
        if codec.reusable():
            codec.start_next_cycle()

    return exchange


class _Ignore:
    def on_url(self, url: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_message_complete(self) -> None: ...
    def on_status(self, status: bytes) -> None: ...
    def on_body(self, body: bytes) -> None: ...


def parser_floor() -> Callable[[], None]:
    """httptools alone: both messages through llhttp into callbacks that do nothing."""
    request_parser = httptools.HttpRequestParser(_Ignore())
    response_parser = httptools.HttpResponseParser(_Ignore())

    def exchange() -> None:
        request_parser.feed_data(REQUEST)
        response_parser.feed_data(RESPONSE)

    return exchange


def per_request_us(run: Callable[[], None], requests: int) -> float:
    start = time.thread_time_ns()
    for _ in range(requests):
        run()
    return (time.thread_time_ns() - start) / requests / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per sample")
    parser.add_argument("--samples", type=int, default=15)
    args = parser.parse_args()

    codecs = {"h11 (reference)": H11CodecFactory(), "llhttp (default)": Http1CodecFactory()}
    cases: dict[tuple[str, str], Callable[[], None]] = {}
    for name, factory in codecs.items():
        cases[(name, "downstream")] = downstream_exchange(factory)
        cases[(name, "upstream")] = upstream_exchange(factory)
    cases[("httptools alone", "parse only")] = parser_floor()
    for run in cases.values():
        per_request_us(run, 200)  # warm up
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
    for _ in range(args.samples):
        for key, run in cases.items():
            samples[key].append(per_request_us(run, args.requests))
    median = {key: statistics.median(values) for key, values in samples.items()}

    print(f"HTTP/1.1 codec CPU per proxied request, µs (median of {args.samples} x {args.requests})")
    print(f"  request {len(REQUEST)} B, 6 fields; response {len(RESPONSE)} B, 5 fields, 20-byte body\n")
    print(f"  {'':18} {'downstream':>11} {'upstream':>9} {'total':>7}")
    totals = {}
    for name in codecs:
        down, up = median[(name, "downstream")], median[(name, "upstream")]
        totals[name] = down + up
        print(f"  {name:18} {down:11.2f} {up:9.2f} {totals[name]:7.2f}")
    floor = median[("httptools alone", "parse only")]
    print(f"  {'httptools alone':18} {'':11} {'':9} {floor:7.2f}   (both messages parsed, callbacks empty)")
    h11_total, llhttp_total = totals["h11 (reference)"], totals["llhttp (default)"]
    print(
        f"\n  h11 / llhttp: {h11_total / llhttp_total:.1f}x   llhttp codec / httptools alone: {llhttp_total / floor:.1f}x"
    )


if __name__ == "__main__":
    main()
