"""TLS 1.3 with ShangMi suites (RFC 8998): sans-I/O core plus its asyncio adapter (`tls.tls13.aio`).

A sibling of `tls.tlcp`, not a TLS stack for every suite: it speaks TLS 1.3 only, with
TLS_SM4_GCM_SM3 / TLS_SM4_CCM_SM3, curveSM2 ECDHE and sm2sig_sm3, which is what Tongsuo, BabaSSL,
GmSSL 3 and MOSN deploy and what Python's ssl (OpenSSL 3.0) cannot do.

Core modules: `suites` (code points), `alerts`, `keyschedule` (HKDF-SM3 key schedule), `record`
(record protection), `messages` (handshake codecs), `handshake`/`client`/`server` (state machines),
`tickets` (sealed session tickets), `config`, `events`, `connection` (`TLS13Connection`).

Driving a connection (the caller owns all I/O), exactly as `TLCPConnection`::

    conn = TLS13Connection(TLS13Configuration(is_client=True, trust_store=trust, server_name="example"))
    conn.start_handshake()
    transport.write(conn.data_to_send())
    for event in conn.receive_data(transport.read()):
        ...  # HandshakeComplete, ApplicationData, SessionTicketReceived, KeyUpdated, AlertReceived, ...
    transport.write(conn.data_to_send())   # after every receive_data/send_application_data/close

`receive_data` never raises on peer input: a violation queues the alert, returns `AlertSent` and
closes the connection.  Caller mistakes raise `LocalProtocolError`.
"""

from .alerts import AlertDescription, AlertLevel, LocalProtocolError, TLS13Alert
from .config import (
    ACCEPTED_SM2_IDS,
    RFC8998_SM2_ID,
    ClientAuth,
    SM2Credential,
    TLS13Configuration,
    TLS13Session,
)
from .connection import TLS13Connection
from .events import (
    AlertReceived,
    AlertSent,
    ApplicationData,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    KeyUpdated,
    SessionTicketReceived,
)
from .suites import DEFAULT_CIPHER_SUITES, TLS13_VERSION, CipherSuite, NamedGroup, SignatureScheme
from .tickets import SessionTicketKeys

__all__ = [
    "ACCEPTED_SM2_IDS",
    "DEFAULT_CIPHER_SUITES",
    "RFC8998_SM2_ID",
    "TLS13_VERSION",
    "AlertDescription",
    "AlertLevel",
    "AlertReceived",
    "AlertSent",
    "ApplicationData",
    "CipherSuite",
    "ClientAuth",
    "ConnectionClosed",
    "Event",
    "HandshakeComplete",
    "KeyUpdated",
    "LocalProtocolError",
    "NamedGroup",
    "SM2Credential",
    "SessionTicketKeys",
    "SessionTicketReceived",
    "SignatureScheme",
    "TLS13Alert",
    "TLS13Configuration",
    "TLS13Connection",
    "TLS13Session",
]
