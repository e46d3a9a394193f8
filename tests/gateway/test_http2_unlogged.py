"""UnloggedH2Connection receives frames exactly as h2's H2Connection does (events, bytes answered,
errors raised), stream-error paths included: only h2's per-frame trace line is gone."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.exceptions
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame, WindowUpdateFrame

from gateway.http2.unlogged import UnloggedH2Connection

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/p")]


def client_bytes(frames: list) -> bytes:
    """A client's preface and SETTINGS, then ``frames`` (header blocks encoded by a real client)."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    out = client.data_to_send()
    for frame in frames:
        if isinstance(frame, HeadersFrame):
            frame.data = client.encoder.encode(REQUEST)
        out += frame.serialize()
    return out


def outcome(cls: type[h2.connection.H2Connection], data: bytes) -> tuple[list[str], bytes, str | None]:
    server = cls(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    server.data_to_send()
    events: list[str] = []
    error = None
    try:
        events = [repr(e) for e in server.receive_data(data)]
    except h2.exceptions.ProtocolError as exc:
        error = f"{type(exc).__name__}:{getattr(exc, 'error_code', None)}"
    return events, server.data_to_send(), error


def headers(stream_id: int, end_stream: bool) -> HeadersFrame:
    return HeadersFrame(stream_id, flags=["END_HEADERS", *(["END_STREAM"] if end_stream else [])])


def rst(stream_id: int) -> RstStreamFrame:
    frame = RstStreamFrame(stream_id)
    frame.error_code = ErrorCodes.CANCEL
    return frame


def window_update(stream_id: int) -> WindowUpdateFrame:
    frame = WindowUpdateFrame(stream_id)
    frame.window_increment = 1000
    return frame


SEQUENCES = {
    "request and window updates": [
        headers(1, False),
        window_update(0),
        DataFrame(1, b"x", flags=["END_STREAM"]),
    ],
    "data after the client's reset (stream error)": [headers(1, False), rst(1), DataFrame(1, b"late")],
    "data after the client's END_STREAM (STREAM_CLOSED)": [headers(1, True), DataFrame(1, b"late")],
    "a stream id going backwards (connection error)": [headers(3, False), headers(1, False)],
    "data on a reset stream after a newer one opened": [
        headers(1, False),
        rst(1),
        headers(3, False),
        DataFrame(1, b"x"),
    ],
}


@pytest.mark.parametrize("frames", SEQUENCES.values(), ids=SEQUENCES.keys())
def test_receives_as_h2_does(frames: list) -> None:
    data = client_bytes(frames)
    expected = outcome(h2.connection.H2Connection, data)
    assert outcome(UnloggedH2Connection, data) == expected
    assert expected[0] or expected[2]  # the sequence did something
