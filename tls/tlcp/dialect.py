"""A TLCP client's view of its server's dialect: recognition, the retry rule, and per-endpoint memory.

GB/T 38636-2020 leaves room that the deployed stacks fill differently (`PeerProfile`): the form of the
ECDHE ClientKeyExchange (6.4.5.8), what a CertificateVerify signs (6.4.5.9) and which certificates a
client sends with an ECC suite.  A server rejects the forms of another dialect, so a client must send
the forms its server expects.  Nothing the client sends before ServerHelloDone differs, so the client
commits only there, after the whole server flight, which reveals the dialect (seen live and in the
recordings of ../shared/tlcp):

=========================  ==================================  ====================  ================
server flight              Tongsuo 8.5 / BabaSSL 8.3 (NTLS)    GmSSL 3.x             smgate
=========================  ==================================  ====================  ================
CertificateRequest types   rsa_sign, ecdsa_sign (``01 40``)    ecdsa_sign (``40``)   ``40`` (standard
                                                                                     profile) or
                                                                                     ``01 40``
ServerHello                32-byte session ID, no extension    empty session ID,     session ID, SNI
                                                               SNI acknowledged      acknowledged
=========================  ==================================  ====================  ================

The CertificateRequest types decide (`recognise_dialect`): ``rsa_sign`` listed means Tongsuo's
forms, ``ecdsa_sign`` alone GmSSL's; smgate accepts every form, so either is right for it.  Without a
CertificateRequest (an ECC suite without client authentication) nothing dialect-specific is sent and
there is nothing to choose.

Where a server's flight misleads (a stack not listed above), the connector that owns the I/O
(`tls.tlcp.aio.tlcp_connect`) retries once on a new connection after a *dialect-shaped* failure
(`is_dialect_shaped`): the server refused our flight (an alert from `DIALECT_ALERTS`, or it closed
without one) after we had sent dialect-specific forms.  `retry_dialect` picks the dialect that differs
in what the server most likely refused, and `DialectCache` remembers per endpoint what a retry found,
so only the first connection to such an endpoint pays the extra handshake.  Nothing here does I/O or
reads a clock: times are passed in.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from .alerts import AlertDescription
from .config import PeerProfile
from .messages import CertificateRequest, CertificateType, HandshakeType
from .suites import KeyExchange

#: The dialects a client can send (`PeerProfile.AUTO` chooses among them).
DIALECTS = (PeerProfile.STANDARD, PeerProfile.GMSSL, PeerProfile.TONGSUO)


class DialectSource(Enum):
    """How the dialect of a handshake was chosen."""

    #: the configuration named it (a fixed profile)
    CONFIGURED = "configured"
    #: read from the server's flight (`recognise_dialect`)
    RECOGNISED = "recognised"
    #: chosen by `retry_dialect` after the first attempt failed in a dialect-shaped way
    RETRIED = "retried"
    #: found by a retry on an earlier connection; `DialectCache` pins it for the endpoint
    REMEMBERED = "remembered"


@dataclass(frozen=True, slots=True)
class DialectChoice:
    """The dialect whose forms a handshake sent, how it was chosen, and on what evidence."""

    dialect: PeerProfile
    source: DialectSource
    evidence: str

    def __str__(self) -> str:
        evidence = f": {self.evidence}" if self.evidence else ""
        return f"{self.dialect.value} ({self.source.value}{evidence})"


def recognise_dialect(request: CertificateRequest) -> DialectChoice:
    """The dialect a server's CertificateRequest reveals (see the module docstring)."""
    types = set(request.certificate_types)
    if CertificateType.RSA_SIGN in types:
        return DialectChoice(
            PeerProfile.TONGSUO,
            DialectSource.RECOGNISED,
            "CertificateRequest lists rsa_sign beside ecdsa_sign, as Tongsuo/BabaSSL do",
        )
    if types == {CertificateType.ECDSA_SIGN}:
        return DialectChoice(
            PeerProfile.GMSSL,
            DialectSource.RECOGNISED,
            "CertificateRequest lists ecdsa_sign only, as GmSSL does",
        )
    listed = ", ".join(_certificate_type_name(value) for value in request.certificate_types)
    return DialectChoice(
        PeerProfile.STANDARD,
        DialectSource.RECOGNISED,
        f"CertificateRequest types {listed} match no known stack: GB/T 38636-2020 forms",
    )


