"""In-memory client <-> server tests: pump `data_to_send()` between two `TLCPConnection`s (no sockets).

Covers all four suites with and without client authentication, session
resumption, 1-byte records, coalesced messages, the GmSSL/Tongsuo/standard
sender forms, SNI, close_notify, and the alert for each violation the state
machines and the record layer must catch.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from certs import SM2CertificateSet, TrustStore
from certs.builder import build_sm2_certificate
from certs.pki import TLCP_SIGN_USAGE
from certs.profile import CertificateProfile, Subject
from tls.crypto import SM2PrivateKey, SM2PublicKey, load_sm2_private_key
from tls.tlcp import (
    AlertReceived,
    AlertSent,
    ApplicationData,
    CipherSuite,
    ClientAuth,
    ConnectionClosed,
    HandshakeComplete,
    LocalProtocolError,
    PeerProfile,
    SessionCache,
    TLCPConfiguration,
    TLCPConnection,
)
from tls.tlcp.buffer import Buffer
from tls.tlcp.dialect import DIALECTS
from tls.tlcp.handshake import Handshake
from tls.tlcp.messages import ClientHello, push_client_hello

from .recordings import GMSSL, REPLAY_TIME, TONGSUO, Record, all_recordings, parse_records

RECORDING = next(r for r in all_recordings() if r.name == "ECDHE-SM2-SM4-GCM-SM3-clientauth")
GMSSL_RECORDING = next(r for r in all_recordings() if r.name == "TLS_ECC_SM4_CBC_SM3-clientauth")
SERVER_SET = RECORDING.server_certificate_set
CLIENT_SET = RECORDING.client_certificate_set
TRUST = RECORDING.trust_store
OTHER_TRUST = GMSSL_RECORDING.trust_store
ALL_SUITES = list(CipherSuite)
ECDHE = [CipherSuite.ECDHE_SM4_CBC_SM3, CipherSuite.ECDHE_SM4_GCM_SM3]

assert GMSSL.exists() and TONGSUO.exists()


def server_config(**kwargs: Any) -> TLCPConfiguration:
    options: dict[str, Any] = {
        "is_client": False,
        "certificate_set": SERVER_SET,
        "trust_store": TRUST,
        "now": lambda: REPLAY_TIME,
    }
    options.update(kwargs)
    return TLCPConfiguration(**options)


def client_config(**kwargs: Any) -> TLCPConfiguration:
    options: dict[str, Any] = {
        "is_client": True,
        "certificate_set": CLIENT_SET,
        "trust_store": TRUST,
        "server_name": "localhost",
        "now": lambda: REPLAY_TIME,
    }
    options.update(kwargs)
    return TLCPConfiguration(**options)


class Pair:
    def __init__(self, client: TLCPConfiguration, server: TLCPConfiguration) -> None:
        self.client = TLCPConnection(client)
        self.server = TLCPConnection(server)
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []

    def pump(self, byte_by_byte: bool = False) -> None:
        for _ in range(50):
            to_server = self.client.data_to_send()
            to_client = self.server.data_to_send()
            if not to_server and not to_client:
                return
            for data, peer, events in (
                (to_server, self.server, self.server_events),
                (to_client, self.client, self.client_events),
            ):
                chunks = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
                for chunk in chunks:
                    if chunk:
                        events.extend(peer.receive_data(chunk))
        raise AssertionError("pump did not settle")

    def handshake(self, byte_by_byte: bool = False) -> tuple[HandshakeComplete, HandshakeComplete]:
        self.client.start_handshake()
        self.pump(byte_by_byte)
        return completed(self.client_events), completed(self.server_events)


def completed(events: list[Any]) -> HandshakeComplete:
    found = [e for e in events if isinstance(e, HandshakeComplete)]
    assert len(found) == 1, events
    return found[0]


def alerts_sent(events: list[Any]) -> list[str]:
    return [e.name for e in events if isinstance(e, AlertSent)]


def alerts_received(events: list[Any]) -> list[str]:
    return [e.name for e in events if isinstance(e, AlertReceived)]


def exchange_data(pair: Pair) -> None:
    pair.client.send_application_data(b"ping" * 5000)
    pair.server.send_application_data(b"pong")
    pair.pump()
    assert b"".join(e.data for e in pair.server_events if isinstance(e, ApplicationData)) == b"ping" * 5000
    assert b"".join(e.data for e in pair.client_events if isinstance(e, ApplicationData)) == b"pong"


# successful handshakes


@pytest.mark.parametrize("suite", ALL_SUITES, ids=lambda s: s.name)
@pytest.mark.parametrize("client_auth", list(ClientAuth), ids=lambda a: a.name)
def test_handshake_all_suites(suite: CipherSuite, client_auth: ClientAuth) -> None:
    pair = Pair(
        client_config(cipher_suites=[suite]), server_config(cipher_suites=[suite], client_auth=client_auth)
    )
    client_done, server_done = pair.handshake()
    assert client_done.cipher_suite == server_done.cipher_suite == suite
    assert (
        client_done.peer_sign_cert is not None and client_done.peer_sign_cert.der == SERVER_SET.sign_cert.der
    )
    assert client_done.peer_enc_cert is not None and client_done.peer_enc_cert.der == SERVER_SET.enc_cert.der
    assert server_done.server_name == "localhost"
    client_certified = client_auth is not ClientAuth.NONE or suite in ECDHE
    assert (server_done.peer_sign_cert is not None) is client_certified
    if client_certified:
        assert (
            server_done.peer_sign_cert is not None
            and server_done.peer_sign_cert.der == CLIENT_SET.sign_cert.der
        )
        assert (
            server_done.peer_enc_cert is not None and server_done.peer_enc_cert.der == CLIENT_SET.enc_cert.der
        )
    exchange_data(pair)
    pair.client.close()
    pair.pump()
    assert isinstance(pair.server_events[-1], ConnectionClosed)
    assert isinstance(pair.client_events[-1], ConnectionClosed)
    assert pair.client.closed and pair.server.closed
    with pytest.raises(LocalProtocolError):
        pair.client.send_application_data(b"late")


def test_server_preference_order_wins() -> None:
    client = client_config(cipher_suites=[CipherSuite.ECC_SM4_CBC_SM3, CipherSuite.ECDHE_SM4_GCM_SM3])
    server = server_config(cipher_suites=[CipherSuite.ECDHE_SM4_GCM_SM3, CipherSuite.ECC_SM4_CBC_SM3])
    client_done, _ = Pair(client, server).handshake()
    assert client_done.cipher_suite == CipherSuite.ECDHE_SM4_GCM_SM3


def test_client_without_certificates_offers_only_ecc() -> None:
    pair = Pair(
        client_config(certificate_set=None),
        server_config(cipher_suites=[*ECDHE, CipherSuite.ECC_SM4_GCM_SM3]),
    )
    client_done, server_done = pair.handshake()
    assert client_done.cipher_suite == CipherSuite.ECC_SM4_GCM_SM3 and server_done.peer_sign_cert is None


@pytest.mark.parametrize(
    "suite", [CipherSuite.ECC_SM4_CBC_SM3, CipherSuite.ECDHE_SM4_GCM_SM3], ids=lambda s: s.name
)
def test_one_byte_records_and_byte_by_byte_delivery(suite: CipherSuite) -> None:
    pair = Pair(
        client_config(cipher_suites=[suite], max_fragment_size=1),
        server_config(cipher_suites=[suite], client_auth=ClientAuth.REQUIRED, max_fragment_size=1),
    )
    pair.handshake(byte_by_byte=True)
    pair.client.send_application_data(b"abc")
    data = pair.client.data_to_send()
    assert len(parse_records(data)) == 3
    events = [event for byte in data for event in pair.server.receive_data(bytes((byte,)))]
    assert events == [ApplicationData(b"a"), ApplicationData(b"b"), ApplicationData(b"c")]


def test_coalesced_handshake_messages_in_one_record() -> None:
    pair = Pair(client_config(), server_config(client_auth=ClientAuth.REQUIRED))
    pair.client.start_handshake()
    pair.server_events += pair.server.receive_data(pair.client.data_to_send())
    flight = parse_records(pair.server.data_to_send())
    assert all(r.content_type == 22 for r in flight) and len(flight) == 5
    merged = Record(22, b"".join(r.fragment for r in flight))
    pair.client_events += pair.client.receive_data(merged.wire)
    pair.pump()
    completed(pair.client_events)
    completed(pair.server_events)


# profiles


@pytest.mark.parametrize("profile", DIALECTS, ids=lambda p: p.name)
@pytest.mark.parametrize(
    "suite", [CipherSuite.ECC_SM4_GCM_SM3, CipherSuite.ECDHE_SM4_CBC_SM3], ids=lambda s: s.name
)
def test_server_accepts_every_client_profile(profile: PeerProfile, suite: CipherSuite) -> None:
    client = client_config(cipher_suites=[suite], profile=profile)
    pair = Pair(client, server_config(cipher_suites=[suite], client_auth=ClientAuth.REQUIRED))
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    flight = pair.client.data_to_send()
    records = parse_records(flight)
    plaintext = records[: next(i for i, r in enumerate(records) if r.content_type == 20)]
    messages = b"".join(r.fragment for r in plaintext if r.content_type == 22)
    certificate_count, key_exchange = _client_flight_summary(messages)
    gmssl_ecc = profile is PeerProfile.GMSSL and suite is CipherSuite.ECC_SM4_GCM_SM3
    assert certificate_count == (2 if gmssl_ecc else 3)  # chain holds the CA for the Tongsuo client set
    if suite in ECDHE:
        vector_form = key_exchange[4:6] == b"\x00\x45"
        assert vector_form is (profile is not PeerProfile.TONGSUO)
    pair.server_events += pair.server.receive_data(flight)
    pair.pump()
    done = completed(pair.server_events)
    assert done.peer_sign_cert is not None


def _client_flight_summary(messages: bytes) -> tuple[int, bytes]:
    certificate_count = 0
    key_exchange = b""
    while messages:
        length = int.from_bytes(messages[1:4], "big")
        message, messages = messages[: 4 + length], messages[4 + length :]
        if message[0] == 11:
            body = Buffer(message[7:])
            while not body.eof():
                body.pull_bytes(body.pull_uint24())
                certificate_count += 1
        if message[0] == 16:
            key_exchange = message
    return certificate_count, key_exchange


def test_tongsuo_profile_sends_scsv_and_server_ignores_it() -> None:
    pair = Pair(client_config(profile=PeerProfile.TONGSUO, server_name=None), server_config())
    pair.client.start_handshake()
    hello = pair.client.data_to_send()
    assert b"\x00\xff" in hello[5 + 4 + 2 + 32 + 1 : 5 + 4 + 2 + 32 + 1 + 12]
    pair.server_events += pair.server.receive_data(hello)
    server_hello = parse_records(pair.server.data_to_send())[0].fragment
    assert len(server_hello) == 4 + 2 + 32 + 1 + 0 + 2 + 1  # no extensions echoed, no session id


def test_tongsuo_empty_application_records_are_accepted_and_dropped() -> None:
    pair = Pair(client_config(), server_config())
    pair.handshake()
    pair.client._writer.write(23, b"")
    pair.client.send_application_data(b"x")
    events = pair.server.receive_data(pair.client.data_to_send())
    assert events == [ApplicationData(b"x")]


# resumption


def test_session_resumption() -> None:
    cache = SessionCache()
    pair = Pair(client_config(), server_config(session_cache=cache, client_auth=ClientAuth.OPTIONAL))
    first_client, _ = pair.handshake()
    assert pair.client.session is not None and len(cache) == 1
    assert pair.client.session.master_secret.hex() not in repr(pair.client.session)

    second = Pair(client_config(session=pair.client.session), server_config(session_cache=cache))
    client_done, server_done = second.handshake()
    assert client_done.session_resumed and server_done.session_resumed
    assert client_done.session_id == first_client.session_id
    assert server_done.peer_sign_cert is not None  # the original client identity is kept
    exchange_data(second)


def test_expired_or_unknown_session_falls_back_to_full_handshake() -> None:
    cache = SessionCache(lifetime=timedelta(minutes=5))
    pair = Pair(client_config(), server_config(session_cache=cache))
    pair.handshake()
    later = REPLAY_TIME + timedelta(minutes=6)
    again = Pair(
        client_config(session=pair.client.session, now=lambda: later),
        server_config(session_cache=cache, now=lambda: later),
    )
    client_done, _ = again.handshake()
    assert not client_done.session_resumed and client_done.session_id != pair.client.session.session_id  # type: ignore[union-attr]
    other = Pair(client_config(session=pair.client.session), server_config(session_cache=SessionCache()))
    assert not other.handshake()[0].session_resumed


def test_no_cache_means_no_session_id() -> None:
    pair = Pair(client_config(), server_config())
    client_done, _ = pair.handshake()
    assert client_done.session_id == b"" and pair.client.session is None


def test_session_cache_size_limit() -> None:
    cache = SessionCache(max_size=2)
    sessions = []
    for index in range(3):
        pair = Pair(client_config(), server_config(session_cache=cache, random=_seeded(index)))
        pair.handshake()
        sessions.append(pair.client.session)
    assert len(cache) == 2
    assert cache.get(sessions[0].session_id, REPLAY_TIME) is None  # type: ignore[union-attr]
    assert cache.get(sessions[2].session_id, REPLAY_TIME) is not None  # type: ignore[union-attr]


def _seeded(seed: int) -> Any:
    import hashlib

    counter = [0]

    def random(length: int) -> bytes:
        counter[0] += 1
        return hashlib.shake_256(f"{seed}:{counter[0]}".encode()).digest(length)

    return random


# SNI


def test_certificate_selector_receives_sni() -> None:
    names: list[str | None] = []

    def selector(name: str | None) -> SM2CertificateSet:
        names.append(name)
        return SERVER_SET

    pair = Pair(client_config(), server_config(certificate_set=None, certificate_selector=selector))
    pair.handshake()
    assert names == ["localhost"]


def test_unknown_server_name_is_unrecognized_name() -> None:
    def selector(name: str | None) -> SM2CertificateSet:
        raise LookupError(name)

    pair = Pair(client_config(), server_config(certificate_set=None, certificate_selector=selector))
    pair.client.start_handshake()
    pair.pump()
    assert alerts_sent(pair.server_events) == ["unrecognized_name"]
    assert alerts_received(pair.client_events) == ["unrecognized_name"] and pair.client.closed


# certificate failures


@pytest.mark.parametrize(
    ("client_changes", "alert"),
    [
        ({"trust_store": OTHER_TRUST}, "unknown_ca"),
        ({"now": lambda: REPLAY_TIME + timedelta(days=365 * 30)}, "certificate_expired"),
        ({"server_name": "example.com"}, "bad_certificate"),
    ],
)
def test_client_rejects_server_chain(client_changes: dict[str, Any], alert: str) -> None:
    pair = Pair(client_config(**client_changes), server_config())
    pair.client.start_handshake()
    pair.pump()
    assert alerts_sent(pair.client_events) == [alert]
    assert alerts_received(pair.server_events) == [alert] and pair.server.closed


def test_server_rejects_client_chain() -> None:
    pair = Pair(client_config(), server_config(client_auth=ClientAuth.REQUIRED, trust_store=OTHER_TRUST))
    pair.client.start_handshake()
    pair.pump()
    assert alerts_sent(pair.server_events) == ["unknown_ca"]


def test_client_auth_required_without_certificate() -> None:
    pair = Pair(client_config(certificate_set=None), server_config(client_auth=ClientAuth.REQUIRED))
    pair.client.start_handshake()
    pair.pump()
    assert alerts_sent(pair.server_events) == ["handshake_failure"]
    assert alerts_received(pair.client_events) == ["handshake_failure"]


def test_client_auth_optional_without_certificate() -> None:
    pair = Pair(client_config(certificate_set=None), server_config(client_auth=ClientAuth.OPTIONAL))
    _, server_done = pair.handshake()
    assert server_done.peer_certificates == ()


def test_bad_certificate_verify_is_decrypt_error(monkeypatch: pytest.MonkeyPatch) -> None:
    original = SM2PrivateKey.sign
    monkeypatch.setattr(
        SM2PrivateKey, "sign", lambda self, message, uid=b"1234567812345678": original(self, b"x")
    )
    pair = Pair(
        client_config(cipher_suites=[CipherSuite.ECC_SM4_CBC_SM3]),
        server_config(client_auth=ClientAuth.REQUIRED),
    )
    pair.client.start_handshake()
    pair.pump()
    assert alerts_sent(pair.client_events) == ["decrypt_error"]  # the ServerKeyExchange signature fails first


def test_bad_server_key_exchange_signature() -> None:
    pair = Pair(client_config(), server_config())
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    records = parse_records(pair.server.data_to_send())
    ske = bytearray(records[2].fragment)
    ske[-5] ^= 1
    records[2] = Record(22, bytes(ske))
    events = pair.client.receive_data(b"".join(r.wire for r in records))
    assert alerts_sent(events) == ["decrypt_error"]
    (alert,) = [e for e in events if isinstance(e, AlertSent)]
    assert alert.reason.endswith("other than the default 1234567812345678)")


def test_certificate_signed_with_another_sm2_id_suggests_the_id() -> None:
    """The CA signed the server's sign certificate with an SM2 ID other than the default one."""
    ca_key = load_sm2_private_key((TONGSUO / "certs" / "ca.key").read_bytes())
    sign_cert = SERVER_SET.sign_cert
    profile = CertificateProfile(
        subject=Subject("localhost"),
        not_before=sign_cert.not_before,
        not_after=sign_cert.not_after,
        key_usage=TLCP_SIGN_USAGE,
        san_dns=("localhost",),
    )
    other_id = build_sm2_certificate(
        profile, SERVER_SET.sign_key.public_key(), ca_key, RECORDING.ca_cert, uid=b"ALICE123@YAHOO.COM"
    )
    server_set = dataclasses.replace(SERVER_SET, sign_cert=other_id)
    pair = Pair(client_config(), server_config(certificate_set=server_set))
    pair.client.start_handshake()
    pair.pump()
    (alert,) = [e for e in pair.client_events if isinstance(e, AlertSent)]
    assert alert.name == "bad_certificate"
    assert "does not verify with the key of" in alert.reason
    assert alert.reason.endswith(
        "(an SM2 signature that fails with the right key is often made with an SM2 ID other than the "
        "default 1234567812345678)"
    )


