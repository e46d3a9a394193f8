"""Known-answer replay of every shared GmSSL and Tongsuo recording through the sans-I/O core.

Server role: the recorded client bytes are fed to a server `TLCPConnection`
configured with the recorded server certificates and keys; `random` returns
the recorded server random, session ID, CBC IVs and GCM nonce start.  The
server must decrypt the ClientKeyExchange to the recorded pre-master, reach
the recorded master secret, accept the client Finished, deliver the recorded
plaintext, and emit the recorded server bytes exactly.

Client role: the same with the recorded client random and pre-master; our
ClientHello, ClientKeyExchange, CertificateVerify and Finished must equal the
recorded client bytes.

SM2 signatures and SM2 encryption are randomized, so the tests substitute
the recorded values for them, but only after checking that the recorded
value is valid for exactly the data our engine wanted to sign or encrypt
(`SM2PrivateKey.sign` is replaced by "verify the recorded signature over the
engine's message, then return it"; `SM2PublicKey.encrypt` checks the
plaintext is the recorded pre-master).

ECDHE ephemeral private keys were not logged, so for ECDHE the tests replace
`generate_ephemeral_key` (returns a key whose public point is the recorded
one) and `sm2_key_exchange` in `tls.tlcp.server`/`tls.tlcp.client`; GmSSL
logged the ECDHE pre-master (used as the key-exchange result, and the real
PRF must then give the logged master secret), Tongsuo only the master secret,
which `derive_master_secret` returns after its inputs are checked.  The SM2
key exchange itself is covered by the in-memory client/server tests.

`tongsuo/ECC-SM2-SM4-CBC-SM3-defaults` is not replayable: its server echoes a
session_ticket extension and sends NewSessionTicket, which TLCP does not
define; the tests check that our server never echoes it and our client
rejects it.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import pytest

from tls.crypto import SM2PrivateKey, SM2PublicKey, sm3
from tls.tlcp import (
    AlertReceived,
    AlertSent,
    ApplicationData,
    CipherSuite,
    ClientAuth,
    ConnectionClosed,
    HandshakeComplete,
    PeerProfile,
    SessionCache,
    TLCPConfiguration,
    TLCPConnection,
)
from tls.tlcp import client as client_module
from tls.tlcp import server as server_module
from tls.tlcp.keys import derive_master_secret

from .recordings import REPLAY_TIME, Record, Recording, all_recordings, handshake_messages, parse_records

RECORDINGS = all_recordings()
REPLAYABLE = [r for r in RECORDINGS if not r.name.endswith("-defaults")]
DEFAULTS = next(r for r in RECORDINGS if r.name.endswith("-defaults"))


class ReplayRandom:
    """`random` for the configuration: recorded values per requested size, then a fixed stream."""

    def __init__(self, queues: dict[int, list[bytes]]) -> None:
        self.queues = {size: list(values) for size, values in queues.items()}
        self.counter = 0

    def __call__(self, length: int) -> bytes:
        queue = self.queues.get(length)
        if queue:
            value = queue.pop(0)
            assert len(value) == length
            return value
        self.counter += 1
        return hashlib.shake_256(self.counter.to_bytes(4, "big")).digest(length)


class RecordedKey:
    """Stand-in ephemeral key: only its public point is known from the recording."""

    def __init__(self, point: bytes) -> None:
        self._public = SM2PublicKey.from_bytes(point)

    def public_key(self) -> SM2PublicKey:
        return self._public


def opaque16_at_end(message: bytes) -> bytes:
    """The trailing `opaque<2>` of a handshake message (a signature or a ciphertext)."""
    body = message[4:]
    for start in range(len(body) - 2, -1, -1):
        if int.from_bytes(body[start : start + 2], "big") == len(body) - start - 2:
            return body[start + 2 :]
    raise AssertionError("no trailing opaque<2>")


def ecdh_point(message: bytes) -> bytes:
    """The 65-byte point of an ECDHE ServerKeyExchange / ClientKeyExchange (either form)."""
    index = message.index(b"\x03\x00\x29\x41\x04")
    return message[index + 4 : index + 4 + 65]


def patch_sign(monkeypatch: pytest.MonkeyPatch, signature: bytes, calls: list[bytes]) -> None:
    def sign(self: SM2PrivateKey, message: bytes, uid: bytes = b"1234567812345678") -> bytes:
        self.public_key().verify(signature, message, uid)  # the recorded signature is over our message
        calls.append(message)
        return signature

    monkeypatch.setattr(SM2PrivateKey, "sign", sign)


def profile(recording: Recording) -> PeerProfile:
    return PeerProfile.GMSSL if recording.implementation == "gmssl" else PeerProfile.TONGSUO


def write_queues(recording: Recording, records: list[Record]) -> dict[int, list[bytes]]:
    if recording.gcm:
        return {8: [recording.nonce_start(records)]}
    return {16: recording.explicit_ivs(records)}


def one_byte_handshake_records(records: list[Record]) -> list[Record]:
    """Re-frame the plaintext handshake records as 1-byte records (legal fragmentation)."""
    output: list[Record] = []
    encrypted = False
    for record in records:
        if record.content_type == 20:
            encrypted = True
        if record.content_type == 22 and not encrypted:
            output.extend(Record(22, record.fragment[i : i + 1]) for i in range(len(record.fragment)))
        else:
            output.append(record)
    return output


def app_chunks(recording: Recording, plaintext: bytes) -> list[bytes]:
    if recording.name.endswith("-long"):
        return plaintext.splitlines(keepends=True)
    return [plaintext]


def prefix_through_finished(records: list[Record]) -> bytes:
    """Wire bytes up to and including the first encrypted record (the Finished)."""
    index = next(i for i, r in enumerate(records) if r.content_type == 20)
    return b"".join(r.wire for r in records[: index + 2])


def feed(connection: TLCPConnection, records: list[Record]) -> list[Any]:
    events: list[Any] = []
    for record in records:
        events.extend(connection.receive_data(record.wire))
    return events


def ecc_pre_master(recording: Recording) -> bytes:
    if "pre_master_secret" in recording.secrets:
        return recording.secrets["pre_master_secret"]
    ciphertext = opaque16_at_end(recording.client_message(16))
    return recording.server_certificate_set.enc_key.decrypt(ciphertext)


def patch_ecdhe(
    monkeypatch: pytest.MonkeyPatch, module: Any, recording: Recording, own_point: bytes, is_server: bool
) -> None:
    monkeypatch.setattr(module, "generate_ephemeral_key", lambda random: RecordedKey(own_point))
    peer_point = ecdh_point(recording.client_message(16) if is_server else recording.server_message(12))
    pre_master = recording.secrets.get("pre_master_secret", bytes(48))

    def key_exchange(**kwargs: Any) -> SimpleNamespace:
        assert kwargs["initiator"] is is_server
        assert kwargs["peer_ephemeral"].to_bytes() == peer_point
        assert kwargs["key_length"] == 48
        return SimpleNamespace(key=pre_master)

    monkeypatch.setattr(module, "sm2_key_exchange", key_exchange)
    if "pre_master_secret" not in recording.secrets:

        def master(pre_master_secret: bytes, client_random: bytes, server_random: bytes) -> bytes:
            assert (client_random, server_random) == (recording.client_random, recording.server_random)
            return recording.master_secret

        monkeypatch.setattr(module, "derive_master_secret", master)


def make_server(recording: Recording, half_close: bool = False) -> TLCPConnection:
    session_id = recording.server_session_id
    queues = write_queues(recording, recording.server_records)
    queues[32] = [recording.server_random] + ([session_id] if session_id else [])
    configuration = TLCPConfiguration(
        is_client=False,
        cipher_suites=[CipherSuite(recording.suite)],
        certificate_set=recording.server_certificate_set,
        trust_store=recording.trust_store,
        client_auth=ClientAuth.REQUIRED if recording.client_auth else ClientAuth.NONE,
        session_cache=SessionCache() if session_id else None,
        profile=profile(recording),
        random=ReplayRandom(queues),
        now=lambda: REPLAY_TIME,
        half_close=half_close,
    )
    return TLCPConnection(configuration)


def split_at_handshake_end(records: list[Record]) -> tuple[list[Record], list[Record]]:
    index = next(i for i, r in enumerate(records) if r.content_type == 20) + 2
    return records[:index], records[index:]


@pytest.mark.parametrize("recording", REPLAYABLE, ids=repr)
@pytest.mark.parametrize("fragmentation", ["recorded", "1-byte", "half-close"])
def test_replay_as_server(recording: Recording, fragmentation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``half-close``: the client's close_notify is fed first, then the server writes its echo and closes."""
    if fragmentation == "1-byte" and recording.name.endswith(("-long", "-1600B")):
        pytest.skip("fragmentation is covered by the short recordings")
    half_close = fragmentation == "half-close"
    signed: list[bytes] = []
    patch_sign(monkeypatch, opaque16_at_end(recording.server_message(12)), signed)
    if recording.ecdhe:
        patch_ecdhe(monkeypatch, server_module, recording, ecdh_point(recording.server_message(12)), True)
    server = make_server(recording, half_close)
    handshake_records, rest = split_at_handshake_end(recording.client_records)
    if fragmentation == "1-byte":
        handshake_records = one_byte_handshake_records(handshake_records)

    events = feed(server, handshake_records)
    assert len(signed) == 1  # ServerKeyExchange signed exactly the recorded params
    complete = [e for e in events if isinstance(e, HandshakeComplete)]
    assert len(complete) == 1 and not [e for e in events if isinstance(e, AlertSent)], events
    event = complete[0]
    assert event.cipher_suite == recording.suite and not event.session_resumed
    assert event.session_id == recording.server_session_id
    if recording.client_auth:
        assert (
            event.peer_sign_cert is not None
            and event.peer_sign_cert.der == recording.client_certificate_set.sign_cert.der
        )
    if recording.implementation == "gmssl":
        assert event.server_name == "localhost"

    # everything the server sent until now is byte-identical to the recording
    assert server.data_to_send() == prefix_through_finished(recording.server_records)

    data_records = [r for r in rest if r.content_type != 21]
    alert_records = [r for r in rest if r.content_type == 21]
    events = feed(server, data_records)
    received = b"".join(e.data for e in events if isinstance(e, ApplicationData))
    assert received == recording.plaintext_client_to_server

    def echo() -> None:
        if recording.implementation == "gmssl":
            # GmSSL echoes without empty records: the whole server stream matches byte for byte
            for chunk in app_chunks(recording, recording.plaintext_server_to_client):
                server.send_application_data(chunk)

    if not half_close:
        echo()
    events = feed(server, alert_records)
    assert [type(e) for e in events] == [AlertReceived, ConnectionClosed]
    assert events[0].name == "close_notify"
    assert server.peer_closed and server.closed is not half_close
    if half_close:
        # nothing answers the close_notify yet; the echo and our close_notify follow it on the wire
        assert server.data_to_send() == b""
        assert feed(server, data_records) == []  # records after close_notify are ignored
        echo()
        server.close()
    assert server.closed
    if recording.implementation == "gmssl":
        _, recorded_rest = split_at_handshake_end(recording.server_records)
        assert server.data_to_send() == b"".join(r.wire for r in recorded_rest)


