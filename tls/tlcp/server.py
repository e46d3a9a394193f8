"""Server side of the TLCP handshake (GB/T 38636-2020 6.4.3, full and resumed).

The server sends its signing certificate, then its encryption certificate,
then the chain (6.4.5.3).  ECC suites sign `client_random || server_random ||
ASN.1Cert(enc cert)` in ServerKeyExchange and decrypt the SM2-encrypted
pre-master with the encryption key; ECDHE suites run the SM2 key exchange
with the server as initiator A and always request client certificates,
because the client's encryption key takes part in the exchange.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Any, ClassVar

from certs import Certificate, Role, SM2CertificateSet, split_sign_enc
from tls.crypto import (
    CryptoError,
    InvalidKey,
    InvalidSignature,
    SM2PrivateKey,
    SM2PublicKey,
    sm2_key_exchange,
    sm3,
)

from .alerts import (
    BadCertificate,
    DecryptError,
    HandshakeFailure,
    IllegalParameter,
    InternalError,
    ProtocolVersion,
    UnexpectedMessage,
    UnrecognizedName,
)
from .buffer import Buffer
from .config import ClientAuth, PeerProfile, TLCPConfiguration, TLCPSession
from .events import HandshakeComplete
from .handshake import (
    Handler,
    Handshake,
    generate_ephemeral_key,
    parse_certificates,
    require_sm2,
    verify_chain,
)
from .keys import CLIENT_FINISHED_LABEL, PRE_MASTER_SECRET_LENGTH, SERVER_FINISHED_LABEL, derive_master_secret
from .messages import (
    COMPRESSION_NULL,
    CertificateType,
    ClientHello,
    ExtensionType,
    HandshakeType,
    ServerHello,
    ServerHelloDone,
    ServerKeyExchange,
    ecc_signed_params,
    ecdhe_signed_params,
    encode_certificate,
    encode_certificate_request,
    pull_certificate,
    pull_certificate_verify,
    pull_client_hello,
    pull_client_key_exchange,
    pull_finished,
    pull_server_name_extension,
    push_server_hello,
    push_server_hello_done,
    push_server_key_exchange,
)
from .record import RecordReader, RecordWriter
from .suites import SUITE_PARAMETERS, TLCP_VERSION, CipherSuite, KeyExchange


class ServerState(Enum):
    EXPECT_CLIENT_HELLO = auto()
    EXPECT_CLIENT_CERTIFICATE = auto()
    EXPECT_CLIENT_KEY_EXCHANGE = auto()
    EXPECT_CERTIFICATE_VERIFY = auto()
    EXPECT_CHANGE_CIPHER_SPEC = auto()
    EXPECT_FINISHED = auto()
    POST_HANDSHAKE = auto()


def verify_certificate_verify(
    public_key: SM2PublicKey, signature: bytes, handshake_messages: bytes, handshake_hash: bytes | None = None
) -> str:
    """Check a CertificateVerify signature in either known form; returns the form that verified.

    GB/T 38636-2020 6.4.5.9 defines the ecc_sm3 Signature as
    `digitally-signed struct { opaque sm3_hash[32]; }` where sm3_hash is the SM3
    hash of the handshake messages from ClientHello up to (not including) this
    message, so the signed message is SM3(handshake_messages) ("standard", also
    Tongsuo).  GmSSL signs the concatenated messages directly ("raw").  `handshake_hash`, when
    given, is SM3(handshake_messages) already computed (the running transcript hash).
    """
    if handshake_hash is None:
        handshake_hash = sm3(handshake_messages)
    try:
        public_key.verify(signature, handshake_hash)
        return "standard"
    except InvalidSignature:
        pass
    try:
        public_key.verify(signature, handshake_messages)
        return "raw"
    except InvalidSignature:
        raise DecryptError("CertificateVerify signature does not verify") from None


class ServerHandshake(Handshake):
    is_client = False

    def __init__(self, configuration: TLCPConfiguration, reader: RecordReader, writer: RecordWriter) -> None:
        super().__init__(configuration, reader, writer)
        self.state = ServerState.EXPECT_CLIENT_HELLO
        self.server_name: str | None = None
        self.certificate_set: SM2CertificateSet | None = None
        self.session_id = b""
        self.resumed = False
        self.ephemeral_key: SM2PrivateKey | None = None
        self.peer_certificates: tuple[Certificate, ...] = ()
        self.client_sign_cert: Certificate | None = None
        self.client_enc_cert: Certificate | None = None
        #: the client chain was validated against the configured trust store (an identity, not a claim)
        self.peer_verified = False
        #: which CertificateVerify form the client used ("standard" or "raw"), for diagnostics
        self.certificate_verify_form: str | None = None

    @property
    def expects_change_cipher_spec(self) -> bool:
        return self.state is ServerState.EXPECT_CHANGE_CIPHER_SPEC

    # ClientHello

    def _handle_client_hello(self, raw: bytes) -> None:
        hello = pull_client_hello(Buffer(raw))
        config = self.configuration
        if hello.version != TLCP_VERSION:
            raise ProtocolVersion("ClientHello version is not 0x0101")
        if COMPRESSION_NULL not in hello.compression_methods:
            raise IllegalParameter("client does not offer null compression")
        server_name_data = hello.extension(ExtensionType.SERVER_NAME)
        if server_name_data is not None:
            self.server_name = pull_server_name_extension(server_name_data)
        self.certificate_set = self._select_certificate_set()
        self.client_random = hello.random

        session = self._find_session(hello)
        if session is not None:
            self.cipher_suite = session.cipher_suite
        else:
            self.cipher_suite = self._choose_cipher_suite(hello)

        self.server_random = config.random(32)
        if session is not None:
            self.session_id = session.session_id
        elif config.session_cache is not None:
            self.session_id = config.random(32)
        # RFC 6066 3: an empty server_name extension acknowledges the client's SNI (GmSSL does the same)
        extensions = [(int(ExtensionType.SERVER_NAME), b"")] if server_name_data is not None else None
        self.send_message(
            push_server_hello,
            ServerHello(
                version=TLCP_VERSION,
                random=self.server_random,
                session_id=self.session_id,
                cipher_suite=int(self.cipher_suite),
                compression_method=COMPRESSION_NULL,
                extensions=extensions,
            ),
        )
        if session is not None:
            self._resume(session)
        else:
            self._send_server_flight()

    def _select_certificate_set(self) -> SM2CertificateSet:
        config = self.configuration
        if config.certificate_selector is not None:
            try:
                return config.certificate_selector(self.server_name)
            except LookupError:
                raise UnrecognizedName("no certificate for the requested server name") from None
        if config.certificate_set is None:
            raise InternalError("no server certificate set")
        return config.certificate_set

    def _find_session(self, hello: ClientHello) -> TLCPSession | None:
        config = self.configuration
        if not hello.session_id or config.session_cache is None:
            return None
        session = config.session_cache.get(hello.session_id, config.now())
        if session is None:
            return None
        if (
            session.cipher_suite not in hello.cipher_suites
            or session.cipher_suite not in config.cipher_suites
        ):
            return None
        if session.server_name != self.server_name:
            return None
        if config.client_auth is ClientAuth.REQUIRED and not session.peer_verified:
            return None
        return session

    def _choose_cipher_suite(self, hello: ClientHello) -> CipherSuite:
        offered = set(hello.cipher_suites)
        for suite in self.configuration.cipher_suites:
            if suite in offered:
                return suite
        raise HandshakeFailure("no cipher suite in common")

    def _resume(self, session: TLCPSession) -> None:
        self.resumed = True
        self.master_secret = session.master_secret
        self.peer_certificates = session.peer_certificates
        self.client_sign_cert = session.peer_sign_cert
        self.client_enc_cert = session.peer_enc_cert
        self.peer_verified = session.peer_verified
        self.install_pending_keys()
        self.send_change_cipher_spec()
        self.send_finished(SERVER_FINISHED_LABEL)
        self.state = ServerState.EXPECT_CHANGE_CIPHER_SPEC

    def _send_server_flight(self) -> None:
        assert self.cipher_suite is not None and self.certificate_set is not None
        config = self.configuration
        certificate_set = self.certificate_set
        key_exchange = SUITE_PARAMETERS[self.cipher_suite].key_exchange
        self.send_encoded(
            encode_certificate(
                (
                    certificate_set.sign_cert.der,
                    certificate_set.enc_cert.der,
                    *(cert.der for cert in certificate_set.chain),
                )
            )
        )
        if key_exchange is KeyExchange.ECDHE:
            self.ephemeral_key = generate_ephemeral_key(config.random)
            point = self.ephemeral_key.public_key().to_bytes()
            signed = ecdhe_signed_params(self.client_random, self.server_random, point)
            exchange = ServerKeyExchange(certificate_set.sign_key.sign(signed), point)
        else:
            signed = ecc_signed_params(self.client_random, self.server_random, certificate_set.enc_cert.der)
            exchange = ServerKeyExchange(certificate_set.sign_key.sign(signed))
        self.send_message(push_server_key_exchange, exchange)

        if config.client_auth is not ClientAuth.NONE or key_exchange is KeyExchange.ECDHE:
            types = [int(CertificateType.ECDSA_SIGN)]
            if config.profile is PeerProfile.TONGSUO:
                types.insert(0, int(CertificateType.RSA_SIGN))
            # GmSSL's client refuses a CertificateRequest without CA names, so always send them
            authorities = config.trust_store.ca_names_der() if config.trust_store is not None else []
            self.send_encoded(encode_certificate_request(tuple(types), tuple(authorities)))
            self.state = ServerState.EXPECT_CLIENT_CERTIFICATE
        else:
            self.state = ServerState.EXPECT_CLIENT_KEY_EXCHANGE
        self.send_message(push_server_hello_done, ServerHelloDone())

    # client flight

    def _handle_certificate(self, raw: bytes) -> None:
        assert self.cipher_suite is not None
        message = pull_certificate(Buffer(raw))
        config = self.configuration
        key_exchange = SUITE_PARAMETERS[self.cipher_suite].key_exchange
        if not message.certificates:
            if config.client_auth is ClientAuth.REQUIRED:
                raise HandshakeFailure("client certificate required")
            if key_exchange is KeyExchange.ECDHE:
                raise HandshakeFailure("ECDHE needs the client encryption certificate")
            self.state = ServerState.EXPECT_CLIENT_KEY_EXCHANGE
            return
        certificates = parse_certificates(message.certificates)
        sign_cert, enc_cert, rest = split_sign_enc(certificates)
        if sign_cert is None:
            raise BadCertificate("no client signing certificate")
        if key_exchange is KeyExchange.ECDHE and enc_cert is None:
            raise HandshakeFailure("ECDHE needs the client encryption certificate")
        require_sm2(sign_cert, enc_cert)
        if config.verify_peer and config.trust_store is not None:
            now = config.now()
            verify_chain(sign_cert, rest, config.trust_store, Role.CLIENT_SIGN, now)
            if enc_cert is not None:
                verify_chain(enc_cert, rest, config.trust_store, Role.CLIENT_ENC, now)
            self.peer_verified = True
        self.peer_certificates = tuple(certificates)
        self.client_sign_cert = sign_cert
        self.client_enc_cert = enc_cert
        self.state = ServerState.EXPECT_CLIENT_KEY_EXCHANGE

    def _handle_client_key_exchange(self, raw: bytes) -> None:
        assert self.cipher_suite is not None and self.certificate_set is not None
        config = self.configuration
        key_exchange = SUITE_PARAMETERS[self.cipher_suite].key_exchange
        message = pull_client_key_exchange(Buffer(raw), key_exchange)
        if key_exchange is KeyExchange.ECC:
            assert message.encrypted_pre_master_secret is not None
            # RFC 5246 7.4.7.1 countermeasure, as Tongsuo applies to GB/T 38636-2020 6.4.5.8: a
            # failed decryption or a wrong length/version continues with a random pre-master, so
            # the failure only shows as a Finished mismatch and the server is no decryption oracle.
            fallback = config.random(PRE_MASTER_SECRET_LENGTH)
            try:
                decrypted = self.certificate_set.enc_key.decrypt(message.encrypted_pre_master_secret)
            except CryptoError:  # malformed DER, C1 off the curve, C3 mismatch: all alike
                decrypted = b""
            valid = len(decrypted) == PRE_MASTER_SECRET_LENGTH and decrypted[:2] == TLCP_VERSION.to_bytes(
                2, "big"
            )
            pre_master_secret = decrypted if valid else fallback
        else:
            assert message.ecdh_public is not None and self.ephemeral_key is not None
            if self.client_enc_cert is None:
                raise HandshakeFailure("ECDHE needs the client encryption certificate")
            try:
                client_ephemeral = SM2PublicKey.from_bytes(message.ecdh_public)
            except InvalidKey:
                raise IllegalParameter("client ephemeral key is not a valid SM2 point") from None
            try:
                pre_master_secret = sm2_key_exchange(
                    initiator=True,
                    static_key=self.certificate_set.enc_key,
                    ephemeral_key=self.ephemeral_key,
                    peer_static=self.client_enc_cert.sm2_public_key(),
                    peer_ephemeral=client_ephemeral,
                    key_length=PRE_MASTER_SECRET_LENGTH,
                ).key
            except CryptoError:
                raise IllegalParameter("SM2 key exchange failed") from None
        self.master_secret = derive_master_secret(pre_master_secret, self.client_random, self.server_random)
        self.install_pending_keys()
        if self.client_sign_cert is not None:
            self.state = ServerState.EXPECT_CERTIFICATE_VERIFY
        else:
            self.state = ServerState.EXPECT_CHANGE_CIPHER_SPEC

    def _handle_certificate_verify(self, raw: bytes) -> None:
        assert self.client_sign_cert is not None
        message = pull_certificate_verify(Buffer(raw))
        self.certificate_verify_form = verify_certificate_verify(
            self.client_sign_cert.sm2_public_key(),
            message.signature,
            self.transcript_before,
            self.transcript_hash_before,
        )
        self.state = ServerState.EXPECT_CHANGE_CIPHER_SPEC

    # ChangeCipherSpec + Finished

    def handle_change_cipher_spec(self) -> None:
        if self.state is not ServerState.EXPECT_CHANGE_CIPHER_SPEC:
            raise UnexpectedMessage("unexpected ChangeCipherSpec")
        self.reader.change_cipher_spec()
        self.state = ServerState.EXPECT_FINISHED

    def _handle_finished(self, raw: bytes) -> None:
        assert self.cipher_suite is not None
        self.check_finished(pull_finished(Buffer(raw)), CLIENT_FINISHED_LABEL)
        config = self.configuration
        if not self.resumed:
            self.send_change_cipher_spec()
            self.send_finished(SERVER_FINISHED_LABEL)
            if self.session_id and config.session_cache is not None:
                self.session = TLCPSession(
                    session_id=self.session_id,
                    cipher_suite=self.cipher_suite,
                    master_secret=self.master_secret,
                    server_name=self.server_name,
                    peer_certificates=self.peer_certificates,
                    peer_sign_cert=self.client_sign_cert,
                    peer_enc_cert=self.client_enc_cert,
                    created_at=config.now(),
                    peer_verified=self.peer_verified,
                )
                config.session_cache.put(self.session)
        self.state = ServerState.POST_HANDSHAKE
        self.complete = True
        self.events.append(
            HandshakeComplete(
                cipher_suite=self.cipher_suite,
                server_name=self.server_name,
                peer_certificates=self.peer_certificates,
                peer_sign_cert=self.client_sign_cert,
                peer_enc_cert=self.client_enc_cert,
                session_id=self.session_id,
                session_resumed=self.resumed,
                peer_verified=self.peer_verified,
            )
        )

    # (state, message type) -> handler; any other pair is an unexpected_message (Handshake.handle_message)
    dispatch: ClassVar[dict[tuple[Any, int], Handler]] = {
        (ServerState.EXPECT_CLIENT_HELLO, HandshakeType.CLIENT_HELLO): _handle_client_hello,
        (ServerState.EXPECT_CLIENT_CERTIFICATE, HandshakeType.CERTIFICATE): _handle_certificate,
        (
            ServerState.EXPECT_CLIENT_KEY_EXCHANGE,
            HandshakeType.CLIENT_KEY_EXCHANGE,
        ): _handle_client_key_exchange,
        (
            ServerState.EXPECT_CERTIFICATE_VERIFY,
            HandshakeType.CERTIFICATE_VERIFY,
        ): _handle_certificate_verify,
        (ServerState.EXPECT_FINISHED, HandshakeType.FINISHED): _handle_finished,
    }