def test_client_certificate_verify_signature_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    client_key = CLIENT_SET.sign_key
    original = SM2PrivateKey.sign

    def sign(self: SM2PrivateKey, message: bytes, uid: bytes = b"1234567812345678") -> bytes:
        return original(self, b"not the transcript" if self == client_key else message, uid)

    monkeypatch.setattr(SM2PrivateKey, "sign", sign)
    pair = Pair(client_config(), server_config(client_auth=ClientAuth.REQUIRED))
    pair.client.start_handshake()
    pair.pump()
    assert alerts_sent(pair.server_events) == ["decrypt_error"]


def test_ecc_pre_master_with_wrong_version_fails_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    original = SM2PublicKey.encrypt
    monkeypatch.setattr(SM2PublicKey, "encrypt", lambda self, pms: original(self, b"\x03\x03" + pms[2:]))
    pair = Pair(client_config(cipher_suites=[CipherSuite.ECC_SM4_CBC_SM3]), server_config())
    pair.client.start_handshake()
    pair.pump()
    assert alerts_sent(pair.server_events) == ["bad_record_mac"]  # random pre-master, no decryption oracle


def test_wrong_finished_is_decrypt_error(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Handshake.send_finished

    def send_finished(self: Handshake, label: bytes) -> None:
        if self.is_client:
            self.transcript += b"tampered"
        original(self, label)

    monkeypatch.setattr(Handshake, "send_finished", send_finished)
    pair = Pair(client_config(), server_config())
    pair.client.start_handshake()
    pair.pump()
    assert alerts_sent(pair.server_events) == ["decrypt_error"]


# state machine and record violations


def client_hello(**changes: Any) -> bytes:
    hello = ClientHello(0x0101, bytes(32), b"", [0xE013], [0], None)
    for key, value in changes.items():
        setattr(hello, key, value)
    buf = Buffer()
    push_client_hello(buf, hello)
    return Record(22, buf.data).wire


@pytest.mark.parametrize(
    ("data", "alert"),
    [
        (client_hello(version=0x0303), "protocol_version"),
        (client_hello(cipher_suites=[0x1301, 0x00FF]), "handshake_failure"),
        (client_hello(compression_methods=[1]), "illegal_parameter"),
        (client_hello(extensions=[(0, b"\x00\x00")]), "decode_error"),
        (client_hello(extensions=[(0, b"\x00\x06\x00\x00\x02ab")]), "decode_error"),
        (Record(22, b"\x14\x00\x00\x0c" + bytes(12)).wire, "unexpected_message"),  # Finished first
        (Record(22, b"\x10\x00\x00\x02\x00\x00").wire, "unexpected_message"),  # ClientKeyExchange first
        (Record(22, b"\x63\x00\x00\x00").wire, "unexpected_message"),  # unknown handshake type
        (b"\x16\x01\x01\x00\x00", "unexpected_message"),  # zero-length handshake record
        (b"\x14\x01\x01\x00\x01\x01", "unexpected_message"),  # ChangeCipherSpec first
        (b"\x14\x01\x01\x00\x01\x02", "decode_error"),
        (b"\x17\x01\x01\x00\x01x", "unexpected_message"),  # application data before handshake
        (b"\x15\x01\x01\x00\x03\x02\x28\x00", "decode_error"),  # alert of 3 bytes
        (b"\x15\x01\x01\x00\x02\x03\x28", "illegal_parameter"),  # alert level 3
        (b"\x16\x03\x01\x00\x05hello", "protocol_version"),  # a TLS record
        (b"\x16\x01\x01\x40\x01", "record_overflow"),
        (b"\x16\x01\x01\x00\x04\x01\x02\x00\x00", "decode_error"),  # handshake length > limit
        (b"\x18\x01\x01\x00\x01\x00", "unexpected_message"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_server_violations(data: bytes, alert: str) -> None:
    server = TLCPConnection(server_config())
    events = server.receive_data(data)
    assert alerts_sent(events) == [alert]
    assert server.closed
    sent = parse_records(server.data_to_send())
    assert sent[-1] == Record(21, bytes((2, _code(alert))))
    assert server.receive_data(client_hello()) == []  # nothing is accepted after a fatal alert


def _code(name: str) -> int:
    from tls.tlcp.alerts import AlertDescription

    return int(AlertDescription[name])


def test_change_cipher_spec_inside_fragmented_message() -> None:
    server = TLCPConnection(server_config())
    hello = client_hello()
    events = server.receive_data(
        hello[: 5 + 3].replace(hello[3:5], b"\x00\x03") + b"\x14\x01\x01\x00\x01\x01"
    )
    assert alerts_sent(events) == ["unexpected_message"]


@pytest.mark.parametrize(
    ("mutate", "alert"),
    [
        (lambda hello: hello[: 4 + 0] + b"\x03\x03" + hello[6:], "protocol_version"),
        (lambda hello: hello[: 4 + 2 + 32 + 1] + b"\xe0\x51" + hello[4 + 2 + 32 + 3 :], "illegal_parameter"),
        (lambda hello: hello[: 4 + 2 + 32 + 3] + b"\x01" + hello[4 + 2 + 32 + 4 :], "illegal_parameter"),
        (lambda hello: hello[:3] + bytes([hello[3] + 4]) + hello[4:] + b"\x00\x00\x00\x00", "decode_error"),
        (
            lambda hello: hello[:3] + bytes([hello[3] + 6]) + hello[4:] + b"\x00\x04\x00\x23\x00\x00",
            "unsupported_extension",
        ),
    ],
)
def test_client_checks_server_hello(mutate: Any, alert: str) -> None:
    pair = Pair(client_config(cipher_suites=[CipherSuite.ECC_SM4_CBC_SM3], server_name=None), server_config())
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    records = parse_records(pair.server.data_to_send())
    server_hello = mutate(records[0].fragment)
    events = pair.client.receive_data(Record(22, server_hello).wire)
    assert alerts_sent(events) == [alert]


def test_server_hello_done_before_certificate_is_unexpected() -> None:
    pair = Pair(client_config(), server_config())
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    records = parse_records(pair.server.data_to_send())
    events = pair.client.receive_data(records[0].wire + records[-1].wire)
    assert alerts_sent(events) == ["unexpected_message"]


def test_renegotiation_is_refused_both_ways() -> None:
    pair = Pair(client_config(), server_config())
    pair.handshake()
    pair.client._writer.write(22, client_hello()[5:])
    events = pair.server.receive_data(pair.client.data_to_send())
    assert alerts_sent(events) == ["no_renegotiation"]

    pair = Pair(client_config(), server_config())
    pair.handshake()
    pair.server._writer.write(22, b"\x00\x00\x00\x00")  # HelloRequest
    events = pair.client.receive_data(pair.server.data_to_send())
    assert alerts_sent(events) == ["no_renegotiation"]
    assert alerts_received(pair.server.receive_data(pair.client.data_to_send())) == ["no_renegotiation"]


def test_hello_request_during_handshake_is_ignored() -> None:
    pair = Pair(client_config(), server_config())
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    flight = b"\x16\x01\x01\x00\x04\x00\x00\x00\x00" + pair.server.data_to_send()
    pair.client_events += pair.client.receive_data(flight)
    pair.pump()
    completed(pair.client_events)
    completed(pair.server_events)


def test_tampered_application_record_is_bad_record_mac() -> None:
    pair = Pair(client_config(cipher_suites=[CipherSuite.ECC_SM4_CBC_SM3]), server_config())
    pair.handshake()
    pair.client.send_application_data(b"secret payload")
    data = bytearray(pair.client.data_to_send())
    data[-1] ^= 1
    events = pair.server.receive_data(bytes(data))
    assert alerts_sent(events) == ["bad_record_mac"]
    assert "secret" not in repr(events)


def test_peer_fatal_alert_is_surfaced() -> None:
    pair = Pair(client_config(), server_config())
    pair.handshake()
    pair.client._writer.write(21, b"\x02\x28")
    events = pair.server.receive_data(pair.client.data_to_send())
    assert events == [AlertReceived(2, 40, "handshake_failure")]
    assert pair.server.closed and pair.server.data_to_send() == b""


def test_warning_alert_does_not_close() -> None:
    pair = Pair(client_config(), server_config())
    pair.handshake()
    pair.client._writer.write(21, b"\x01\x5a")  # user_canceled
    pair.client.send_application_data(b"still here")
    events = pair.server.receive_data(pair.client.data_to_send())
    assert events == [AlertReceived(1, 90, "user_canceled"), ApplicationData(b"still here")]


def test_local_protocol_errors() -> None:
    server = TLCPConnection(server_config())
    with pytest.raises(LocalProtocolError):
        server.start_handshake()
    with pytest.raises(LocalProtocolError):
        server.send_application_data(b"x")
    client = TLCPConnection(client_config())
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"")
    client.start_handshake()
    with pytest.raises(LocalProtocolError):
        client.start_handshake()


def test_configuration_validation() -> None:
    with pytest.raises(ValueError):
        TLCPConfiguration(is_client=False)
    with pytest.raises(ValueError):
        TLCPConfiguration(is_client=True)  # verify_peer without trust store
    with pytest.raises(ValueError):
        client_config(cipher_suites=[])
    with pytest.raises(ValueError):
        client_config(max_fragment_size=0)
    assert dataclasses.replace(client_config(), verify_peer=False, trust_store=None).verify_peer is False


def test_ca_names_are_sent_in_certificate_request() -> None:
    pair = Pair(client_config(), server_config(client_auth=ClientAuth.REQUIRED))
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    request = next(r.fragment for r in parse_records(pair.server.data_to_send()) if r.fragment[0] == 13)
    for name in TRUST.ca_names_der():
        assert name in request
    assert request[4:6] == b"\x01\x40"  # standard profile: ecdsa_sign only, no signature algorithms


def test_trust_store_type() -> None:
    assert isinstance(TRUST, TrustStore)


# crafted flights


def _flights(client: TLCPConfiguration, server: TLCPConfiguration) -> tuple[Pair, list[Record]]:
    """Run to the point where the client's first full flight is produced; return it as records."""
    pair = Pair(client, server)
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    return pair, parse_records(pair.client.data_to_send())


def _certificate_message(*ders: bytes) -> bytes:
    body = b"".join(len(der).to_bytes(3, "big") + der for der in ders)
    body = len(body).to_bytes(3, "big") + body
    return b"\x0b" + len(body).to_bytes(3, "big") + body


def test_ecdhe_client_without_enc_certificate_is_handshake_failure() -> None:
    suite = CipherSuite.ECDHE_SM4_GCM_SM3
    pair, records = _flights(client_config(cipher_suites=[suite]), server_config(cipher_suites=[suite]))
    assert records[0].fragment[0] == 11
    records[0] = Record(22, _certificate_message(CLIENT_SET.sign_cert.der))
    events = pair.server.receive_data(b"".join(r.wire for r in records))
    assert alerts_sent(events) == ["handshake_failure"]


def test_client_certificate_without_signing_cert_is_bad_certificate() -> None:
    pair, records = _flights(client_config(), server_config(client_auth=ClientAuth.REQUIRED))
    records[0] = Record(22, _certificate_message(CLIENT_SET.enc_cert.der))
    events = pair.server.receive_data(b"".join(r.wire for r in records))
    assert alerts_sent(events) == ["bad_certificate"]


def test_garbage_client_certificate_is_bad_certificate() -> None:
    pair, records = _flights(client_config(), server_config(client_auth=ClientAuth.REQUIRED))
    records[0] = Record(22, _certificate_message(b"\x30\x03\x02\x01\x00"))
    events = pair.server.receive_data(b"".join(r.wire for r in records))
    assert alerts_sent(events) == ["bad_certificate"]


def test_unrequested_client_certificate_is_unexpected() -> None:
    suite = CipherSuite.ECC_SM4_GCM_SM3
    pair, records = _flights(client_config(cipher_suites=[suite]), server_config(cipher_suites=[suite]))
    extra = Record(22, _certificate_message(CLIENT_SET.sign_cert.der))
    events = pair.server.receive_data(b"".join(r.wire for r in [extra, *records]))
    assert alerts_sent(events) == ["unexpected_message"]


def test_missing_certificate_verify_is_unexpected() -> None:
    pair, records = _flights(client_config(), server_config(client_auth=ClientAuth.REQUIRED))
    kept = [r for r in records if r.fragment[:1] != b"\x0f" or r is records[-1]]  # last = encrypted Finished
    assert len(kept) == len(records) - 1
    events = pair.server.receive_data(b"".join(r.wire for r in kept))
    assert alerts_sent(events) == ["unexpected_message"]


def _server_flight(client: TLCPConfiguration, server: TLCPConfiguration) -> tuple[Pair, list[Record]]:
    pair = Pair(client, server)
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    return pair, parse_records(pair.server.data_to_send())


def test_server_certificate_list_needs_sign_and_enc() -> None:
    pair, records = _server_flight(client_config(), server_config())
    records[1] = Record(22, _certificate_message(SERVER_SET.sign_cert.der))
    events = pair.client.receive_data(b"".join(r.wire for r in records))
    assert alerts_sent(events) == ["bad_certificate"]


def test_server_certificates_in_wrong_order_are_rejected() -> None:
    pair, records = _server_flight(client_config(), server_config())
    records[1] = Record(22, _certificate_message(SERVER_SET.enc_cert.der, SERVER_SET.sign_cert.der))
    events = pair.client.receive_data(b"".join(r.wire for r in records))
    assert alerts_sent(events) == ["unsupported_certificate"]  # keyUsage does not fit the position


def test_ecdhe_point_not_on_curve_is_illegal_parameter() -> None:
    suite = CipherSuite.ECDHE_SM4_CBC_SM3
    pair, records = _server_flight(client_config(cipher_suites=[suite]), server_config(cipher_suites=[suite]))
    ske = bytearray(records[2].fragment)
    assert ske[4:9] == b"\x03\x00\x29\x41\x04"
    ske[20] ^= 0x55
    records[2] = Record(22, bytes(ske))
    events = pair.client.receive_data(b"".join(r.wire for r in records))
    assert alerts_sent(events) == ["illegal_parameter"]


def test_ecdhe_server_must_request_certificates() -> None:
    suite = CipherSuite.ECDHE_SM4_CBC_SM3
    pair, records = _server_flight(client_config(cipher_suites=[suite]), server_config(cipher_suites=[suite]))
    assert records[3].fragment[0] == 13
    del records[3]
    events = pair.client.receive_data(b"".join(r.wire for r in records))
    assert alerts_sent(events) == ["handshake_failure"]


# closing: immediate close_notify reply (default) and half-close


def app_data(events: list[Any]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ApplicationData))


def test_default_answers_close_notify_at_once_and_stops_writing() -> None:
    pair = Pair(client_config(), server_config())
    pair.handshake()
    pair.client.close()
    pair.server_events.clear()
    pair.server_events += pair.server.receive_data(pair.client.data_to_send())
    assert [type(e) for e in pair.server_events] == [AlertReceived, ConnectionClosed]
    assert pair.server.peer_closed and pair.server.close_notify_sent and pair.server.closed
    assert [r.content_type for r in parse_records(pair.server.data_to_send())] == [21]
    with pytest.raises(LocalProtocolError):
        pair.server.send_application_data(b"too late")


@pytest.mark.parametrize(
    "suite", [CipherSuite.ECC_SM4_CBC_SM3, CipherSuite.ECDHE_SM4_GCM_SM3], ids=lambda s: s.name
)
def test_half_close_receiver_finishes_writing_then_closes(suite: CipherSuite) -> None:
    pair = Pair(
        client_config(cipher_suites=[suite], half_close=True),
        server_config(cipher_suites=[suite], half_close=True),
    )
    pair.handshake()
    pair.client.send_application_data(b"request")
    pair.client.close()
    assert pair.client.close_notify_sent and not pair.client.closed
    with pytest.raises(LocalProtocolError):
        pair.client.send_application_data(b"after our close_notify")
    pair.server_events.clear()
    pair.pump()
    assert [type(e) for e in pair.server_events] == [ApplicationData, AlertReceived, ConnectionClosed]
    assert pair.server.peer_closed and not pair.server.close_notify_sent and not pair.server.closed
    assert pair.server.data_to_send() == b""  # no reply until close()

    response = bytes(range(256)) * 400
    pair.server.send_application_data(response)
    pair.server.send_application_data(b"!")
    pair.pump()
    assert app_data(pair.client_events) == response + b"!"
    assert not pair.client.peer_closed  # the client still reads after its own close_notify

    pair.server.close()
    assert pair.server.closed
    pair.client_events.clear()
    pair.pump()
    assert [type(e) for e in pair.client_events] == [AlertReceived, ConnectionClosed]
    assert pair.client.closed and pair.client.peer_closed
    assert pair.client.data_to_send() == b""  # its close_notify went out already: no second one
    with pytest.raises(LocalProtocolError):
        pair.server.send_application_data(b"late")


def test_half_close_both_ends_close_at_once() -> None:
    pair = Pair(client_config(half_close=True), server_config(half_close=True))
    pair.handshake()
    pair.client.close()
    pair.server.close()
    pair.client_events.clear()
    pair.server_events.clear()
    pair.pump()
    for events in (pair.client_events, pair.server_events):
        assert [type(e) for e in events] == [AlertReceived, ConnectionClosed]
    assert pair.client.closed and pair.server.closed
    pair.client.close()  # idempotent, sends nothing
    assert pair.client.data_to_send() == b""


@pytest.mark.parametrize("half_close", [False, True])
def test_records_after_close_notify_are_ignored(half_close: bool) -> None:
    pair = Pair(client_config(), server_config(half_close=half_close))
    pair.handshake()
    pair.client.close()
    pair.client._writer.write(23, b"smuggled after close_notify")
    pair.client._writer.write(21, b"\x02\x28")
    events = pair.server.receive_data(pair.client.data_to_send())
    assert [type(e) for e in events] == [AlertReceived, ConnectionClosed]
    assert pair.server.receive_data(Record(23, b"\x00" * 40).wire) == []
    assert pair.server.closed is not half_close
    assert not alerts_sent(events)


def test_half_close_before_handshake_completes_answers_at_once() -> None:
    pair = Pair(client_config(half_close=True), server_config(half_close=True))
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    pair.server.data_to_send()
    pair.client.close()
    events = pair.server.receive_data(pair.client.data_to_send())
    assert [type(e) for e in events] == [AlertReceived, ConnectionClosed]
    assert pair.server.closed and pair.server.close_notify_sent
    assert [r.fragment for r in parse_records(pair.server.data_to_send())] == [b"\x01\x00"]


def test_half_close_after_a_fatal_alert_sends_nothing() -> None:
    pair = Pair(client_config(half_close=True), server_config(half_close=True))
    pair.handshake()
    pair.client._writer.write(21, b"\x02\x28")
    pair.server.receive_data(pair.client.data_to_send())
    assert pair.server.closed
    pair.server.close()
    assert pair.server.data_to_send() == b"" and not pair.server.close_notify_sent