def make_client(
    recording: Recording, half_close: bool = False, auto: bool = False
) -> tuple[TLCPConnection, ReplayRandom]:
    queues = write_queues(recording, recording.client_records)
    queues[32] = [recording.client_random]
    if not recording.ecdhe:
        queues[46] = [ecc_pre_master(recording)[2:]]
    random = ReplayRandom(queues)
    configuration = TLCPConfiguration(
        is_client=True,
        cipher_suites=[CipherSuite(recording.suite)],
        certificate_set=recording.client_certificate_set if recording.client_auth else None,
        trust_store=recording.trust_store,
        server_name="localhost" if recording.implementation == "gmssl" else None,
        profile=PeerProfile.AUTO if auto else profile(recording),
        random=random,
        now=lambda: REPLAY_TIME,
        half_close=half_close,
    )
    return TLCPConnection(configuration), random


@pytest.mark.parametrize("recording", REPLAYABLE, ids=repr)
@pytest.mark.parametrize("half_close", [False, True], ids=["immediate", "half-close"])
@pytest.mark.parametrize("auto", [False, True], ids=["profile", "auto"])
def test_replay_as_client(
    recording: Recording, half_close: bool, auto: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GmSSL: our client closes first, so half_close changes no byte; Tongsuo: the server's close_notify
    is fed while ours is not sent yet, which half_close leaves unanswered until `close()`.

    ``auto``: with profile AUTO the client recognises GmSSL from its CertificateRequest and sends what
    GmSSL's client sent, byte for byte.  (AUTO's ClientHello is the standard one, without the
    renegotiation SCSV Tongsuo's client adds, so the Tongsuo recordings cannot replay it exactly:
    see `test_auto_client_flight_against_recorded_tongsuo_server`.)
    """
    if auto and recording.implementation == "tongsuo":
        pytest.skip("AUTO's ClientHello differs from Tongsuo's client (no SCSV)")
    signed: list[bytes] = []
    if recording.client_auth:
        patch_sign(monkeypatch, opaque16_at_end(recording.client_message(15)), signed)
    if recording.ecdhe:
        patch_ecdhe(monkeypatch, client_module, recording, ecdh_point(recording.client_message(16)), False)
    else:
        recorded_ciphertext = opaque16_at_end(recording.client_message(16))
        pre_master = ecc_pre_master(recording)
        enc_public = recording.server_certificate_set.enc_cert.sm2_public_key()

        def encrypt(self: SM2PublicKey, plaintext: bytes) -> bytes:
            assert self == enc_public and plaintext == pre_master
            return recorded_ciphertext

        monkeypatch.setattr(SM2PublicKey, "encrypt", encrypt)

    client, _ = make_client(recording, half_close, auto)
    client.start_handshake()
    handshake_records, rest = split_at_handshake_end(recording.server_records)
    events = feed(client, handshake_records)
    complete = [e for e in events if isinstance(e, HandshakeComplete)]
    assert len(complete) == 1 and not [e for e in events if isinstance(e, AlertSent)], events
    assert complete[0].peer_enc_cert is not None
    assert complete[0].peer_enc_cert.der == recording.server_certificate_set.enc_cert.der
    assert len(signed) == (1 if recording.client_auth else 0)
    assert client.data_to_send() == prefix_through_finished(recording.client_records)

    if recording.implementation == "gmssl":
        for chunk in app_chunks(recording, recording.plaintext_client_to_server):
            client.send_application_data(chunk)
        client.close()
        _, recorded_rest = split_at_handshake_end(recording.client_records)
        assert client.data_to_send() == b"".join(r.wire for r in recorded_rest)
    events = feed(client, rest)
    received = b"".join(e.data for e in events if isinstance(e, ApplicationData))
    assert received == recording.plaintext_server_to_client
    assert isinstance(events[-1], ConnectionClosed) and client.peer_closed
    if recording.implementation == "gmssl":
        assert client.closed and client.data_to_send() == b""  # ours went out first: no second one
        return
    assert client.closed is not half_close
    if half_close:
        assert client.data_to_send() == b""
        client.send_application_data(b"still allowed")
        client.close()
        assert client.closed
    assert [r.content_type for r in parse_records(client.data_to_send())] == ([23] if half_close else []) + [
        21
    ]


def test_ecc_pre_master_and_master_secret_known_answers() -> None:
    """For every ECC recording the enc key decrypts the ClientKeyExchange to a pre-master giving the logged master."""
    for recording in RECORDINGS:
        if recording.ecdhe:
            continue
        pre_master = ecc_pre_master(recording)
        ciphertext = opaque16_at_end(recording.client_message(16))
        assert recording.server_certificate_set.enc_key.decrypt(ciphertext) == pre_master
        assert pre_master[:2] == b"\x01\x01" and len(pre_master) == 48
        master = derive_master_secret(pre_master, recording.client_random, recording.server_random)
        assert master == recording.master_secret


def test_gmssl_ecdhe_pre_master_gives_logged_master() -> None:
    for recording in RECORDINGS:
        if recording.ecdhe and "pre_master_secret" in recording.secrets:
            master = derive_master_secret(
                recording.secrets["pre_master_secret"], recording.client_random, recording.server_random
            )
            assert master == recording.master_secret


def test_defaults_recording_server_ignores_session_ticket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tongsuo's session_ticket and SCSV are ignored and never echoed; its Finished then cannot match."""
    recording = DEFAULTS
    patch_sign(monkeypatch, opaque16_at_end(recording.server_message(12)), [])
    masters: list[bytes] = []

    def spy(pre_master_secret: bytes, client_random: bytes, server_random: bytes) -> bytes:
        masters.append(derive_master_secret(pre_master_secret, client_random, server_random))
        return masters[-1]

    monkeypatch.setattr(server_module, "derive_master_secret", spy)
    configuration = TLCPConfiguration(
        is_client=False,
        cipher_suites=[CipherSuite(recording.suite)],
        certificate_set=recording.server_certificate_set,
        verify_peer=False,
        random=ReplayRandom({32: [recording.server_random]}),
        now=lambda: REPLAY_TIME,
    )
    server = TLCPConnection(configuration)
    events = feed(server, recording.client_records[:1])
    flight = server.data_to_send()
    server_hello = flight[5 : 5 + int.from_bytes(flight[3:5], "big")]
    assert server_hello[0] == 2 and len(server_hello) == 4 + 2 + 32 + 1 + 2 + 1  # no extensions block
    events = feed(server, recording.client_records[1:4])
    assert masters == [recording.master_secret]
    assert isinstance(events[-1], AlertSent) and events[-1].name == "decrypt_error"


