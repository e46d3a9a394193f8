"""Client side of the TLCP handshake (GB/T 38636-2020 6.4.3, full and resumed).

Full handshake::

    ClientHello           -->
                          <--  ServerHello, Certificate, ServerKeyExchange,
                               [CertificateRequest], ServerHelloDone
    [Certificate], ClientKeyExchange, [CertificateVerify],
    ChangeCipherSpec, Finished  -->
                          <--  ChangeCipherSpec, Finished

Resumed (session ID): ClientHello --> <-- ServerHello, CCS, Finished; CCS, Finished -->.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Any, ClassVar

from certs import Certificate, Role
from tls.crypto import CryptoError, InvalidKey, InvalidSignature, SM2PublicKey, sm2_key_exchange

from .alerts import (
    BadCertificate,
    DecodeError,
    DecryptError,
    HandshakeFailure,
    IllegalParameter,
    InternalError,
    LocalProtocolError,
    ProtocolVersion,
    UnexpectedMessage,
    UnsupportedExtension,
)
from .buffer import Buffer
from .config import PeerProfile, TLCPConfiguration, TLCPSession
from .events import HandshakeComplete
from .handshake import (
    Handler,
    Handshake,
    generate_ephemeral_key,
    parse_certificates,
    require_sm2,
    verify_chain,
)
from .keys import (
    CLIENT_FINISHED_LABEL,
    PRE_MASTER_SECRET_LENGTH,
    SERVER_FINISHED_LABEL,
    derive_master_secret,
)
from .messages import (
    COMPRESSION_NULL,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    ClientKeyExchange,
    ExtensionType,
    HandshakeType,
    ecc_signed_params,
    ecdhe_signed_params,
    encode_certificate,
    pull_certificate,
    pull_certificate_request,
    pull_finished,
    pull_server_hello,
    pull_server_hello_done,
    pull_server_key_exchange,
    push_certificate_verify,
    push_client_hello,
    push_client_key_exchange,
    push_server_name_extension,
)
from .record import RecordReader, RecordWriter
from .suites import (
    EMPTY_RENEGOTIATION_INFO_SCSV,
    SUITE_PARAMETERS,
    TLCP_VERSION,
    CipherSuite,
    KeyExchange,
)


class ClientState(Enum):
    START = auto()
    EXPECT_SERVER_HELLO = auto()
    EXPECT_CERTIFICATE = auto()
    EXPECT_SERVER_KEY_EXCHANGE = auto()
    EXPECT_CERTIFICATE_REQUEST_OR_SERVER_HELLO_DONE = auto()
    EXPECT_SERVER_HELLO_DONE = auto()
    EXPECT_CHANGE_CIPHER_SPEC = auto()
    EXPECT_FINISHED = auto()
    POST_HANDSHAKE = auto()


class ClientHandshake(Handshake):
    is_client = True

    def __init__(self, configuration: TLCPConfiguration, reader: RecordReader, writer: RecordWriter) -> None:
        super().__init__(configuration, reader, writer)
        self.state = ClientState.START
        self.offered_suites: list[CipherSuite] = []
        self.offered_session: TLCPSession | None = None
        self.resumed = False
        self.session_id = b""
        self.peer_certificates: tuple[Certificate, ...] = ()
        self.server_sign_cert: Certificate | None = None
        self.server_enc_cert: Certificate | None = None
        #: the server chain was validated against the configured trust store
        self.peer_verified = False
        self.server_ephemeral: SM2PublicKey | None = None
        self.certificate_request: CertificateRequest | None = None

    @property
    def expects_change_cipher_spec(self) -> bool:
        return self.state is ClientState.EXPECT_CHANGE_CIPHER_SPEC

    # ClientHello

    def start(self) -> None:
        if self.state is not ClientState.START:
            raise LocalProtocolError("handshake already started")
        config = self.configuration
        suites = [
            suite
            for suite in config.cipher_suites
            if config.certificate_set is not None or SUITE_PARAMETERS[suite].key_exchange is KeyExchange.ECC
        ]
        if not suites:
            raise LocalProtocolError("no usable cipher suite (ECDHE needs a client certificate set)")
        self.offered_suites = suites
        session = config.session
        if (
            session is not None
            and session.cipher_suite in suites
            and session.server_name == config.server_name
        ):
            self.offered_session = session
        cipher_suites = [int(suite) for suite in suites]
        if config.profile is PeerProfile.TONGSUO:
            cipher_suites.append(EMPTY_RENEGOTIATION_INFO_SCSV)
        extensions = None
        if config.server_name is not None:
            extensions = [(int(ExtensionType.SERVER_NAME), push_server_name_extension(config.server_name))]
        self.client_random = config.random(32)
        hello = ClientHello(
            version=TLCP_VERSION,
            random=self.client_random,
            session_id=self.offered_session.session_id if self.offered_session else b"",
            cipher_suites=cipher_suites,
            compression_methods=[COMPRESSION_NULL],
            extensions=extensions,
        )
        self.send_message(push_client_hello, hello)
        self.state = ClientState.EXPECT_SERVER_HELLO

    # server flight

    def _handle_server_hello(self, raw: bytes) -> None:
        hello = pull_server_hello(Buffer(raw))
        if hello.version != TLCP_VERSION:
            raise ProtocolVersion("ServerHello version is not 0x0101")
        if hello.cipher_suite not in self.offered_suites:
            raise IllegalParameter("server chose a cipher suite we did not offer")
        if hello.compression_method != COMPRESSION_NULL:
            raise IllegalParameter("server chose a compression method")
        for extension_type, data in hello.extensions or ():
            if extension_type != ExtensionType.SERVER_NAME or self.configuration.server_name is None:
                raise UnsupportedExtension(f"unsolicited extension {extension_type} in ServerHello")
            if data:
                raise DecodeError("server_name acknowledgement is not empty")
        self.server_random = hello.random
        self.cipher_suite = CipherSuite(hello.cipher_suite)
        self.session_id = hello.session_id
        offered = self.offered_session
        if offered is not None and hello.session_id == offered.session_id:
            if self.cipher_suite != offered.cipher_suite:
                raise IllegalParameter("resumed session with a different cipher suite")
            self.resumed = True
            self.session = offered
            self.master_secret = offered.master_secret
            self.peer_certificates = offered.peer_certificates
            self.server_sign_cert = offered.peer_sign_cert
            self.server_enc_cert = offered.peer_enc_cert
            self.peer_verified = offered.peer_verified
            self.install_pending_keys()
            self.state = ClientState.EXPECT_CHANGE_CIPHER_SPEC
        else:
            self.state = ClientState.EXPECT_CERTIFICATE

    def _handle_certificate(self, raw: bytes) -> None:
        message = pull_certificate(Buffer(raw))
        if len(message.certificates) < 2:
            raise BadCertificate("server must send its signing and encryption certificates")
        certificates = parse_certificates(message.certificates)
        sign_cert, enc_cert, chain = certificates[0], certificates[1], certificates[2:]
        require_sm2(sign_cert, enc_cert)
        config = self.configuration
        if config.verify_peer:
            assert config.trust_store is not None
            now = config.now()
            verify_chain(sign_cert, chain, config.trust_store, Role.SERVER_SIGN, now, config.server_name)
            verify_chain(enc_cert, chain, config.trust_store, Role.SERVER_ENC, now)
            self.peer_verified = True
        self.peer_certificates = tuple(certificates)
        self.server_sign_cert = sign_cert
        self.server_enc_cert = enc_cert
        self.state = ClientState.EXPECT_SERVER_KEY_EXCHANGE

    def _handle_server_key_exchange(self, raw: bytes) -> None:
        assert self.cipher_suite is not None and self.server_sign_cert is not None
        assert self.server_enc_cert is not None
        key_exchange = SUITE_PARAMETERS[self.cipher_suite].key_exchange
        message = pull_server_key_exchange(Buffer(raw), key_exchange)
        if message.ecdh_public is not None:
            try:
                self.server_ephemeral = SM2PublicKey.from_bytes(message.ecdh_public)
            except InvalidKey:
                raise IllegalParameter("server ephemeral key is not a valid SM2 point") from None
            signed = ecdhe_signed_params(self.client_random, self.server_random, message.ecdh_public)
        else:
            signed = ecc_signed_params(self.client_random, self.server_random, self.server_enc_cert.der)
        try:
            self.server_sign_cert.sm2_public_key().verify(message.signature, signed)
        except InvalidSignature:
            raise DecryptError("ServerKeyExchange signature does not verify") from None
        self.state = ClientState.EXPECT_CERTIFICATE_REQUEST_OR_SERVER_HELLO_DONE

    def _handle_certificate_request(self, raw: bytes) -> None:
        self.certificate_request = pull_certificate_request(Buffer(raw))
        self.state = ClientState.EXPECT_SERVER_HELLO_DONE

    def _handle_server_hello_done(self, raw: bytes) -> None:
        pull_server_hello_done(Buffer(raw))
        assert self.cipher_suite is not None and self.server_enc_cert is not None
        config = self.configuration
        key_exchange = SUITE_PARAMETERS[self.cipher_suite].key_exchange
        certificate_set = config.certificate_set
        if key_exchange is KeyExchange.ECDHE and self.certificate_request is None:
            raise HandshakeFailure("ECDHE server did not request the client certificates")
        sent_certificate = False
        if self.certificate_request is not None:
            ders: list[bytes] = []
            if certificate_set is not None:
                ders.append(certificate_set.sign_cert.der)
                if not (config.profile is PeerProfile.GMSSL and key_exchange is KeyExchange.ECC):
                    ders.append(certificate_set.enc_cert.der)
                ders.extend(cert.der for cert in certificate_set.chain)
                sent_certificate = True
            self.send_encoded(encode_certificate(tuple(ders)))

        server_enc_key = self.server_enc_cert.sm2_public_key()
        if key_exchange is KeyExchange.ECC:
            pre_master_secret = TLCP_VERSION.to_bytes(2, "big") + config.random(PRE_MASTER_SECRET_LENGTH - 2)
            exchange = ClientKeyExchange(
                encrypted_pre_master_secret=server_enc_key.encrypt(pre_master_secret)
            )
        else:
            if certificate_set is None or self.server_ephemeral is None:
                raise InternalError("ECDHE without client certificates or server key")
            ephemeral = generate_ephemeral_key(config.random)
            try:
                pre_master_secret = sm2_key_exchange(
                    initiator=False,
                    static_key=certificate_set.enc_key,
                    ephemeral_key=ephemeral,
                    peer_static=server_enc_key,
                    peer_ephemeral=self.server_ephemeral,
                    key_length=PRE_MASTER_SECRET_LENGTH,
                ).key
            except CryptoError:
                raise IllegalParameter("SM2 key exchange failed") from None
            exchange = ClientKeyExchange(
                ecdh_public=ephemeral.public_key().to_bytes(),
                params_as_vector=config.profile is not PeerProfile.TONGSUO,
            )
        self.send_message(push_client_key_exchange, exchange)
        self.master_secret = derive_master_secret(pre_master_secret, self.client_random, self.server_random)

        if sent_certificate:
            assert certificate_set is not None
            # GB/T 38636-2020 6.4.5.9: ecc_sm3 signs sm3_hash = SM3(handshake messages so far);
            # GmSSL signs the messages themselves.
            if config.profile is PeerProfile.GMSSL:
                signed = bytes(self.transcript)
            else:
                signed = self.transcript.digest()
            self.send_message(
                push_certificate_verify, CertificateVerify(certificate_set.sign_key.sign(signed))
            )

        self.install_pending_keys()
        self.send_change_cipher_spec()
        self.send_finished(CLIENT_FINISHED_LABEL)
        self.state = ClientState.EXPECT_CHANGE_CIPHER_SPEC

    # ChangeCipherSpec + Finished

    def handle_change_cipher_spec(self) -> None:
        if self.state is not ClientState.EXPECT_CHANGE_CIPHER_SPEC:
            raise UnexpectedMessage("unexpected ChangeCipherSpec")
        self.reader.change_cipher_spec()
        self.state = ClientState.EXPECT_FINISHED

    def _handle_finished(self, raw: bytes) -> None:
        self.check_finished(pull_finished(Buffer(raw)), SERVER_FINISHED_LABEL)
        if self.resumed:
            self.send_change_cipher_spec()
            self.send_finished(CLIENT_FINISHED_LABEL)
        elif self.session_id:
            assert self.cipher_suite is not None
            self.session = TLCPSession(
                session_id=self.session_id,
                cipher_suite=self.cipher_suite,
                master_secret=self.master_secret,
                server_name=self.configuration.server_name,
                peer_certificates=self.peer_certificates,
                peer_sign_cert=self.server_sign_cert,
                peer_enc_cert=self.server_enc_cert,
                created_at=self.configuration.now(),
                peer_verified=self.peer_verified,
            )
        self._complete()

    def _complete(self) -> None:
        assert self.cipher_suite is not None
        self.state = ClientState.POST_HANDSHAKE
        self.complete = True
        self.events.append(
            HandshakeComplete(
                cipher_suite=self.cipher_suite,
                server_name=self.configuration.server_name,
                peer_certificates=self.peer_certificates,
                peer_sign_cert=self.server_sign_cert,
                peer_enc_cert=self.server_enc_cert,
                session_id=self.session_id,
                session_resumed=self.resumed,
                peer_verified=self.peer_verified,
            )
        )

    # (state, message type) -> handler; any other pair is an unexpected_message (Handshake.handle_message)
    dispatch: ClassVar[dict[tuple[Any, int], Handler]] = {
        (ClientState.EXPECT_SERVER_HELLO, HandshakeType.SERVER_HELLO): _handle_server_hello,
        (ClientState.EXPECT_CERTIFICATE, HandshakeType.CERTIFICATE): _handle_certificate,
        (
            ClientState.EXPECT_SERVER_KEY_EXCHANGE,
            HandshakeType.SERVER_KEY_EXCHANGE,
        ): _handle_server_key_exchange,
        (
            ClientState.EXPECT_CERTIFICATE_REQUEST_OR_SERVER_HELLO_DONE,
            HandshakeType.CERTIFICATE_REQUEST,
        ): _handle_certificate_request,
        (
            ClientState.EXPECT_CERTIFICATE_REQUEST_OR_SERVER_HELLO_DONE,
            HandshakeType.SERVER_HELLO_DONE,
        ): _handle_server_hello_done,
        (
            ClientState.EXPECT_SERVER_HELLO_DONE,
            HandshakeType.SERVER_HELLO_DONE,
        ): _handle_server_hello_done,
        (ClientState.EXPECT_FINISHED, HandshakeType.FINISHED): _handle_finished,
    }
