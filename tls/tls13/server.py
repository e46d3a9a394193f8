"""Server side of the TLS 1.3 handshake with RFC 8998 suites (RFC 8446 2, 4).

::

    ClientHello          -->  [HelloRetryRequest (curveSM2) <-- ClientHello]
                         <--  ServerHello (key_share, [pre_shared_key]), {EncryptedExtensions},
                              {CertificateRequest}*, {Certificate}*, {CertificateVerify}*, {Finished}
    {Certificate}*, {CertificateVerify}*, {Finished}  -->
                         <--  [NewSessionTicket]

(* not on resumption.)  The only key exchange is curveSM2 ECDHE, with or without a resumption PSK
(psk_dhe_ke); a ClientHello whose first key share is another group but which lists curveSM2 gets a
HelloRetryRequest.  0-RTT is refused: early_data is never accepted and the client's early records
are skipped (4.2.10).
"""

from __future__ import annotations

import hmac
from enum import Enum, auto
from functools import lru_cache
from typing import Any, ClassVar

from certs import Certificate, Role
from tls.tlcp.buffer import Buffer
from tls.tlcp.handshake import generate_ephemeral_key

from .alerts import (
    CertificateRequired,
    DecryptError,
    HandshakeFailure,
    IllegalParameter,
    InternalError,
    MissingExtension,
    NoApplicationProtocol,
    ProtocolVersion,
    TLS13Alert,
    UnrecognizedName,
)
from .config import ClientAuth, SM2Credential, TLS13Configuration
from .handshake import (
    CLIENT_CERTIFICATE_VERIFY_CONTEXT,
    SERVER_CERTIFICATE_VERIFY_CONTEXT,
    Handler,
    Handshake,
    TrafficSecrets,
    ecdhe_shared_secret,
    parse_certificate_chain,
    sign_certificate_verify,
    verify_chain,
)
from .keyschedule import KeySchedule, Secret, finished_verify_data
from .messages import (
    HELLO_RETRY_REQUEST_RANDOM,
    CertificateVerify,
    ClientHello,
    EncryptedExtensions,
    ExtensionType,
    HandshakeType,
    KeyShareEntry,
    OfferedPsks,
    ServerHello,
    encode_certificate_request,
    encode_certificate_verify,
    encode_server_hello,
    pull_alpn,
    pull_certificate,
    pull_client_hello,
    pull_client_key_shares,
    pull_finished,
    pull_offered_psks,
    pull_psk_key_exchange_modes,
    pull_server_name,
    pull_uint16_list,
    push_alpn,
    push_certificate_authorities,
    push_encrypted_extensions,
    push_server_hello,
    push_server_key_share,
    push_uint16_list,
    push_uint16_value,
)
from .record import ContentType, RecordReader, RecordWriter
from .suites import (
    HASH_LENGTH,
    LEGACY_VERSION,
    TLS13_VERSION,
    CipherSuite,
    NamedGroup,
    PskKeyExchangeMode,
    SignatureScheme,
)
from .tickets import TicketState

#: Bytes of refused 0-RTT data we skip before treating undecryptable records as an attack (4.2.10).
MAX_EARLY_DATA_SKIPPED = 1 << 16


class ServerState(Enum):
    EXPECT_CLIENT_HELLO = auto()
    EXPECT_RETRIED_CLIENT_HELLO = auto()
    EXPECT_CLIENT_CERTIFICATE = auto()
    EXPECT_CLIENT_CERTIFICATE_VERIFY = auto()
    EXPECT_CLIENT_FINISHED = auto()
    POST_HANDSHAKE = auto()


