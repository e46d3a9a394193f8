"""Fuzzing: mutated records and handshake messages never raise out of the core and never leave it stuck.

Each mutated input is fed to a fresh endpoint; it may complete, wait for more
data or fail with an alert, but it may not raise.  Junk is then appended: an
endpoint that has not finished must end in a fatal alert (no stuck state).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tls.tlcp import AlertReceived, AlertSent, ClientAuth, ConnectionClosed, TLCPConnection

from .recordings import Record, all_recordings, handshake_messages
from .test_connection import client_config, server_config
from .test_replay import ReplayRandom

RECORDINGS = [r for r in all_recordings() if not r.name.endswith(("-long", "-1600B"))]
JUNK = b"\x17\x01\x01\x40\x00" + bytes(0x4000) + b"\xff" * 64


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, value in edits:
        if not buffer:
            break
        index = position % len(buffer)
        if kind == 0:
            buffer[index] ^= value or 1
        elif kind == 1:
            del buffer[index : index + 1 + value % 8]
        elif kind == 2:
            buffer[index:index] = bytes((value,)) * (1 + value % 5)
        else:
            del buffer[index:]
    return bytes(buffer)


edits = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6
)


def finish(connection: TLCPConnection, events: list[Any]) -> None:
    """After hostile input the endpoint is closed, complete, or closes on junk; never an internal error."""
    assert not [e for e in events if isinstance(e, AlertSent) and e.name == "internal_error"], events
    if connection.closed:
        assert any(isinstance(e, (AlertSent, AlertReceived, ConnectionClosed)) for e in events)
        return
    more = connection.receive_data(JUNK)
    assert connection.closed
    assert any(isinstance(e, AlertSent) for e in more)


def server_for(recording: Any) -> TLCPConnection:
    return TLCPConnection(
        server_config(
            cipher_suites=[recording.suite],
            certificate_set=recording.server_certificate_set,
            trust_store=recording.trust_store,
            client_auth=ClientAuth.OPTIONAL,
        )
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recording=st.sampled_from(RECORDINGS), edits=edits, chunk=st.integers(1, 600))
def test_mutated_client_stream_into_server(
    recording: Any, edits: list[tuple[int, int, int]], chunk: int
) -> None:
    data = mutate(recording.client_to_server, edits)
    server = server_for(recording)
    events: list[Any] = []
    for start in range(0, len(data), chunk):
        events.extend(server.receive_data(data[start : start + chunk]))
    finish(server, events)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recording=st.sampled_from(RECORDINGS),
    index=st.integers(0, 10),
    edits=edits,
    record_size=st.integers(1, 300),
)
def test_mutated_handshake_message_into_server(
    recording: Any, index: int, edits: list[tuple[int, int, int]], record_size: int
) -> None:
    """Mutate one plaintext handshake message body, keep its header length consistent, re-frame."""
    messages = handshake_messages(recording.client_records)
    target = index % len(messages)
    body = mutate(messages[target][4:], edits)
    messages[target] = messages[target][:1] + len(body).to_bytes(3, "big") + body
    stream = b"".join(messages)
    wire = b"".join(Record(22, stream[i : i + record_size]).wire for i in range(0, len(stream), record_size))
    server = server_for(recording)
    events = server.receive_data(wire)
    finish(server, events)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recording=st.sampled_from(RECORDINGS), edits=edits)
def test_mutated_server_stream_into_client(recording: Any, edits: list[tuple[int, int, int]]) -> None:
    client = TLCPConnection(
        client_config(
            cipher_suites=[recording.suite],
            certificate_set=recording.client_certificate_set,
            trust_store=recording.trust_store,
            server_name=None,
            random=ReplayRandom({32: [recording.client_random]}),
        )
    )
    client.start_handshake()
    events = client.receive_data(mutate(recording.server_to_client, edits))
    finish(client, events)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2000))
def test_random_bytes_into_server(data: bytes) -> None:
    server = server_for(RECORDINGS[0])
    events = server.receive_data(data)
    finish(server, events)
