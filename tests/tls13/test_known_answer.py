"""Known-answer tests from BabaSSL 8.3.2 recordings (made by `tests.tls13.record_babassl`).

1. ``babassl-*-clientauth``: a handshake between two BabaSSL ends, with BabaSSL's key log.  Our record
   layer decrypts every record with the logged secrets, our codecs parse every message, and our key
   schedule, Finished computation and CertificateVerify check must agree with what BabaSSL sent;
   this also records which SM2 ID BabaSSL signs with (RFC 8998's, not the GM/T default).
2. ``smgate-client-*``: our client (seeded, fixed clock) against a BabaSSL server.  Replaying the
   server's bytes, the engine must produce every byte it sent then, and log the secrets BabaSSL logged.
"""

from __future__ import annotations

import pytest

from tests.interop.babassl import payload_bytes
from tests.interop.identities import TONGSUO_PKI
from tls.crypto import DEFAULT_SM2_ID, InvalidSignature, SM3Hash
from tls.tlcp.buffer import Buffer
from tls.tls13 import (
    RFC8998_SM2_ID,
    ApplicationData,
    CipherSuite,
    HandshakeComplete,
    SessionTicketReceived,
    TLS13Configuration,
    TLS13Connection,
)
from tls.tls13.handshake import (
    CLIENT_CERTIFICATE_VERIFY_CONTEXT,
    SERVER_CERTIFICATE_VERIFY_CONTEXT,
    certificate_verify_content,
    verify_certificate_verify,
)
from tls.tls13.keyschedule import finished_verify_data
from tls.tls13.messages import (
    ExtensionType,
    HandshakeType,
    pull_certificate,
    pull_certificate_verify,
    pull_client_hello,
    pull_encrypted_extensions,
    pull_finished,
    pull_server_hello,
    pull_server_key_share,
)
from tls.tls13.record import RecordProtection
from tls.tls13.suites import NamedGroup, SignatureScheme

from .conftest import SeededRandom
from .record_babassl import RECORDING_TIME, REQUEST, SEED
from .recordings import Record, Recording, recordings


def split_messages(stream: bytes) -> list[bytes]:
    messages = []
    while stream:
        length = int.from_bytes(stream[1:4], "big")
        messages.append(stream[: 4 + length])
        stream = stream[4 + length :]
    return messages


def decrypt(records: list[Record], protection: RecordProtection) -> list[tuple[int, bytes]]:
    return [protection.open(record.header, record.fragment) for record in records]


