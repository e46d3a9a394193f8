"""TLCP (GB/T 38636-2020) engine: sans-I/O core plus its asyncio adapter (`tls.tlcp.aio`).

Core modules: `buffer` (wire cursor), `alerts`, `suites`, `prf`/`keys` (key
schedule), `record` (record protection), `messages` (handshake codecs),
`handshake`/`client`/`server` (state machines), `config`, `events`,
`connection` (`TLCPConnection`, the public entry point), `dialect` (a client's
recognition of its server's dialect, the retry rule and the per-endpoint cache).

Driving a connection (the caller owns all I/O)::

    conn = TLCPConnection(TLCPConfiguration(is_client=True, trust_store=trust, server_name="example"))
    conn.start_handshake()
    transport.write(conn.data_to_send())
    for event in conn.receive_data(transport.read()):
        ...  # HandshakeComplete, ApplicationData, AlertReceived, ConnectionClosed, AlertSent
    transport.write(conn.data_to_send())   # after every receive_data/send_application_data/close

`receive_data` never raises on peer input: a violation queues the fatal alert,
returns `AlertSent` and closes the connection.  Caller mistakes raise
`LocalProtocolError`.
"""

from .alerts import AlertDescription, AlertLevel, LocalProtocolError, TLCPAlert
from .config import ClientAuth, PeerProfile, SessionCache, TLCPConfiguration, TLCPSession
from .connection import TLCPConnection
from .dialect import DialectCache, DialectChoice, DialectSource
from .events import (
    AlertReceived,
    AlertSent,
    ApplicationData,
    ConnectionClosed,
    ConnectionTerminated,
    Event,
    HandshakeComplete,
)
from .suites import DEFAULT_CIPHER_SUITES, TLCP_VERSION, CipherSuite

__all__ = [
    "DEFAULT_CIPHER_SUITES",
    "TLCP_VERSION",
    "AlertDescription",
    "AlertLevel",
    "AlertReceived",
    "AlertSent",
    "ApplicationData",
    "CipherSuite",
    "ClientAuth",
    "ConnectionClosed",
    "ConnectionTerminated",
    "DialectCache",
    "DialectChoice",
    "DialectSource",
    "Event",
    "HandshakeComplete",
    "LocalProtocolError",
    "PeerProfile",
    "SessionCache",
    "TLCPAlert",
    "TLCPConfiguration",
    "TLCPConnection",
    "TLCPSession",
]
