"""`tls.tlcp.dialect`: recognition from the recorded server flights, the retry rule, the refusal
wording, the per-endpoint cache, and the AUTO client in memory against strict dialect servers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tls.tlcp import (
    AlertSent,
    CipherSuite,
    ClientAuth,
    DialectCache,
    DialectChoice,
    DialectSource,
    HandshakeComplete,
    PeerProfile,
    TLCPConfiguration,
    TLCPConnection,
)
from tls.tlcp.buffer import Buffer
from tls.tlcp.dialect import (
    ClientProgress,
    describe_refusal,
    is_dialect_shaped,
    recognise_dialect,
    rejected_message,
    retry_dialect,
)
from tls.tlcp.messages import CertificateRequest, HandshakeType, pull_certificate_request
from tls.tlcp.suites import KeyExchange

from .dialect_servers import GMSSL_SERVER, TONGSUO_SERVER, DialectTraits, strict_connection
from .recordings import REPLAY_TIME, Recording, all_recordings, handshake_messages, parse_records

RECORDINGS_WITH_REQUEST = [r for r in all_recordings() if r.client_auth]
ECC, ECDHE = KeyExchange.ECC, KeyExchange.ECDHE
FULL_FLIGHT = (
    HandshakeType.CERTIFICATE,
    HandshakeType.CLIENT_KEY_EXCHANGE,
    HandshakeType.CERTIFICATE_VERIFY,
    HandshakeType.FINISHED,
)


# recognition


@pytest.mark.parametrize("recording", RECORDINGS_WITH_REQUEST, ids=repr)
def test_recorded_certificate_requests_reveal_their_stack(recording: Recording) -> None:
    request = pull_certificate_request(Buffer(recording.server_message(HandshakeType.CERTIFICATE_REQUEST)))
    choice = recognise_dialect(request)
    expected = PeerProfile.GMSSL if recording.implementation == "gmssl" else PeerProfile.TONGSUO
    assert (choice.dialect, choice.source) == (expected, DialectSource.RECOGNISED)


def test_babassl_request_without_ca_names_is_tongsuo() -> None:
    """BabaSSL 8.3 (live, no client CA list configured) sends types 01 40 and no CA names."""
    choice = recognise_dialect(CertificateRequest([1, 64], []))
    assert choice.dialect is PeerProfile.TONGSUO
    assert "rsa_sign" in str(choice)


def test_unknown_request_types_fall_back_to_the_standard_forms() -> None:
    choice = recognise_dialect(CertificateRequest([64, 80], []))
    assert choice.dialect is PeerProfile.STANDARD
    assert "ecdsa_sign, ibc_params" in choice.evidence
    assert "199" in recognise_dialect(CertificateRequest([199], [])).evidence


# which failures are dialect-shaped, and what the retry flips


def progress(dialect: PeerProfile = PeerProfile.GMSSL, key_exchange: KeyExchange = ECDHE) -> ClientProgress:
    choice = DialectChoice(dialect, DialectSource.RECOGNISED, "test")
    return ClientProgress(dialect=choice, key_exchange=key_exchange, flight=FULL_FLIGHT)


@pytest.mark.parametrize(
    ("alert", "alert_sent", "shaped"),
    [
        ("decode_error", False, True),
        ("bad_certificate", False, True),
        ("decrypt_error", False, True),
        ("handshake_failure", False, True),
        (None, None, True),  # closed without an alert
        ("unknown_ca", False, False),  # the server does not trust our CA: no dialect fixes that
        ("certificate_expired", False, False),
        ("decode_error", True, False),  # our own verdict on the server
        ("bad_certificate", True, False),
    ],
)
def test_dialect_shaped_failures(alert: str | None, alert_sent: bool | None, shaped: bool) -> None:
    assert is_dialect_shaped(progress(), alert, alert_sent) is shaped


def test_failures_before_a_dialect_mattered_are_not_dialect_shaped() -> None:
    assert not is_dialect_shaped(None, "decode_error", False)
    assert not is_dialect_shaped(ClientProgress(), "decode_error", False)  # refused our ClientHello
    no_forms = ClientProgress(dialect=None, key_exchange=ECC, flight=FULL_FLIGHT[1:])
    assert not is_dialect_shaped(no_forms, "decode_error", False)  # ECC without a certificate
    before_flight = ClientProgress(dialect=progress().dialect, key_exchange=ECDHE, flight=())
    assert not is_dialect_shaped(before_flight, None, None)


@pytest.mark.parametrize(
    ("failed", "alert", "key_exchange", "retry"),
    [
        # decode_error after an ECDHE exchange: the other ClientKeyExchange encoding
        (PeerProfile.GMSSL, "decode_error", ECDHE, PeerProfile.TONGSUO),
        (PeerProfile.STANDARD, "decode_error", ECDHE, PeerProfile.TONGSUO),
        (PeerProfile.TONGSUO, "decode_error", ECDHE, PeerProfile.STANDARD),
        # anything else: the other CertificateVerify / ECC certificate list
        (PeerProfile.GMSSL, "decrypt_error", ECDHE, PeerProfile.STANDARD),
        (PeerProfile.GMSSL, None, ECC, PeerProfile.STANDARD),
        (PeerProfile.GMSSL, "decode_error", ECC, PeerProfile.STANDARD),
        (PeerProfile.STANDARD, "bad_certificate", ECC, PeerProfile.GMSSL),
        (PeerProfile.TONGSUO, "decrypt_error", ECDHE, PeerProfile.GMSSL),
        (PeerProfile.TONGSUO, None, ECC, PeerProfile.GMSSL),
    ],
)
def test_retry_flips_what_the_server_most_likely_refused(
    failed: PeerProfile, alert: str | None, key_exchange: KeyExchange, retry: PeerProfile
) -> None:
    assert retry_dialect(failed, alert, key_exchange) is retry


@pytest.mark.parametrize(
    ("alert", "key_exchange", "words"),
    [
        ("decode_error", ECDHE, "the ClientKeyExchange (the encoding of the ECDHE parameters)"),
        ("bad_certificate", ECC, "the Certificate (which certificates a client sends)"),
        ("handshake_failure", ECC, "the Certificate (which certificates a client sends)"),
        ("decrypt_error", ECDHE, "the CertificateVerify (what the signature covers)"),
        (None, ECDHE, "the CertificateVerify (what the signature covers)"),
        (
            "illegal_parameter",
            ECC,
            "our flight (Certificate, ClientKeyExchange, CertificateVerify, Finished)",
        ),
    ],
)
def test_rejected_message_names_the_message(alert: str | None, key_exchange: KeyExchange, words: str) -> None:
    assert rejected_message(progress(key_exchange=key_exchange), alert) == words


def test_describe_refusal() -> None:
    assert describe_refusal(progress(), "decode_error") == (
        "the server answered with decode_error after our flight in dialect gmssl (recognised: test); "
        "it most likely refused the ClientKeyExchange (the encoding of the ECDHE parameters)"
    )
    assert describe_refusal(progress(), None).startswith("the server closed without an alert after")
    assert describe_refusal(ClientProgress(), "decode_error") == ""
    configured = DialectChoice(PeerProfile.TONGSUO, DialectSource.CONFIGURED, "")
    assert str(configured) == "tongsuo (configured)"


# the cache


ENDPOINT = ("10.0.0.1", 4433, "bank.example")
RETRIED = DialectChoice(PeerProfile.STANDARD, DialectSource.RETRIED, "the server refused gmssl")
RECOGNISED = DialectChoice(PeerProfile.GMSSL, DialectSource.RECOGNISED, "ecdsa_sign only")


def test_cache_pins_only_what_a_retry_found() -> None:
    cache = DialectCache()
    cache.remember(ENDPOINT, RECOGNISED, REPLAY_TIME)
    assert cache.lookup(ENDPOINT, REPLAY_TIME) == RECOGNISED
    assert cache.pinned(ENDPOINT, REPLAY_TIME) is None  # the next flight reveals it again
    cache.remember(ENDPOINT, RETRIED, REPLAY_TIME)
    assert cache.pinned(ENDPOINT, REPLAY_TIME) == RETRIED
    remembered = DialectChoice(PeerProfile.STANDARD, DialectSource.REMEMBERED, RETRIED.evidence)
    cache.remember(ENDPOINT, remembered, REPLAY_TIME)
    assert cache.pinned(ENDPOINT, REPLAY_TIME) == remembered
    assert cache.pinned(("10.0.0.1", 4433, None), REPLAY_TIME) is None  # another server name
    assert cache.stats.handshakes == {
        ("gmssl", "recognised"): 1,
        ("standard", "retried"): 1,
        ("standard", "remembered"): 1,
    }
    cache.forget(ENDPOINT)
    assert cache.lookup(ENDPOINT, REPLAY_TIME) is None and len(cache) == 0


def test_cache_entries_expire_a_lifetime_after_their_last_use() -> None:
    cache = DialectCache(lifetime=timedelta(minutes=10))
    cache.remember(ENDPOINT, RETRIED, REPLAY_TIME)
    assert cache.pinned(ENDPOINT, REPLAY_TIME + timedelta(minutes=9)) == RETRIED
    cache.remember(ENDPOINT, RETRIED, REPLAY_TIME + timedelta(minutes=9))
    assert cache.pinned(ENDPOINT, REPLAY_TIME + timedelta(minutes=18)) == RETRIED
    assert cache.pinned(ENDPOINT, REPLAY_TIME + timedelta(minutes=19)) is None
    assert len(cache) == 0
    cache.remember(ENDPOINT, RETRIED, REPLAY_TIME)
    assert cache.lookup(ENDPOINT, REPLAY_TIME - timedelta(seconds=1)) is None  # clock went back


def test_cache_is_bounded_least_recently_used_first() -> None:
    cache = DialectCache(max_size=2)
    endpoints = [("10.0.0.1", port, None) for port in (1, 2, 3)]
    cache.remember(endpoints[0], RETRIED, REPLAY_TIME)
    cache.remember(endpoints[1], RETRIED, REPLAY_TIME)
    assert cache.lookup(endpoints[0], REPLAY_TIME) == RETRIED  # now the most recently used
    cache.remember(endpoints[2], RETRIED, REPLAY_TIME)
    assert len(cache) == 2
    assert cache.lookup(endpoints[1], REPLAY_TIME) is None
    assert cache.lookup(endpoints[0], REPLAY_TIME) == RETRIED
    with pytest.raises(ValueError, match="max_size"):
        DialectCache(max_size=0)


# the AUTO client in memory, against the strict servers


def auto_client(recording: Recording, profile: PeerProfile = PeerProfile.AUTO) -> TLCPConnection:
    return TLCPConnection(
        TLCPConfiguration(
            is_client=True,
            cipher_suites=[CipherSuite(recording.suite)],
            certificate_set=recording.client_certificate_set,
            trust_store=recording.trust_store,
            server_name="localhost",
            profile=profile,
            now=lambda: REPLAY_TIME,
        )
    )


def strict_server(recording: Recording, traits: DialectTraits) -> TLCPConnection:
    configuration = TLCPConfiguration(
        is_client=False,
        cipher_suites=[CipherSuite(recording.suite)],
        certificate_set=recording.server_certificate_set,
        client_auth=ClientAuth.REQUIRED,
        trust_store=recording.trust_store,
        profile=traits.request_profile,
        now=lambda: REPLAY_TIME,
    )
    return strict_connection(configuration, traits)


def run_in_memory(client: TLCPConnection, server: TLCPConnection) -> tuple[list[object], list[object]]:
    client.start_handshake()
    client_events: list[object] = []
    server_events: list[object] = []
    for _ in range(4):
        server_events += server.receive_data(client.data_to_send())
        client_events += client.receive_data(server.data_to_send())
    return client_events, server_events


@pytest.mark.parametrize("recording", RECORDINGS_WITH_REQUEST, ids=repr)
def test_emulated_server_flight_is_the_recorded_one(recording: Recording) -> None:
    """The strict servers send the recorded CertificateRequest byte for byte."""
    traits = GMSSL_SERVER if recording.implementation == "gmssl" else TONGSUO_SERVER
    sent = handshake_messages(parse_records(server_flight(recording, traits)))
    recorded_request = recording.server_message(HandshakeType.CERTIFICATE_REQUEST)
    assert recorded_request in sent


def server_flight(recording: Recording, traits: DialectTraits) -> bytes:
    client, server = auto_client(recording), strict_server(recording, traits)
    client.start_handshake()
    server.receive_data(client.data_to_send())
    return server.data_to_send()


@pytest.mark.parametrize("recording", RECORDINGS_WITH_REQUEST, ids=repr)
def test_auto_client_completes_against_the_strict_server_of_the_recorded_stack(recording: Recording) -> None:
    traits = GMSSL_SERVER if recording.implementation == "gmssl" else TONGSUO_SERVER
    client, server = auto_client(recording), strict_server(recording, traits)
    client_events, server_events = run_in_memory(client, server)
    assert [e for e in server_events if isinstance(e, AlertSent)] == []
    assert any(isinstance(e, HandshakeComplete) for e in client_events)
    assert client.client_progress is not None and client.client_progress.dialect is not None
    assert client.client_progress.dialect.dialect.value == traits.name


@pytest.mark.parametrize("recording", RECORDINGS_WITH_REQUEST, ids=repr)
def test_other_dialects_are_refused_by_the_strict_server(recording: Recording) -> None:
    """What the live peers do with another dialect's forms (the emulation refuses the same way)."""
    traits = GMSSL_SERVER if recording.implementation == "gmssl" else TONGSUO_SERVER
    for profile in (PeerProfile.STANDARD, PeerProfile.GMSSL, PeerProfile.TONGSUO):
        client, server = auto_client(recording, profile), strict_server(recording, traits)
        _, server_events = run_in_memory(client, server)
        refusals = [e for e in server_events if isinstance(e, AlertSent)]
        wrong = profile.value != traits.name
        # Tongsuo's and the standard forms differ only in the ECDHE exchange
        same_forms = {profile.value, traits.name} == {"standard", "tongsuo"} and not recording.ecdhe
        assert bool(refusals) is (wrong and not same_forms), (profile, refusals)


def test_auto_is_a_client_profile() -> None:
    recording = RECORDINGS_WITH_REQUEST[0]
    with pytest.raises(ValueError, match="profile auto is for clients"):
        TLCPConfiguration(
            is_client=False,
            certificate_set=recording.server_certificate_set,
            trust_store=recording.trust_store,
            profile=PeerProfile.AUTO,
        )
