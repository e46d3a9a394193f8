"""Fuzz-style hostile input: truncated, oversized, mutated and mis-ordered bytes never raise and never hang.

Each mutated input goes to a fresh endpoint; it may complete, wait for more data or fail with an
alert, but it may not raise.  Junk is then appended: an endpoint that has not finished must end in a
fatal alert (nothing can leave it stuck), and no input may produce internal_error.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tls.tls13 import (
    AlertReceived,
    AlertSent,
    CipherSuite,
    ClientAuth,
    ConnectionClosed,
    SessionTicketKeys,
    TLS13Connection,
)

from .conftest import SeededRandom, client_config, client_credential, pump, server_config
from .record_babassl import RECORDING_TIME, SEED
from .recordings import recordings

REPLAYS = recordings("smgate-client-")
JUNK = b"\x17\x03\x03\x40\x11" + bytes(0x4011) + b"\xff" * 64


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


def finish(connection: TLS13Connection, events: list[Any]) -> None:
    assert not [
        event for event in events if isinstance(event, AlertSent) and event.name == "internal_error"
    ], events
    if connection.closed:
        assert any(isinstance(event, AlertSent | AlertReceived | ConnectionClosed) for event in events)
        return
    more = connection.receive_data(JUNK)
    assert connection.closed
    assert any(isinstance(event, AlertSent) for event in more)


def replay_client(suite: CipherSuite) -> TLS13Connection:
    client = TLS13Connection(
        client_config(cipher_suites=(suite,), random=SeededRandom(SEED), now=lambda: RECORDING_TIME)
    )
    client.start_handshake()
    return client


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recording=st.sampled_from(REPLAYS), edits=edits, chunk=st.integers(1, 700))
def test_mutated_babassl_server_stream_into_client(
    recording: Any, edits: list[tuple[int, int, int]], chunk: int
) -> None:
    client = replay_client(CipherSuite[recording.suite_name])
    data = mutate(recording.server_to_client, edits)
    events: list[Any] = []
    for start in range(0, len(data), chunk):
        events += client.receive_data(data[start : start + chunk])
    finish(client, events)


def loopback_client_stream(suite: CipherSuite, mode: str) -> tuple[bytes, dict[str, Any]]:
    """A client's whole stream against a seeded server, and the server settings that replay it.

    mode "resumed" is fully deterministic (no signatures: a server given the same settings and seed
    completes it); "full" and "clientauth" include the server's SM2 signature, whose randomness is
    libcrypto's, so a replaying server sees a Finished that does not match (after parsing everything).
    """
    keys = SessionTicketKeys()
    settings: dict[str, Any] = {"cipher_suites": (suite,), "now": lambda: RECORDING_TIME, "ticket_keys": keys}
    if mode == "clientauth":
        settings["client_auth"] = ClientAuth.REQUIRED
    session = None
    if mode == "resumed":
        first = TLS13Connection(server_config(**settings, random=SeededRandom(6)))
        warmup = TLS13Connection(client_config(cipher_suites=(suite,), now=lambda: RECORDING_TIME))
        warmup.start_handshake()
        pump(warmup, first)
        session = warmup.session
    server = TLS13Connection(server_config(**settings, random=SeededRandom(7)))
    client = TLS13Connection(
        client_config(
            cipher_suites=(suite,),
            random=SeededRandom(8),
            now=lambda: RECORDING_TIME,
            session=session,
            credential=client_credential() if mode == "clientauth" else None,
        )
    )
    client.start_handshake()
    stream = client.data_to_send()
    server.receive_data(stream)
    client.receive_data(server.data_to_send())
    stream += client.data_to_send()
    client.send_application_data(b"request" * 50)
    client.update_keys()
    client.close()
    stream += client.data_to_send()
    return stream, settings


STREAM_MODES = [(suite, mode) for suite in CipherSuite for mode in ("full", "clientauth", "resumed")]
CLIENT_STREAMS = [loopback_client_stream(suite, mode) for suite, mode in STREAM_MODES]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(CLIENT_STREAMS), edits=edits, chunk=st.integers(1, 600))
def test_mutated_client_stream_into_server(case: Any, edits: list[tuple[int, int, int]], chunk: int) -> None:
    stream, server_settings = case
    server = TLS13Connection(server_config(**server_settings, random=SeededRandom(7)))
    data = mutate(stream, edits)
    events: list[Any] = []
    for start in range(0, len(data), chunk):
        events += server.receive_data(data[start : start + chunk])
    finish(server, events)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(range(6)))
def test_misordered_server_records_into_client(order: list[int]) -> None:
    """The recorded server flight, records shuffled: the client ends in an alert or completes, never stuck."""
    recording = REPLAYS[0]
    records = recording.server_records[:6]
    client = replay_client(CipherSuite[recording.suite_name])
    events: list[Any] = []
    for index in order:
        events += client.receive_data(records[index].header + records[index].fragment)
    finish(client, events)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=3000))
def test_random_bytes_into_server_and_client(data: bytes) -> None:
    server = TLS13Connection(server_config())
    finish(server, server.receive_data(data))
    client = replay_client(CipherSuite.TLS_SM4_GCM_SM3)
    finish(client, client.receive_data(data))


def test_unmutated_streams_complete() -> None:
    """The fuzz corpora are real handshakes: unmutated, each completes (so mutations start from a valid run)."""
    for stream, server_settings in CLIENT_STREAMS:
        server = TLS13Connection(server_config(**server_settings, random=SeededRandom(7)))
        alerts = [event.name for event in server.receive_data(stream) if isinstance(event, AlertSent)]
        if "session" in repr(server_settings) or server.handshake_complete:
            assert alerts == [] and server.handshake_complete
        else:
            assert alerts == [
                "decrypt_error"
            ]  # only the client Finished differs (see loopback_client_stream)
    assert sum(1 for _, server_settings in CLIENT_STREAMS) == 6
    for recording in REPLAYS:
        client = replay_client(CipherSuite[recording.suite_name])
        client.receive_data(recording.server_to_client)
        assert client.handshake_complete


def test_a_byte_at_a_time_handshake() -> None:
    client = TLS13Connection(client_config())
    server = TLS13Connection(server_config())
    client.start_handshake()
    for _ in range(5):
        for byte in client.data_to_send():
            server.receive_data(bytes((byte,)))
        for byte in server.data_to_send():
            client.receive_data(bytes((byte,)))
    assert client.handshake_complete and server.handshake_complete
    client.send_application_data(b"x")
    _, server_events = pump(client, server)
    assert server_events
