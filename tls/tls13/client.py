"""Client side of the TLS 1.3 handshake with RFC 8998 suites (RFC 8446 2, 4).

::

    ClientHello (curveSM2 key_share, [pre_shared_key])  -->
                         <--  [HelloRetryRequest, then ClientHello again]
                         <--  ServerHello, {EncryptedExtensions}, {CertificateRequest}*,
                              {Certificate}*, {CertificateVerify}*, {Finished}
    {Certificate}*, {CertificateVerify}*, {Finished}  -->

Middlebox compatibility mode (D.4) is on by default, as OpenSSL, Tongsuo and BabaSSL run it: a
32-byte legacy_session_id and one dummy change_cipher_spec before the second flight.  0-RTT is never
attempted.

RFC 8446 4.3.2 forbids a CertificateRequest in a handshake authenticated by a PSK, and we refuse one
with unexpected_message, unless `TLS13Configuration.accept_certificate_request_in_psk` is set: GmSSL
3.3's tls13_server sends one on every resumption when it asks for client certificates (its
``tls13_do_server_handshake``: EncryptedExtensions, then CertificateRequest whatever the key exchange
mode) and then insists on a client Certificate and CertificateVerify before Finished, as in a full
handshake (``tls13_recv_client_certificate``: an empty certificate_list is certificate_required unless
the server was started with ``-client_cert_optional``).  So the tolerance answers it exactly as a full
handshake's request: our chain and a CertificateVerify when we have a credential, else an empty
Certificate.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Any, ClassVar

from certs import Role
from tls.crypto import SM2PrivateKey
from tls.tlcp.buffer import Buffer
from tls.tlcp.handshake import generate_ephemeral_key

from .alerts import (
    DecodeError,
    IllegalParameter,
    LocalProtocolError,
    MissingExtension,
    ProtocolVersion,
    TLS13Alert,
    UnexpectedMessage,
    UnsupportedExtension,
)
from .config import TLS13Configuration, TLS13Session
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
    Certificate as CertificateMessage,
)
from .messages import (
    CertificateEntry,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    Extension,
    ExtensionType,
    HandshakeType,
    KeyShareEntry,
    OfferedPsks,
    PskIdentity,
    ServerHello,
    find_extension,
    pull_alpn,
    pull_certificate,
    pull_certificate_request,
    pull_cookie,
    pull_encrypted_extensions,
    pull_finished,
    pull_server_hello,
    pull_server_key_share,
    pull_uint16_list,
    pull_uint16_value,
    push_alpn,
    push_certificate,
    push_certificate_verify,
    push_client_hello,
    push_client_key_shares,
    push_cookie,
    push_offered_psks,
    push_server_name,
    push_uint16_list,
)
from .record import RecordReader, RecordWriter
from .suites import (
    HASH_LENGTH,
    INITIAL_RECORD_VERSION,
    LEGACY_VERSION,
    TLS13_VERSION,
    CipherSuite,
    NamedGroup,
    PskKeyExchangeMode,
    SignatureScheme,
)

#: Extensions a server may put in EncryptedExtensions that we may have offered (RFC 8446 4.2 table).
_ENCRYPTED_EXTENSIONS_ALLOWED = frozenset(
    (
        ExtensionType.SERVER_NAME,
        ExtensionType.SUPPORTED_GROUPS,
        ExtensionType.APPLICATION_LAYER_PROTOCOL_NEGOTIATION,
        ExtensionType.EARLY_DATA,
    )
)
_SERVER_HELLO_ALLOWED = frozenset(
    (ExtensionType.SUPPORTED_VERSIONS, ExtensionType.KEY_SHARE, ExtensionType.PRE_SHARED_KEY)
)
_RETRY_REQUEST_ALLOWED = frozenset(
    (ExtensionType.SUPPORTED_VERSIONS, ExtensionType.KEY_SHARE, ExtensionType.COOKIE)
)


class ClientState(Enum):
    START = auto()
    EXPECT_SERVER_HELLO = auto()
    EXPECT_SERVER_HELLO_AFTER_RETRY = auto()
    EXPECT_ENCRYPTED_EXTENSIONS = auto()
    EXPECT_CERTIFICATE_REQUEST_OR_CERTIFICATE = auto()
    EXPECT_CERTIFICATE = auto()
    EXPECT_CERTIFICATE_VERIFY = auto()
    EXPECT_FINISHED = auto()
    #: resumed, and `accept_certificate_request_in_psk` lets the server ask for a certificate anyway
    EXPECT_CERTIFICATE_REQUEST_OR_FINISHED = auto()
    POST_HANDSHAKE = auto()


class ClientHandshake(Handshake):
    is_client = True

    def __init__(self, configuration: TLS13Configuration, reader: RecordReader, writer: RecordWriter) -> None:
        super().__init__(configuration, reader, writer)
        self.state = ClientState.START
        self.session_id = b""
        self.ephemeral_key: SM2PrivateKey | None = None
        self.offered_session: TLS13Session | None = None
        self.offered_extensions: frozenset[int] = frozenset()
        self.cookie: bytes | None = None
        self.retry_suite: CipherSuite | None = None
        self.key_schedule: KeySchedule | None = None
        self.resumed = False
        self.certificate_request: CertificateRequest | None = None
        self.client_handshake_secret: Secret | None = None
        self.server_handshake_secret: Secret | None = None

    # ClientHello

    def start(self) -> None:
        if self.state is not ClientState.START:
            raise LocalProtocolError("handshake already started")
        config = self.configuration
        self.client_random = config.random(32)
        self.session_id = config.random(32) if config.middlebox_compatibility else b""
        if config.session is not None and self._session_resumable(config.session):
            self.offered_session = config.session
        if config.offer_key_share:
            self.ephemeral_key = generate_ephemeral_key(config.random)
        self.writer.record_version = INITIAL_RECORD_VERSION.to_bytes(2, "big")
        self._send_client_hello()
        self.writer.record_version = LEGACY_VERSION.to_bytes(2, "big")
        self.state = ClientState.EXPECT_SERVER_HELLO

    def _session_resumable(self, session: TLS13Session) -> bool:
        """Offer `session` only where a full handshake would accept the same server.

        With ``verify_peer`` the session's chain must have been verified and must still validate
        against the trust anchors and server name configured now.
        """
        config = self.configuration
        if (
            session.cipher_suite not in config.cipher_suites
            or session.server_name != config.server_name
            or not session.usable_at(config.now())
        ):
            return False
        if not config.verify_peer:
            return True
        if not session.peer_verified or not session.peer_certificates:
            return False
        assert config.trust_store is not None
        try:
            verify_chain(
                session.peer_certificates, config.trust_store, Role.SERVER_SIGN, config, config.server_name
            )
        except TLS13Alert:
            return False
        return True

    def _send_client_hello(self) -> None:
        config = self.configuration
        extensions: list[Extension] = []
        if config.server_name is not None:
            extensions.append((ExtensionType.SERVER_NAME, push_server_name(config.server_name)))
        extensions += [
            (ExtensionType.SUPPORTED_GROUPS, push_uint16_list([NamedGroup.curveSM2], 2)),
            (ExtensionType.SIGNATURE_ALGORITHMS, push_uint16_list([SignatureScheme.sm2sig_sm3], 2)),
            (ExtensionType.SUPPORTED_VERSIONS, push_uint16_list([TLS13_VERSION], 1)),
            (ExtensionType.PSK_KEY_EXCHANGE_MODES, bytes((1, PskKeyExchangeMode.psk_dhe_ke))),
        ]
        shares = []
        if self.ephemeral_key is not None:
            shares.append(KeyShareEntry(NamedGroup.curveSM2, self.ephemeral_key.public_key().to_bytes()))
        extensions.append((ExtensionType.KEY_SHARE, push_client_key_shares(shares)))
        if config.alpn_protocols:
            extensions.append(
                (ExtensionType.APPLICATION_LAYER_PROTOCOL_NEGOTIATION, push_alpn(config.alpn_protocols))
            )
        if self.cookie is not None:
            extensions.append((ExtensionType.COOKIE, push_cookie(self.cookie)))
        session = self.offered_session
        if session is not None:
            identity = PskIdentity(session.ticket, session.obfuscated_age(config.now()))
            dummy = OfferedPsks([identity], [bytes(HASH_LENGTH)])
            extensions.append((ExtensionType.PRE_SHARED_KEY, push_offered_psks(dummy)))
        self.offered_extensions = frozenset(int(extension_type) for extension_type, _ in extensions)
        hello = ClientHello(
            legacy_version=LEGACY_VERSION,
            random=self.client_random,
            legacy_session_id=self.session_id,
            cipher_suites=[int(suite) for suite in config.cipher_suites],
            legacy_compression_methods=b"\x00",
            extensions=[(int(extension_type), data) for extension_type, data in extensions],
        )
        buf = Buffer()
        push_client_hello(buf, hello)
        raw = buf.data
        if session is not None:
            raw = self._bind_psk(raw, session)
        self.send_encoded(raw)

    def _bind_psk(self, raw: bytes, session: TLS13Session) -> bytes:
        """Fill in the binder, the last HASH_LENGTH bytes of the ClientHello (4.2.11.2)."""
        self.key_schedule = KeySchedule(session.resumption_psk)
        binders_length = 2 + 1 + HASH_LENGTH
        truncated = self.transcript.state()
        truncated.update(raw[:-binders_length])
        binder = finished_verify_data(self.key_schedule.binder_key(), truncated.digest())
        return raw[:-HASH_LENGTH] + binder

    # ServerHello / HelloRetryRequest

    def _handle_server_hello(self, raw: bytes) -> None:
        hello = pull_server_hello(Buffer(raw))
        self._check_server_hello_common(hello)
        if hello.is_hello_retry_request:
            if self.state is not ClientState.EXPECT_SERVER_HELLO:
                raise UnexpectedMessage("a second HelloRetryRequest")
            self._handle_hello_retry_request(hello, raw)
            return
        if self.retry_suite is not None and hello.cipher_suite != self.retry_suite:
            raise IllegalParameter("ServerHello suite differs from the HelloRetryRequest's")
        for extension_type, _ in hello.extensions:
            if extension_type not in _SERVER_HELLO_ALLOWED:
                raise UnsupportedExtension(f"extension {extension_type} in ServerHello")
        self.cipher_suite = CipherSuite(hello.cipher_suite)
        self._accept_psk(hello)
        share_data = hello.extension(ExtensionType.KEY_SHARE)
        if share_data is None:
            raise MissingExtension("ServerHello without key_share (psk_ke is not offered)")
        share = pull_server_key_share(share_data)
        if share.group != NamedGroup.curveSM2 or self.ephemeral_key is None:
            raise IllegalParameter("ServerHello key share is not for the curveSM2 share we sent")
        shared_secret = ecdhe_shared_secret(self.ephemeral_key, share.key_exchange)
        if self.key_schedule is None or not self.resumed:
            self.key_schedule = KeySchedule()
        client_secret, server_secret = self.key_schedule.handshake_traffic_secrets(
            shared_secret, self.transcript.digest()
        )
        self.log_handshake_secrets(client_secret, server_secret)
        self.client_handshake_secret = Secret(client_secret)
        self.server_handshake_secret = Secret(server_secret)
        self.install_read_keys(self.server_handshake_secret)
        self.state = ClientState.EXPECT_ENCRYPTED_EXTENSIONS

    def _check_server_hello_common(self, hello: ServerHello) -> None:
        versions = hello.extension(ExtensionType.SUPPORTED_VERSIONS)
        if versions is None or pull_uint16_value(versions) != TLS13_VERSION:
            raise ProtocolVersion("server did not select TLS 1.3")
        if hello.legacy_version != LEGACY_VERSION:
            raise ProtocolVersion("ServerHello legacy_version is not 0x0303")
        if hello.legacy_session_id_echo != self.session_id:
            raise IllegalParameter("ServerHello does not echo our legacy_session_id")
        if hello.cipher_suite not in self.configuration.cipher_suites:
            raise IllegalParameter("server chose a cipher suite we did not offer")
        if hello.legacy_compression_method != 0:
            raise IllegalParameter("server chose a compression method")

    def _accept_psk(self, hello: ServerHello) -> None:
        selected = hello.extension(ExtensionType.PRE_SHARED_KEY)
        if selected is None:
            return
        if self.offered_session is None or pull_uint16_value(selected) != 0:
            raise IllegalParameter("server selected a PSK we did not offer")
        self.resumed = True
        self.peer_certificates = self.offered_session.peer_certificates
        self.peer_verified = self.offered_session.peer_verified
        self.alpn_protocol = self.offered_session.alpn_protocol

    def _handle_hello_retry_request(self, hello: ServerHello, raw: bytes) -> None:
        for extension_type, _ in hello.extensions:
            if extension_type not in _RETRY_REQUEST_ALLOWED:
                raise UnsupportedExtension(f"extension {extension_type} in HelloRetryRequest")
        group_data = hello.extension(ExtensionType.KEY_SHARE)
        cookie_data = hello.extension(ExtensionType.COOKIE)
        if group_data is None and cookie_data is None:
            raise IllegalParameter("HelloRetryRequest would not change the ClientHello")
        if group_data is not None:
            group = pull_uint16_value(group_data)
            if group != NamedGroup.curveSM2 or self.ephemeral_key is not None:
                raise IllegalParameter("HelloRetryRequest asks for a group we cannot or already did send")
            self.ephemeral_key = generate_ephemeral_key(self.configuration.random)
        if cookie_data is not None:
            self.cookie = pull_cookie(cookie_data)
        self.retry_suite = CipherSuite(hello.cipher_suite)
        state = self.hash_before.copy()
        self.transcript.restart_after_retry(state.digest(), raw)
        if self.configuration.middlebox_compatibility:
            self.writer.write_change_cipher_spec()
        self.key_schedule = None
        self._send_client_hello()
        self.state = ClientState.EXPECT_SERVER_HELLO_AFTER_RETRY

    # encrypted server flight

    def _handle_encrypted_extensions(self, raw: bytes) -> None:
        message = pull_encrypted_extensions(Buffer(raw))
        for extension_type, data in message.extensions:
            if extension_type not in self.offered_extensions:
                raise UnsupportedExtension(f"unsolicited extension {extension_type} in EncryptedExtensions")
            if extension_type not in _ENCRYPTED_EXTENSIONS_ALLOWED:
                raise IllegalParameter(f"extension {extension_type} is not allowed in EncryptedExtensions")
            if extension_type == ExtensionType.SERVER_NAME and data:
                raise DecodeError("server_name acknowledgement is not empty")
            if extension_type == ExtensionType.APPLICATION_LAYER_PROTOCOL_NEGOTIATION:
                self.alpn_protocol = self._selected_alpn(data)
        if not self.resumed:
            self.state = ClientState.EXPECT_CERTIFICATE_REQUEST_OR_CERTIFICATE
        elif self.configuration.accept_certificate_request_in_psk:
            self.state = ClientState.EXPECT_CERTIFICATE_REQUEST_OR_FINISHED
        else:
            self.state = ClientState.EXPECT_FINISHED

    def _selected_alpn(self, data: bytes) -> str:
        names = pull_alpn(data)
        if len(names) != 1 or names[0] not in self.configuration.alpn_protocols:
            raise IllegalParameter("server selected an ALPN protocol we did not offer")
        return names[0]

    def _handle_certificate_request(self, raw: bytes) -> None:
        self.certificate_request = _pull_in_handshake_certificate_request(raw)
        self.state = ClientState.EXPECT_CERTIFICATE

    def _handle_certificate_request_in_psk_handshake(self, raw: bytes) -> None:
        """GmSSL's resumption asks for a certificate (module docstring); answered as in a full handshake."""
        self.certificate_request = _pull_in_handshake_certificate_request(raw)
        self.state = ClientState.EXPECT_FINISHED

    def _handle_certificate(self, raw: bytes) -> None:
        message = pull_certificate(Buffer(raw))
        if message.certificate_request_context:
            raise IllegalParameter("server Certificate has a request context")
        if not message.certificate_list:
            raise DecodeError("server sent no certificate")
        chain = parse_certificate_chain([entry.cert_data for entry in message.certificate_list])
        config = self.configuration
        if config.verify_peer:
            assert config.trust_store is not None
            verify_chain(chain, config.trust_store, Role.SERVER_SIGN, config, config.server_name)
            self.peer_verified = True
        self.peer_certificates = chain
        self.state = ClientState.EXPECT_CERTIFICATE_VERIFY

    def _handle_certificate_verify(self, raw: bytes) -> None:
        self.check_peer_certificate_verify(
            raw, SERVER_CERTIFICATE_VERIFY_CONTEXT, "server signed with a scheme we did not offer"
        )
        self.state = ClientState.EXPECT_FINISHED

    def _handle_finished(self, raw: bytes) -> None:
        assert self.cipher_suite is not None and self.key_schedule is not None
        assert self.server_handshake_secret is not None
        self.check_finished(pull_finished(Buffer(raw), HASH_LENGTH), self.server_handshake_secret)
        client_app, server_app, exporter = self.key_schedule.application_traffic_secrets(
            self.transcript.digest()
        )
        self.log_application_secrets(client_app, server_app, exporter)
        self._send_client_flight()
        client_application, server_application = Secret(client_app), Secret(server_app)
        self.install_read_keys(server_application)
        self.install_write_keys(client_application)
        self.secrets = TrafficSecrets(
            cipher_suite=self.cipher_suite,
            client_application=client_application,
            server_application=server_application,
            exporter=exporter,
            resumption_master=self.key_schedule.resumption_master_secret(self.transcript.digest()),
        )
        self.state = ClientState.POST_HANDSHAKE
        self.report_complete(
            server_name=self.configuration.server_name,
            session_resumed=self.resumed,
            signature_scheme=None if self.resumed else SignatureScheme.sm2sig_sm3,
            certificate_requested=self.certificate_request is not None,
        )

    def _send_client_flight(self) -> None:
        config = self.configuration
        if config.middlebox_compatibility and self.retry_suite is None:
            self.writer.write_change_cipher_spec()
        assert self.client_handshake_secret is not None
        self.install_write_keys(self.client_handshake_secret)
        request = self.certificate_request
        if request is not None:
            credential = config.credential
            schemes_data = find_extension(request.extensions, ExtensionType.SIGNATURE_ALGORITHMS)
            assert schemes_data is not None
            usable = credential is not None and SignatureScheme.sm2sig_sm3 in pull_uint16_list(
                schemes_data, 2
            )
            entries = (
                [CertificateEntry(der) for der in credential.certificate_ders]
                if usable and credential
                else []
            )
            self.send_message(
                push_certificate, CertificateMessage(request.certificate_request_context, entries)
            )
            if entries:
                assert credential is not None
                signature = sign_certificate_verify(
                    credential.private_key,
                    CLIENT_CERTIFICATE_VERIFY_CONTEXT,
                    self.transcript.digest(),
                    config.sm2_signature_id,
                )
                self.send_message(
                    push_certificate_verify, CertificateVerify(SignatureScheme.sm2sig_sm3, signature)
                )
        self.send_finished(self.client_handshake_secret)

    # (state, message type) -> handler; any other pair is an unexpected_message (Handshake.handle_message)
    dispatch: ClassVar[dict[tuple[Any, int], Handler]] = {
        (ClientState.EXPECT_SERVER_HELLO, HandshakeType.SERVER_HELLO): _handle_server_hello,
        (ClientState.EXPECT_SERVER_HELLO_AFTER_RETRY, HandshakeType.SERVER_HELLO): _handle_server_hello,
        (
            ClientState.EXPECT_ENCRYPTED_EXTENSIONS,
            HandshakeType.ENCRYPTED_EXTENSIONS,
        ): _handle_encrypted_extensions,
        (
            ClientState.EXPECT_CERTIFICATE_REQUEST_OR_CERTIFICATE,
            HandshakeType.CERTIFICATE_REQUEST,
        ): _handle_certificate_request,
        (
            ClientState.EXPECT_CERTIFICATE_REQUEST_OR_CERTIFICATE,
            HandshakeType.CERTIFICATE,
        ): _handle_certificate,
        (ClientState.EXPECT_CERTIFICATE, HandshakeType.CERTIFICATE): _handle_certificate,
        (ClientState.EXPECT_CERTIFICATE_VERIFY, HandshakeType.CERTIFICATE_VERIFY): _handle_certificate_verify,
        (ClientState.EXPECT_FINISHED, HandshakeType.FINISHED): _handle_finished,
        (
            ClientState.EXPECT_CERTIFICATE_REQUEST_OR_FINISHED,
            HandshakeType.CERTIFICATE_REQUEST,
        ): _handle_certificate_request_in_psk_handshake,
        (ClientState.EXPECT_CERTIFICATE_REQUEST_OR_FINISHED, HandshakeType.FINISHED): _handle_finished,
    }


def _pull_in_handshake_certificate_request(raw: bytes) -> CertificateRequest:
    request = pull_certificate_request(Buffer(raw))
    if request.certificate_request_context:
        raise IllegalParameter("in-handshake CertificateRequest with a request context")
    if find_extension(request.extensions, ExtensionType.SIGNATURE_ALGORITHMS) is None:
        raise MissingExtension("CertificateRequest without signature_algorithms")
    return request