class ServerHandshake(Handshake):
    is_client = False

    def __init__(self, configuration: TLS13Configuration, reader: RecordReader, writer: RecordWriter) -> None:
        super().__init__(configuration, reader, writer)
        self.state = ServerState.EXPECT_CLIENT_HELLO
        self.first_hello: ClientHello | None = None
        self.server_name: str | None = None
        self.credential: SM2Credential | None = None
        self.resumed_state: TicketState | None = None
        self.key_schedule: KeySchedule | None = None
        self.client_handshake_secret: Secret | None = None
        self._server_handshake_secret: Secret | None = None
        self.client_application_secret: Secret | None = None
        self._server_application_secret: Secret | None = None
        self._exporter_secret = b""
        self.client_signed = False
        #: the client offered psk_dhe_ke, so a ticket could resume (RFC 8446 4.2.9: otherwise send none)
        self.client_resumes_with_dhe = False

    # ClientHello

    def _handle_client_hello(self, raw: bytes) -> None:
        hello = pull_client_hello(Buffer(raw))
        retried = self.state is ServerState.EXPECT_RETRIED_CLIENT_HELLO
        self._check_versions(hello)
        if retried:
            self._check_retried_hello(hello)
        if hello.extension(ExtensionType.EARLY_DATA) is not None:
            if retried:
                raise IllegalParameter("early_data in the ClientHello after a HelloRetryRequest")
            self.reader.skip_budget = MAX_EARLY_DATA_SKIPPED  # 0-RTT refused: skip what the client sends
        self.client_random = hello.random
        server_name_data = hello.extension(ExtensionType.SERVER_NAME)
        self.server_name = pull_server_name(server_name_data) if server_name_data is not None else None
        self.credential = self._select_credential()
        self.cipher_suite = self._choose_cipher_suite(hello)
        client_share = self._find_key_share(hello, retried)
        if client_share is None:
            self._send_hello_retry_request(hello, raw)
            return
        self.alpn_protocol = self._choose_alpn(hello)
        self.client_resumes_with_dhe = self._offers_psk_dhe_ke(hello)
        psk = self._find_resumption_psk(hello, raw)
        if psk is None:
            self._require_signature_algorithms(hello)
        self._send_server_hello(hello, client_share, psk)
        self._send_server_flight()

    def _check_versions(self, hello: ClientHello) -> None:
        versions = hello.extension(ExtensionType.SUPPORTED_VERSIONS)
        if versions is None:
            raise ProtocolVersion("client does not offer TLS 1.3 (no supported_versions)")
        if TLS13_VERSION not in pull_uint16_list(versions, 1):
            raise ProtocolVersion("client does not offer TLS 1.3")
        if hello.legacy_version != LEGACY_VERSION:
            raise ProtocolVersion("ClientHello legacy_version is not 0x0303")
        if hello.legacy_compression_methods != b"\x00":
            raise IllegalParameter("TLS 1.3 ClientHello must offer only null compression")
        if (
            hello.extension(ExtensionType.PRE_SHARED_KEY) is not None
            and hello.extensions[-1][0] != ExtensionType.PRE_SHARED_KEY
        ):
            raise IllegalParameter("pre_shared_key is not the last extension")

    def _check_retried_hello(self, hello: ClientHello) -> None:
        first = self.first_hello
        assert first is not None
        if (
            hello.random != first.random
            or hello.legacy_session_id != first.legacy_session_id
            or hello.cipher_suites != first.cipher_suites
        ):
            raise IllegalParameter("the second ClientHello changed more than the HelloRetryRequest asked")

    def _select_credential(self) -> SM2Credential:
        config = self.configuration
        if config.credential_selector is not None:
            try:
                return config.credential_selector(self.server_name)
            except LookupError:
                raise UnrecognizedName("no certificate for the requested server name") from None
        if config.credential is None:
            raise InternalError("no server credential")
        return config.credential

    def _choose_cipher_suite(self, hello: ClientHello) -> CipherSuite:
        if self.cipher_suite is not None:  # after a HelloRetryRequest: the same suite (4.1.4)
            if self.cipher_suite not in hello.cipher_suites:
                raise IllegalParameter("the second ClientHello dropped the chosen cipher suite")
            return self.cipher_suite
        offered = set(hello.cipher_suites)
        for suite in self.configuration.cipher_suites:
            if suite in offered:
                return suite
        raise HandshakeFailure("no RFC 8998 cipher suite in common")

    def _find_key_share(self, hello: ClientHello, retried: bool) -> KeyShareEntry | None:
        """The client's curveSM2 share; None asks for a HelloRetryRequest (4.1.1, 4.2.8)."""
        groups_data = hello.extension(ExtensionType.SUPPORTED_GROUPS)
        shares_data = hello.extension(ExtensionType.KEY_SHARE)
        if groups_data is None or shares_data is None:
            raise MissingExtension("TLS 1.3 key exchange needs supported_groups and key_share")
        groups = pull_uint16_list(groups_data, 2)
        shares = pull_client_key_shares(shares_data)
        for share in shares:
            if share.group not in groups:
                raise IllegalParameter("key share for a group not in supported_groups")
        if NamedGroup.curveSM2 not in groups:
            raise HandshakeFailure("client does not support curveSM2")
        for share in shares:
            if share.group == NamedGroup.curveSM2:
                return share
        if retried:
            raise IllegalParameter("the second ClientHello has no curveSM2 key share")
        return None

    def _require_signature_algorithms(self, hello: ClientHello) -> None:
        data = hello.extension(ExtensionType.SIGNATURE_ALGORITHMS)
        if data is None:
            raise MissingExtension("certificate authentication needs signature_algorithms")
        if SignatureScheme.sm2sig_sm3 not in pull_uint16_list(data, 2):
            raise HandshakeFailure("client does not accept sm2sig_sm3 signatures")

    def _choose_alpn(self, hello: ClientHello) -> str | None:
        data = hello.extension(ExtensionType.APPLICATION_LAYER_PROTOCOL_NEGOTIATION)
        ours = self.configuration.alpn_protocols
        if data is None or not ours:
            return None
        offered = pull_alpn(data)
        for name in ours:
            if name in offered:
                return name
        if not self.configuration.alpn_required:
            return None
        raise NoApplicationProtocol("no ALPN protocol in common")

    # resumption

    def _find_resumption_psk(self, hello: ClientHello, raw: bytes) -> bytes | None:
        """The PSK of the client's first identity when it resumes a ticket of ours (4.2.11).

        Resuming also restores the client identity of the original handshake (`_resumed_client`).
        """
        psk_data = hello.extension(ExtensionType.PRE_SHARED_KEY)
        if psk_data is None:
            return None
        if hello.extension(ExtensionType.PSK_KEY_EXCHANGE_MODES) is None:
            raise MissingExtension("pre_shared_key without psk_key_exchange_modes")
        offered = pull_offered_psks(psk_data)
        if not self.client_resumes_with_dhe:
            return None
        config = self.configuration
        if config.ticket_keys is None:
            return None
        state = config.ticket_keys.open(offered.identities[0].identity, config.now())
        if (
            state is None
            or state.server_name != self.server_name
            or state.alpn_protocol != self.alpn_protocol
        ):
            return None
        client = self._resumed_client(state)
        if client is None:
            return None
        self._check_binder(offered, raw, state.resumption_psk)
        self.resumed_state = state
        self.peer_certificates, self.peer_verified = client
        return state.resumption_psk

    @staticmethod
    def _offers_psk_dhe_ke(hello: ClientHello) -> bool:
        modes_data = hello.extension(ExtensionType.PSK_KEY_EXCHANGE_MODES)
        return modes_data is not None and PskKeyExchangeMode.psk_dhe_ke in pull_psk_key_exchange_modes(
            modes_data
        )

    def _resumed_client(self, state: TicketState) -> tuple[tuple[Certificate, ...], bool] | None:
        """(client chain, verified) a ticket resumes, or None when a full handshake must re-authenticate.

        The ticket says whether the chain was verified when it was issued; it still counts as verified
        only if it validates against the trust anchors configured now (a reload may have dropped its
        anchor, or it may have expired).  A server that requires client certificates resumes only a
        verified client.
        """
        chain: tuple[Certificate, ...] = ()
        if state.client_chain_digest:
            keys = self.configuration.ticket_keys
            assert keys is not None
            remembered = keys.client_chain(state.client_chain_digest)
            if remembered is None:
                return None  # the chain is no longer remembered
            chain = remembered
        verified = state.peer_verified and self._still_verifies(chain)
        if self.configuration.client_auth is ClientAuth.REQUIRED and not verified:
            return None
        return chain, verified

    def _still_verifies(self, chain: tuple[Certificate, ...]) -> bool:
        config = self.configuration
        if not chain or not config.verify_peer or config.trust_store is None:
            return False
        try:
            verify_chain(chain, config.trust_store, Role.CLIENT_SIGN, config, None)
        except TLS13Alert:
            return False
        return True

    def _check_binder(self, offered: OfferedPsks, raw: bytes, psk: bytes) -> None:
        binder = offered.binders[0]
        if len(binder) != HASH_LENGTH:
            raise DecryptError("PSK binder has the wrong length")
        truncated = self.hash_before.copy()
        truncated.update(raw[: len(raw) - offered.binders_length])
        key_schedule = KeySchedule(psk)
        expected = finished_verify_data(key_schedule.binder_key(), truncated.digest())
        if not hmac.compare_digest(expected, binder):
            raise DecryptError("PSK binder does not verify")
        self.key_schedule = key_schedule  # the early secret of this PSK goes on into the handshake

    # server flight

    def _send_hello_retry_request(self, hello: ClientHello, raw: bytes) -> None:
        assert self.cipher_suite is not None
        self.first_hello = hello
        retry = ServerHello(
            legacy_version=LEGACY_VERSION,
            random=HELLO_RETRY_REQUEST_RANDOM,
            legacy_session_id_echo=hello.legacy_session_id,
            cipher_suite=int(self.cipher_suite),
            legacy_compression_method=0,
            extensions=[
                (ExtensionType.SUPPORTED_VERSIONS, push_uint16_value(TLS13_VERSION)),
                (ExtensionType.KEY_SHARE, push_uint16_value(NamedGroup.curveSM2)),
            ],
        )
        buf = Buffer()
        push_server_hello(buf, retry)
        self.transcript.restart_after_retry(self.hash_before_with(raw), buf.data)
        self.writer.write(ContentType.HANDSHAKE, buf.data)
        if hello.legacy_session_id:
            self.writer.write_change_cipher_spec()
        self.state = ServerState.EXPECT_RETRIED_CLIENT_HELLO

    def hash_before_with(self, raw: bytes) -> bytes:
        """SM3 of the transcript before the message being handled, plus that message."""
        state = self.hash_before.copy()
        state.update(raw)
        return state.digest()

    def _send_server_hello(self, hello: ClientHello, client_share: KeyShareEntry, psk: bytes | None) -> None:
        assert self.cipher_suite is not None
        config = self.configuration
        ephemeral = generate_ephemeral_key(config.random)
        shared_secret = ecdhe_shared_secret(ephemeral, client_share.key_exchange)
        extensions = [
            (int(ExtensionType.SUPPORTED_VERSIONS), push_uint16_value(TLS13_VERSION)),
            (
                int(ExtensionType.KEY_SHARE),
                push_server_key_share(KeyShareEntry(NamedGroup.curveSM2, ephemeral.public_key().to_bytes())),
            ),
        ]
        if psk is not None:
            extensions.append((int(ExtensionType.PRE_SHARED_KEY), push_uint16_value(0)))
        self.send_encoded(
            encode_server_hello(
                ServerHello(
                    legacy_version=LEGACY_VERSION,
                    random=config.random(32),
                    legacy_session_id_echo=hello.legacy_session_id,
                    cipher_suite=int(self.cipher_suite),
                    legacy_compression_method=0,
                    extensions=extensions,
                )
            )
        )
        if hello.legacy_session_id and self.first_hello is None:
            self.writer.write_change_cipher_spec()  # middlebox compatibility (D.4), once
        if psk is None:
            self.key_schedule = KeySchedule()
        assert self.key_schedule is not None  # with a PSK: made by _check_binder
        client_secret, server_secret = self.key_schedule.handshake_traffic_secrets(
            shared_secret, self.transcript.digest()
        )
        self.log_handshake_secrets(client_secret, server_secret)
        self.client_handshake_secret = Secret(client_secret)
        self._server_handshake_secret = Secret(server_secret)
        self.install_write_keys(self._server_handshake_secret)
        self.install_read_keys(self.client_handshake_secret)
        self.reader.allow_plain_alerts = True

    def _send_server_flight(self) -> None:
        config = self.configuration
        acknowledge_server_name = self.server_name is not None and self.resumed_state is None
        self.send_encoded(_encrypted_extensions(acknowledge_server_name, self.alpn_protocol))
        if self.resumed_state is None:
            assert self.credential is not None
            requests_certificate = config.client_auth is not ClientAuth.NONE
            if requests_certificate:
                self.send_encoded(self._certificate_request())
            self.send_encoded(self.credential.certificate_message)
            signature = sign_certificate_verify(
                self.credential.private_key,
                SERVER_CERTIFICATE_VERIFY_CONTEXT,
                self.transcript.digest(),
                config.sm2_signature_id,
            )
            self.send_encoded(
                encode_certificate_verify(CertificateVerify(SignatureScheme.sm2sig_sm3, signature))
            )
            self.state = (
                ServerState.EXPECT_CLIENT_CERTIFICATE
                if requests_certificate
                else ServerState.EXPECT_CLIENT_FINISHED
            )
        else:
            self.state = ServerState.EXPECT_CLIENT_FINISHED
        assert self._server_handshake_secret is not None
        self.send_finished(self._server_handshake_secret)
        assert self.key_schedule is not None
        client_app, server_app, exporter = self.key_schedule.application_traffic_secrets(
            self.transcript.digest()
        )
        self.log_application_secrets(client_app, server_app, exporter)
        self.client_application_secret = Secret(client_app)
        self._server_application_secret = Secret(server_app)
        self._exporter_secret = exporter
        self.install_write_keys(self._server_application_secret)

    def _certificate_request(self) -> bytes:
        trust_store = self.configuration.trust_store
        return _certificate_request(tuple(trust_store.anchors) if trust_store is not None else ())

    # client flight

    def _handle_certificate(self, raw: bytes) -> None:
        message = pull_certificate(Buffer(raw))
        if message.certificate_request_context:
            raise IllegalParameter("client Certificate has a request context we did not send")
        config = self.configuration
        if not message.certificate_list:
            if config.client_auth is ClientAuth.REQUIRED:
                raise CertificateRequired("client certificate required")
            self.state = ServerState.EXPECT_CLIENT_FINISHED
            return
        chain = parse_certificate_chain([entry.cert_data for entry in message.certificate_list])
        if config.verify_peer and config.trust_store is not None:
            verify_chain(chain, config.trust_store, Role.CLIENT_SIGN, config, None)
            self.peer_verified = True
        self.peer_certificates = chain
        self.state = ServerState.EXPECT_CLIENT_CERTIFICATE_VERIFY

    def _handle_certificate_verify(self, raw: bytes) -> None:
        self.check_peer_certificate_verify(
            raw, CLIENT_CERTIFICATE_VERIFY_CONTEXT, "client signed with a scheme we did not request"
        )
        self.client_signed = True
        self.state = ServerState.EXPECT_CLIENT_FINISHED

    def _handle_finished(self, raw: bytes) -> None:
        assert self.cipher_suite is not None and self.key_schedule is not None
        assert self.client_handshake_secret is not None and self.client_application_secret is not None
        assert self._server_application_secret is not None
        self.check_finished(pull_finished(Buffer(raw), HASH_LENGTH), self.client_handshake_secret)
        self.install_read_keys(self.client_application_secret)
        config = self.configuration
        issues_tickets = (
            config.ticket_keys is not None and config.new_session_tickets > 0 and self.client_resumes_with_dhe
        )
        self.secrets = TrafficSecrets(
            cipher_suite=self.cipher_suite,
            client_application=self.client_application_secret,
            server_application=self._server_application_secret,
            exporter=self._exporter_secret,
            resumption_master=(
                self.key_schedule.resumption_master_secret(self.transcript.digest())
                if issues_tickets
                else None
            ),
        )
        self.state = ServerState.POST_HANDSHAKE
        self.report_complete(
            server_name=self.server_name,
            session_resumed=self.resumed_state is not None,
            signature_scheme=SignatureScheme.sm2sig_sm3 if self.client_signed else None,
        )

    # (state, message type) -> handler; any other pair is an unexpected_message (Handshake.handle_message)
    dispatch: ClassVar[dict[tuple[Any, int], Handler]] = {
        (ServerState.EXPECT_CLIENT_HELLO, HandshakeType.CLIENT_HELLO): _handle_client_hello,
        (ServerState.EXPECT_RETRIED_CLIENT_HELLO, HandshakeType.CLIENT_HELLO): _handle_client_hello,
        (ServerState.EXPECT_CLIENT_CERTIFICATE, HandshakeType.CERTIFICATE): _handle_certificate,
        (
            ServerState.EXPECT_CLIENT_CERTIFICATE_VERIFY,
            HandshakeType.CERTIFICATE_VERIFY,
        ): _handle_certificate_verify,
        (ServerState.EXPECT_CLIENT_FINISHED, HandshakeType.FINISHED): _handle_finished,
    }