@pytest.mark.parametrize("recording", recordings("babassl-"), ids=repr)
def test_babassl_pair_decrypts_and_verifies(recording: Recording) -> None:
    suite = CipherSuite[recording.suite_name]
    secrets = recording.key_log
    client, server = recording.client_records, recording.server_records
    # plaintext: ClientHello / ServerHello, then change_cipher_spec (compatibility mode) each way
    client_hello, server_hello = client[0].fragment, server[0].fragment
    assert [record.content_type for record in client[:2]] == [22, 20]
    assert [record.content_type for record in server[:2]] == [22, 20]
    hello = pull_client_hello(Buffer(client_hello))
    assert suite in hello.cipher_suites
    reply = pull_server_hello(Buffer(server_hello))
    assert reply.cipher_suite == suite
    share = reply.extension(ExtensionType.KEY_SHARE)
    assert share is not None and pull_server_key_share(share).group == NamedGroup.curveSM2

    # the server's encrypted flight under SERVER_HANDSHAKE_TRAFFIC_SECRET
    server_handshake = RecordProtection(suite, secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"])
    server_plain = b""
    rest = server[2:]
    while True:
        content_type, content = server_handshake.open(rest[0].header, rest[0].fragment)
        rest = rest[1:]
        assert content_type == 22
        server_plain += content
        if split_messages(server_plain)[-1][0] == HandshakeType.FINISHED:
            break
    encrypted_extensions, certificate, server_verify, server_finished = split_messages(server_plain)[:4]
    assert split_messages(server_plain)[1][0] == HandshakeType.CERTIFICATE_REQUEST
    certificate_request = split_messages(server_plain)[1]
    certificate, server_verify, server_finished = split_messages(server_plain)[2:5]
    pull_encrypted_extensions(Buffer(encrypted_extensions))

    transcript = SM3Hash()
    for message in (client_hello, server_hello, encrypted_extensions, certificate_request, certificate):
        transcript.update(message)
    server_chain = pull_certificate(Buffer(certificate)).certificate_list
    assert server_chain[0].cert_data == TONGSUO_PKI.server_set.sign_cert.der
    verify = pull_certificate_verify(Buffer(server_verify))
    assert verify.algorithm == SignatureScheme.sm2sig_sm3
    server_key = TONGSUO_PKI.server_set.sign_cert.sm2_public_key()
    signed_hash = transcript.digest()
    assert (
        verify_certificate_verify(
            server_key, verify.signature, SERVER_CERTIFICATE_VERIFY_CONTEXT, signed_hash
        )
        == RFC8998_SM2_ID
    )
    with pytest.raises(InvalidSignature):  # BabaSSL does not sign with the GM/T default ID
        server_key.verify(
            verify.signature,
            certificate_verify_content(SERVER_CERTIFICATE_VERIFY_CONTEXT, signed_hash),
            DEFAULT_SM2_ID,
        )
    transcript.update(server_verify)
    assert pull_finished(Buffer(server_finished), 32).verify_data == finished_verify_data(
        secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"], transcript.digest()
    )
    transcript.update(server_finished)

    # the client's flight under CLIENT_HANDSHAKE_TRAFFIC_SECRET: Certificate, CertificateVerify, Finished
    client_handshake = RecordProtection(suite, secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"])
    client_plain = b""
    client_rest = client[2:]
    while (
        len(split_messages(client_plain)) < 3 or split_messages(client_plain)[-1][0] != HandshakeType.FINISHED
    ):
        content_type, content = client_handshake.open(client_rest[0].header, client_rest[0].fragment)
        client_rest = client_rest[1:]
        assert content_type == 22
        client_plain += content
    client_certificate, client_verify, client_finished = split_messages(client_plain)
    transcript.update(client_certificate)
    client_signature = pull_certificate_verify(Buffer(client_verify)).signature
    assert (
        verify_certificate_verify(
            TONGSUO_PKI.client_set.sign_cert.sm2_public_key(),
            client_signature,
            CLIENT_CERTIFICATE_VERIFY_CONTEXT,
            transcript.digest(),
        )
        == RFC8998_SM2_ID
    )
    transcript.update(client_verify)
    assert pull_finished(Buffer(client_finished), 32).verify_data == finished_verify_data(
        secrets["CLIENT_HANDSHAKE_TRAFFIC_SECRET"], transcript.digest()
    )

    # application data under the traffic secrets: the BabaSSL client's deterministic payload, echoed
    payload = payload_bytes(len(REQUEST))
    client_application = decrypt(client_rest, RecordProtection(suite, secrets["CLIENT_TRAFFIC_SECRET_0"]))
    assert client_application == [(23, payload), (21, b"\x01\x00")]  # then close_notify
    server_application = decrypt(rest, RecordProtection(suite, secrets["SERVER_TRAFFIC_SECRET_0"]))
    assert b"".join(content for content_type, content in server_application if content_type == 23) == payload
    assert {content_type for content_type, _ in server_application} == {21, 22, 23}  # tickets, data, alert


@pytest.mark.parametrize("recording", recordings("smgate-client-"), ids=repr)
def test_smgate_client_replays_byte_for_byte(recording: Recording) -> None:
    suite = CipherSuite[recording.suite_name]
    key_log: list[str] = []
    connection = TLS13Connection(
        TLS13Configuration(
            is_client=True,
            cipher_suites=(suite,),
            trust_store=TONGSUO_PKI.trust_store,
            server_name="localhost",
            random=SeededRandom(SEED),
            now=lambda: RECORDING_TIME,
            key_log=key_log.append,
        )
    )
    connection.start_handshake()
    sent = connection.data_to_send()
    events = []
    request_sent = False
    for (
        record
    ) in recording.server_records:  # as received then: the request goes out once the handshake is done
        events += connection.receive_data(record.header + record.fragment)
        sent += connection.data_to_send()
        if connection.handshake_complete and not request_sent:
            connection.send_application_data(REQUEST)
            sent += connection.data_to_send()
            request_sent = True
    connection.close()
    sent += connection.data_to_send()

    assert sent == recording.client_to_server
    assert set(key_log) == recording.key_log_lines
    handshake = next(event for event in events if isinstance(event, HandshakeComplete))
    assert handshake.cipher_suite == suite and handshake.peer_sm2_signature_id == RFC8998_SM2_ID
    assert b"".join(event.data for event in events if isinstance(event, ApplicationData)) == REQUEST
    assert any(isinstance(event, SessionTicketReceived) for event in events)