def test_defaults_recording_client_rejects_unsolicited_ticket_extension() -> None:
    recording = DEFAULTS
    client, _ = make_client(recording)
    client.start_handshake()
    events = feed(client, recording.server_records[:1])
    assert isinstance(events[-1], AlertSent) and events[-1].name == "unsupported_extension"
    assert client.data_to_send()[-7:] == bytes((21, 1, 1, 0, 2, 2, 110))


def test_server_accepts_both_certificate_verify_forms() -> None:
    """GmSSL signs the raw transcript, Tongsuo SM3(transcript): both recordings verify."""
    forms = {}
    for recording in RECORDINGS:
        if not recording.has_client_message(15):
            continue
        client = handshake_messages(recording.client_records)
        server = handshake_messages(recording.server_records)
        transcript = b"".join([client[0], *server, *(m for m in client[1:] if m[0] != 15)])
        signature = opaque16_at_end(recording.client_message(15))
        public = recording.client_certificate_set.sign_cert.sm2_public_key()
        forms[repr(recording)] = server_module.verify_certificate_verify(public, signature, transcript)
    assert {f for name, f in forms.items() if name.startswith("gmssl")} == {"raw"}
    assert {f for name, f in forms.items() if name.startswith("tongsuo")} == {"standard"}


TONGSUO_CLIENT_AUTH = [r for r in REPLAYABLE if r.implementation == "tongsuo" and r.client_auth]