@lru_cache(maxsize=64)
def _encrypted_extensions(acknowledge_server_name: bool, alpn_protocol: str | None) -> bytes:
    """The whole EncryptedExtensions message: it only varies with these two (the ALPN names are ours)."""
    extensions: list[tuple[int, bytes]] = []
    if acknowledge_server_name:
        extensions.append((int(ExtensionType.SERVER_NAME), b""))
    if alpn_protocol is not None:
        extensions.append(
            (int(ExtensionType.APPLICATION_LAYER_PROTOCOL_NEGOTIATION), push_alpn([alpn_protocol]))
        )
    buf = Buffer()
    push_encrypted_extensions(buf, EncryptedExtensions(extensions))
    return buf.data


@lru_cache(maxsize=16)
def _certificate_request(anchors: tuple[Certificate, ...]) -> bytes:
    """The whole CertificateRequest: sm2sig_sm3, and the trust anchors' names when there are any."""
    extensions = [
        (int(ExtensionType.SIGNATURE_ALGORITHMS), push_uint16_list([SignatureScheme.sm2sig_sm3], 2))
    ]
    names: list[bytes] = []
    for anchor in anchors:
        if anchor.subject_der not in names:
            names.append(anchor.subject_der)
    if names:
        extensions.append((int(ExtensionType.CERTIFICATE_AUTHORITIES), push_certificate_authorities(names)))
    return encode_certificate_request(tuple(extensions))
