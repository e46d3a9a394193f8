"""The frame-header scanner follows frame boundaries however the byte stream is split into reads."""

from __future__ import annotations

import itertools
import random

import pytest
from hyperframe.frame import DataFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame

from gateway.http2.flood import PREFACE, FloodDetected, FloodLimits, FrameScanner

NOW = 1000.0


def _frames(count: int, rng: random.Random) -> list[bytes]:
    frames: list[bytes] = []
    for i in range(count):
        stream = 1 + 2 * i
        headers = HeadersFrame(stream, data=b"h" * rng.randint(1, 40), flags=["END_HEADERS"])
        data = DataFrame(stream, data=b"d" * rng.randint(0, 20000), flags=["END_STREAM"])
        frames += [headers.serialize(), data.serialize(), RstStreamFrame(stream).serialize()]
        if i % 3 == 0:
            frames.append(PingFrame(0, opaque_data=b"12345678").serialize())
    return frames


def _feed(wire: bytes, cuts: list[int], limits: FloodLimits) -> str | None:
    """Feed ``wire`` to a scanner in pieces cut at ``cuts``; the flood reason it raised, if any."""
    scanner = FrameScanner(limits, client_preface=True)
    bounds = [0, *sorted(cuts), len(wire)]
    try:
        for start, end in itertools.pairwise(bounds):
            scanner.scan(wire[start:end], NOW)
    except FloodDetected as exc:
        return exc.reason
    return None


@pytest.mark.parametrize("seed", range(8))
def test_any_split_finds_the_same_flood_as_one_read(seed: int) -> None:
    rng = random.Random(seed)
    wire = PREFACE + SettingsFrame(0).serialize() + b"".join(_frames(60, rng))
    limits = FloodLimits(stream_resets_per_window=50)
    whole = _feed(wire, [], limits)
    assert whole == "rapid_reset"
    # cuts inside the preface, inside frame headers (one byte at a time too) and inside payloads
    cuts = rng.sample(range(1, len(wire)), 200) + list(range(30, 45))
    assert _feed(wire, cuts, limits) == whole


def test_below_the_limit_nothing_is_raised_whatever_the_split() -> None:
    rng = random.Random(99)
    wire = PREFACE + b"".join(_frames(20, rng))
    for _ in range(20):
        cuts = rng.sample(range(1, len(wire)), 50)
        assert _feed(wire, cuts, FloodLimits()) is None


def test_a_ping_flood_split_byte_by_byte() -> None:
    wire = PREFACE + PingFrame(0, opaque_data=b"12345678").serialize() * 5
    assert _feed(wire, list(range(1, len(wire))), FloodLimits(pings_per_window=4)) == "ping_flood"
    assert _feed(wire, list(range(1, len(wire))), FloodLimits(pings_per_window=5)) is None