@pytest.mark.parametrize("recording", TONGSUO_CLIENT_AUTH, ids=repr)
def test_auto_client_flight_against_recorded_tongsuo_server(
    recording: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorded Tongsuo server flight makes an AUTO client send Tongsuo's forms: the recorded
    Certificate and ClientKeyExchange byte for byte, a CertificateVerify over SM3 of the messages."""
    signed: list[bytes] = []
    if recording.ecdhe:
        patch_ecdhe(monkeypatch, client_module, recording, ecdh_point(recording.client_message(16)), False)
    else:
        recorded_ciphertext = opaque16_at_end(recording.client_message(16))
        monkeypatch.setattr(SM2PublicKey, "encrypt", lambda self, plaintext: recorded_ciphertext)

    def sign(self: SM2PrivateKey, message: bytes, uid: bytes = b"") -> bytes:
        signed.append(message)
        return b"signature"

    monkeypatch.setattr(SM2PrivateKey, "sign", sign)
    client, _ = make_client(recording, auto=True)
    client.start_handshake()
    (hello,) = handshake_messages(parse_records(client.data_to_send()))
    server_flight, _ = split_at_handshake_end(recording.server_records)
    plaintext_flight = server_flight[: next(i for i, r in enumerate(server_flight) if r.content_type == 20)]
    feed(client, plaintext_flight)
    certificate, key_exchange, verify = handshake_messages(parse_records(client.data_to_send()))
    assert client.client_progress is not None and client.client_progress.dialect is not None
    assert client.client_progress.dialect.dialect is PeerProfile.TONGSUO
    assert certificate == recording.client_message(11)
    assert key_exchange == recording.client_message(16)
    transcript = b"".join([hello, *handshake_messages(plaintext_flight), certificate, key_exchange])
    assert signed == [sm3(transcript)] and verify[0] == 15
