"""TLCP servers that speak one dialect strictly, emulating GmSSL 3.x and Tongsuo 8.5 / BabaSSL 8.3.

smgate's own server accepts every client form, so it cannot show that a client chose the right
dialect, and no GmSSL runs in CI.  These servers are smgate's engine with a handshake that keeps the
peers' server flight, as the recordings in ../shared/tlcp show it, and refuses what those peers
refuse, the way they were seen refusing it live:

================================  ==================================  ==================================
                                  GmSSL 3.x (`GMSSL_SERVER`)          Tongsuo/BabaSSL (`TONGSUO_SERVER`)
================================  ==================================  ==================================
CertificateRequest                ecdsa_sign; the CA names            rsa_sign, ecdsa_sign; the CA names
ServerHello                       empty session ID, SNI acknowledged  32-byte session ID
ECDHE ClientKeyExchange           opaque<2> vector only, else         bare ECParameters only, else
                                  decode_error                        decode_error ("length mismatch")
CertificateVerify                 over the raw messages, else closes  over SM3(messages), else
                                  without an alert                    decrypt_error
ECC client Certificate            sign cert + chain; an encryption    sign and enc certificates, else
                                  cert in it: bad_certificate         handshake_failure ("peer did not
                                                                      return a certificate")
================================  ==================================  ==================================

`MISLEADING_SERVERS` look like one stack and expect the forms of another, so that a client's
recognition is wrong and only its retry can succeed.

`DialectServer` runs one over asyncio streams, echoing application data, and records what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from certs import split_sign_enc
from tests.interop.babassl import NTLSCertFiles
from tests.interop.identities import PKI
from tls.tlcp import (
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
from tls.tlcp.alerts import BadCertificate, DecodeError, DecryptError, HandshakeFailure
from tls.tlcp.buffer import Buffer
from tls.tlcp.handshake import parse_certificates
from tls.tlcp.messages import (
    HandshakeType,
    pull_certificate,
    pull_certificate_verify,
    pull_client_key_exchange,
)
from tls.tlcp.server import ServerHandshake, ServerState, verify_certificate_verify
from tls.tlcp.suites import SUITE_PARAMETERS, KeyExchange

from .recordings import GMSSL

_GMSSL_CERTS = GMSSL / "certs"

#: The GmSSL recordings' certificates (unencrypted key copies: see their README).
GMSSL_PKI = PKI(
    name="gmssl",
    ca_file=_GMSSL_CERTS / "root_ca_cert.pem",
    server_files=NTLSCertFiles(
        _GMSSL_CERTS / "server_sign_cert.pem",
        _GMSSL_CERTS / "server_sign_key_plain.pem",
        _GMSSL_CERTS / "server_enc_cert.pem",
        _GMSSL_CERTS / "server_enc_key_plain.pem",
    ),
    client_files=NTLSCertFiles(
        _GMSSL_CERTS / "client_sign_cert.pem",
        _GMSSL_CERTS / "client_sign_key_plain.pem",
        _GMSSL_CERTS / "client_enc_cert.pem",
        _GMSSL_CERTS / "client_enc_key_plain.pem",
    ),
)

#: Marks a refusal the server makes by closing the connection instead of sending an alert.
SILENT = "[closes without an alert] "


@dataclass(frozen=True)
class DialectTraits:
    """What one server stack sends in its flight and which client forms it accepts."""

    name: str
    #: the CertificateRequest types: STANDARD sends ecdsa_sign, TONGSUO rsa_sign and ecdsa_sign
    request_profile: PeerProfile
    #: the ECDHE ClientKeyExchange encoding it parses (GB/T 38636-2020 6.4.5.8 vector, or bare)
    ecdhe_params_as_vector: bool
    #: what a CertificateVerify must sign: "standard" SM3(messages) or "raw" messages
    certificate_verify_form: str
    #: ECC suites: the client Certificate is the sign certificate and its chain, no encryption cert
    ecc_sign_certificate_only: bool
    #: a CertificateVerify in the wrong form is refused by closing the connection
    silent_signature_refusal: bool
    #: issues session IDs (resumption)
    session_ids: bool


GMSSL_SERVER = DialectTraits(
    name="gmssl",
    request_profile=PeerProfile.STANDARD,
    ecdhe_params_as_vector=True,
    certificate_verify_form="raw",
    ecc_sign_certificate_only=True,
    silent_signature_refusal=True,
    session_ids=False,
)

TONGSUO_SERVER = DialectTraits(
    name="tongsuo",
    request_profile=PeerProfile.TONGSUO,
    ecdhe_params_as_vector=False,
    certificate_verify_form="standard",
    ecc_sign_certificate_only=False,
    silent_signature_refusal=False,
    session_ids=True,
)

#: GmSSL's request, the standard's forms: a client that trusts the request sends GmSSL's forms.
STANDARD_BEHIND_GMSSL_REQUEST = DialectTraits(
    name="standard-behind-gmssl-request",
    request_profile=PeerProfile.STANDARD,
    ecdhe_params_as_vector=True,
    certificate_verify_form="standard",
    ecc_sign_certificate_only=False,
    silent_signature_refusal=False,
    session_ids=True,
)

#: GmSSL's request, Tongsuo's forms (its ECDHE encoding and CertificateVerify).
TONGSUO_BEHIND_GMSSL_REQUEST = replace(
    TONGSUO_SERVER, name="tongsuo-behind-gmssl-request", request_profile=PeerProfile.STANDARD
)

MISLEADING_SERVERS = (STANDARD_BEHIND_GMSSL_REQUEST, TONGSUO_BEHIND_GMSSL_REQUEST)

#: No dialect satisfies it: GmSSL's ECC certificate list with the standard CertificateVerify.
UNSATISFIABLE_SERVER = replace(
    STANDARD_BEHIND_GMSSL_REQUEST, name="unsatisfiable", ecc_sign_certificate_only=True
)


class StrictServerHandshake(ServerHandshake):
    """`ServerHandshake` that refuses client forms outside its `DialectTraits`, then defers to the engine."""

    traits: DialectTraits

    def _handle_certificate(self, raw: bytes) -> None:
        assert self.cipher_suite is not None
        key_exchange = SUITE_PARAMETERS[self.cipher_suite].key_exchange
        certificates = parse_certificates(pull_certificate(Buffer(raw)).certificates)
        if certificates and key_exchange is KeyExchange.ECC:
            _, enc_cert, _ = split_sign_enc(certificates)
            if self.traits.ecc_sign_certificate_only and enc_cert is not None:
                raise BadCertificate(f"[{self.traits.name}] an encryption certificate in the chain")
            if not self.traits.ecc_sign_certificate_only and enc_cert is None:
                raise HandshakeFailure(f"[{self.traits.name}] peer did not return a certificate")
        super()._handle_certificate(raw)

    def _handle_client_key_exchange(self, raw: bytes) -> None:
        assert self.cipher_suite is not None
        key_exchange = SUITE_PARAMETERS[self.cipher_suite].key_exchange
        if key_exchange is KeyExchange.ECDHE:
            message = pull_client_key_exchange(Buffer(raw), key_exchange)
            if message.params_as_vector is not self.traits.ecdhe_params_as_vector:
                raise DecodeError(f"[{self.traits.name}] ClientKeyExchange length mismatch")
        super()._handle_client_key_exchange(raw)

    def _handle_certificate_verify(self, raw: bytes) -> None:
        assert self.client_sign_cert is not None
        signature = pull_certificate_verify(Buffer(raw)).signature
        try:
            form = verify_certificate_verify(
                self.client_sign_cert.sm2_public_key(),
                signature,
                self.transcript_before,
                self.transcript_hash_before,
            )
        except DecryptError:
            form = "none"
        if form != self.traits.certificate_verify_form:
            silent = SILENT if self.traits.silent_signature_refusal else ""
            raise DecryptError(f"{silent}[{self.traits.name}] CertificateVerify signature does not verify")
        super()._handle_certificate_verify(raw)

    dispatch: ClassVar[dict[tuple[Any, int], Any]] = {
        **ServerHandshake.dispatch,
        (ServerState.EXPECT_CLIENT_CERTIFICATE, HandshakeType.CERTIFICATE): _handle_certificate,
        (
            ServerState.EXPECT_CLIENT_KEY_EXCHANGE,
            HandshakeType.CLIENT_KEY_EXCHANGE,
        ): _handle_client_key_exchange,
        (ServerState.EXPECT_CERTIFICATE_VERIFY, HandshakeType.CERTIFICATE_VERIFY): _handle_certificate_verify,
    }


def strict_connection(configuration: TLCPConfiguration, traits: DialectTraits) -> TLCPConnection:
    """A server connection whose handshake is strict; the engine has no handshake hook, so the test
    replaces the one the connection made (nothing has used it yet)."""
    connection = TLCPConnection(configuration)
    handshake = StrictServerHandshake(configuration, connection._reader, connection._writer)
    handshake.traits = traits
    connection._handshake = handshake
    return connection


@dataclass
class ServedConnection:
    """What the server saw on one connection."""

    handshake: HandshakeComplete | None = None
    refusal: str | None = None
    echoed: int = 0


@dataclass
class DialectServer:
    """A strict dialect server on 127.0.0.1, echoing application data; `served` lists the connections."""

    traits: DialectTraits
    pki: PKI
    suites: tuple[CipherSuite, ...] = tuple(CipherSuite)
    client_auth: bool = False
    served: list[ServedConnection] = field(default_factory=list)
    port: int = 0

    @functools.cached_property
    def configuration(self) -> TLCPConfiguration:
        """One configuration for every connection: its session cache serves resumption."""
        return TLCPConfiguration(
            is_client=False,
            cipher_suites=self.suites,
            certificate_set=self.pki.server_set,
            client_auth=ClientAuth.REQUIRED if self.client_auth else ClientAuth.NONE,
            trust_store=self.pki.trust_store,
            session_cache=SessionCache() if self.traits.session_ids else None,
            profile=self.traits.request_profile,
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = ServedConnection()
        self.served.append(served)
        connection = strict_connection(self.configuration, self.traits)
        try:
            while data := await reader.read(65536):
                for event in connection.receive_data(data):
                    if isinstance(event, HandshakeComplete):
                        served.handshake = event
                    elif isinstance(event, ApplicationData):
                        connection.send_application_data(event.data)
                        served.echoed += len(event.data)
                    elif isinstance(event, AlertSent):
                        served.refusal = event.reason
                    elif isinstance(event, ConnectionClosed):
                        break
                if served.refusal is not None and served.refusal.startswith(SILENT):
                    writer.transport.abort()
                    return
                writer.write(connection.data_to_send())
                await writer.drain()
                if connection.closed:
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DialectServer]:
        server = await asyncio.start_server(self._serve, sock=listening_socket())
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()


def listening_socket() -> socket.socket:
    """A socket listening on 127.0.0.1 at a free port below 32768 (above it, ports collide with the
    kernel's ephemeral range for outgoing connections)."""
    for _ in range(100):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", random.randint(20000, 32000)))
        except OSError:
            sock.close()
            continue
        sock.listen(128)
        sock.setblocking(False)
        return sock
    raise OSError("no free port in 20000-32000")