def _certificate_type_name(value: int) -> str:
    try:
        return CertificateType(value).name.lower()
    except ValueError:
        return str(value)


@dataclass(slots=True)
class ClientProgress:
    """What a client handshake has sent, kept by the connection to explain a failure afterwards."""

    #: the forms of our flight, once a dialect-specific message is in it (None: nothing differed)
    dialect: DialectChoice | None = None
    #: the key exchange of the negotiated suite
    key_exchange: KeyExchange | None = None
    #: the handshake messages of our last flight (Certificate ... Finished), in order
    flight: tuple[HandshakeType, ...] = ()


#: Alerts a server sends when it cannot parse or check forms of another dialect: Tongsuo answers a
#: vector-form ECDHE ClientKeyExchange with decode_error, GmSSL a client Certificate with the
#: encryption certificate in it (ECC suites) with bad_certificate; others report the same refusals
#: as the neighbouring codes.  A server that fails the CertificateVerify of another dialect may also
#: close without an alert (GmSSL does).
DIALECT_ALERTS = frozenset(
    {
        AlertDescription.unexpected_message,
        AlertDescription.bad_record_mac,
        AlertDescription.handshake_failure,
        AlertDescription.bad_certificate,
        AlertDescription.unsupported_certificate,
        AlertDescription.certificate_unknown,
        AlertDescription.illegal_parameter,
        AlertDescription.decode_error,
        AlertDescription.decrypt_error,
        AlertDescription.internal_error,
    }
)

_DIALECT_ALERT_NAMES = frozenset(alert.name for alert in DIALECT_ALERTS)

#: Refusals of the client Certificate; BabaSSL answers a sign-only ECC certificate list with
#: handshake_failure ("peer did not return a certificate").
_CERTIFICATE_ALERTS = frozenset(
    {
        "bad_certificate",
        "unsupported_certificate",
        "certificate_unknown",
        "unknown_ca",
        "certificate_expired",
        "handshake_failure",
    }
)

_MESSAGE_NAMES = {
    HandshakeType.CERTIFICATE: "Certificate",
    HandshakeType.CLIENT_KEY_EXCHANGE: "ClientKeyExchange",
    HandshakeType.CERTIFICATE_VERIFY: "CertificateVerify",
    HandshakeType.FINISHED: "Finished",
}


def is_dialect_shaped(progress: ClientProgress | None, alert: str | None, alert_sent: bool | None) -> bool:
    """Whether a failed client handshake may have failed on the dialect of its forms.

    True when our flight carried dialect-specific forms and the server refused it: it sent an alert
    from `DIALECT_ALERTS` or closed the connection without one (`alert` None, `alert_sent` None).
    Our own alerts (our verdict on the server) and failures before our flight are never dialect-shaped.
    """
    if progress is None or progress.dialect is None or not progress.flight:
        return False
    if alert is None:
        return alert_sent is None
    return alert_sent is False and alert in _DIALECT_ALERT_NAMES


def retry_dialect(failed: PeerProfile, alert: str | None, key_exchange: KeyExchange | None) -> PeerProfile:
    """The dialect to try after `failed` was refused with `alert` (None: closed without one).

    The three dialects differ in two places: the ECDHE ClientKeyExchange encoding (Tongsuo's bare
    parameters against the vector of the standard and GmSSL) and the CertificateVerify / ECC client
    Certificate (GmSSL against the standard and Tongsuo).  A decode_error after an ECDHE exchange
    points at the encoding, so the retry flips it; anything else points at the signed data or the
    certificate list, so the retry flips that.
    """
    if key_exchange is KeyExchange.ECDHE and alert == AlertDescription.decode_error.name:
        return PeerProfile.STANDARD if failed is PeerProfile.TONGSUO else PeerProfile.TONGSUO
    return PeerProfile.STANDARD if failed is PeerProfile.GMSSL else PeerProfile.GMSSL


def rejected_message(progress: ClientProgress, alert: str | None) -> str:
    """Which message of our flight the server most likely refused, in words for an error message."""
    flight = progress.flight
    if (
        alert == AlertDescription.decode_error.name
        and progress.key_exchange is KeyExchange.ECDHE
        and HandshakeType.CLIENT_KEY_EXCHANGE in flight
    ):
        return "the ClientKeyExchange (the encoding of the ECDHE parameters)"
    if alert in _CERTIFICATE_ALERTS and HandshakeType.CERTIFICATE in flight:
        return "the Certificate (which certificates a client sends)"
    if alert in (None, AlertDescription.decrypt_error.name) and HandshakeType.CERTIFICATE_VERIFY in flight:
        return "the CertificateVerify (what the signature covers)"
    return "our flight (" + ", ".join(_MESSAGE_NAMES.get(message, message.name) for message in flight) + ")"


def describe_refusal(progress: ClientProgress | None, alert: str | None) -> str:
    """One clause for a client handshake error: what we sent in which dialect, what was refused.

    Empty when the failure came before any dialect-specific message.
    """
    if progress is None or progress.dialect is None or not progress.flight:
        return ""
    answer = f"answered with {alert}" if alert else "closed without an alert"
    return (
        f"the server {answer} after our flight in dialect {progress.dialect}; "
        f"it most likely refused {rejected_message(progress, alert)}"
    )


Endpoint = tuple[str, int, str | None]
"""(host, port, server name) as dialled: one server in the sense of the cache."""


@dataclass
class DialectStats:
    """Counters for metrics: handshakes per (dialect, source), retries and how they ended."""

    handshakes: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: int = 0
    retries_succeeded: int = 0


@dataclass(frozen=True, slots=True)
class _Entry:
    choice: DialectChoice
    learned_at: datetime


class DialectCache:
    """Per-endpoint memory of the dialect that completed a handshake: LRU, bounded, with a lifetime.

    `pinned` returns only what a retry found (sources RETRIED and REMEMBERED): a dialect the server's
    flight revealed is revealed again on every handshake for free, and re-reading it follows a server
    that changed stacks, while one found by retrying would cost the extra handshake again.  An entry
    expires `lifetime` after the last handshake that used it; a pinned dialect that stops working is
    replaced by the retry that follows.  Times are passed in by the caller.
    """

    def __init__(self, max_size: int = 1024, lifetime: timedelta = timedelta(hours=1)) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self.max_size = max_size
        self.lifetime = lifetime
        self.stats = DialectStats()
        self._entries: OrderedDict[Endpoint, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, endpoint: Endpoint, now: datetime) -> DialectChoice | None:
        """What last worked for `endpoint`, unless it expired (then it is dropped)."""
        entry = self._entries.get(endpoint)
        if entry is None:
            return None
        if not entry.learned_at <= now < entry.learned_at + self.lifetime:
            del self._entries[endpoint]
            return None
        self._entries.move_to_end(endpoint)
        return entry.choice

    def pinned(self, endpoint: Endpoint, now: datetime) -> DialectChoice | None:
        """The dialect to start with for `endpoint`: one a retry found, else None (recognise it)."""
        choice = self.lookup(endpoint, now)
        if choice is None or choice.source not in (DialectSource.RETRIED, DialectSource.REMEMBERED):
            return None
        return choice

    def remember(self, endpoint: Endpoint, choice: DialectChoice, now: datetime) -> None:
        """Record the dialect of a completed handshake; the entry lives `lifetime` from now."""
        self.stats.handshakes[(choice.dialect.value, choice.source.value)] += 1
        self._entries[endpoint] = _Entry(choice, now)
        self._entries.move_to_end(endpoint)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def forget(self, endpoint: Endpoint) -> None:
        self._entries.pop(endpoint, None)
