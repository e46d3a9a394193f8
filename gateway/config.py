"""The gateway's one configuration document: frozen pydantic models under :class:`GatewayConfig`.

Vocabulary follows Envoy: *listeners* own *filter chains* (picked by a *filter chain match*) whose
terminal *network filter* is a TCP proxy or an HTTP connection manager; a *route configuration*
picks a *cluster* of *endpoints* with *health checking*, *outlier detection* and *circuit breaking*.

The document is validated once, at load. :func:`load_config` raises :class:`ConfigError` carrying every
problem with its key path (``listeners[0].tls.certificates[1].enc_key: file not found``); file paths
are resolved relative to the config file's directory and checked for existence during validation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from audit.config import AuditConfig
from gateway.fleet_config import SessionStoreConfig, SupervisorConfig
from gateway.logs.setup import LoggingConfig
from gateway.proxy_protocol_io import ProxyProtocolConfig
from tls.tlcp import CipherSuite, ClientAuth, PeerProfile
from tls.tlcp.suites import SUITE_PARAMETERS, KeyExchange
from tls.tls13 import CipherSuite as Tls13CipherSuite


class ConfigError(Exception):
    """A configuration document that cannot be used; ``errors`` lists ``path: message`` strings."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid configuration:\n" + "\n".join(f"  {e}" for e in self.errors))


def _check_file(value: Path, info: ValidationInfo) -> Path:
    base = info.context.get("base_dir") if isinstance(info.context, Mapping) else None
    path = value if value.is_absolute() or base is None else Path(base) / value
    if not path.is_file():
        raise ValueError("file not found")
    return path


#: A path to an existing file, resolved against the config file's directory.
FilePath = Annotated[Path, AfterValidator(_check_file)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
Port = Annotated[int, Field(ge=0, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Protocol(StrEnum):
    """Transport protocols a listener accepts on its one port."""

    TLCP = "tlcp"
    TLS13 = "tls1.3"
    TLS12 = "tls1.2"
    #: TLS 1.3 with the ShangMi suites of RFC 8998, on the project's engine (``tls.tls13``).
    TLS13_SM = "tls1.3-sm"
    PLAIN = "plain"


def _tlcp_suite(value: object) -> CipherSuite:
    """A TLCP cipher suite by the engine's name for it (``ECDHE_SM4_GCM_SM3``)."""
    if isinstance(value, CipherSuite):
        return value
    if isinstance(value, str) and value in CipherSuite.__members__:
        return CipherSuite[value]
    raise ValueError(
        f"unknown TLCP cipher suite {value!r}; the engine has {', '.join(CipherSuite.__members__)}"
    )


#: A ``tls.tlcp.CipherSuite``, written by name in the document.
TlcpSuite = Annotated[
    CipherSuite,
    PlainValidator(_tlcp_suite),
    PlainSerializer(lambda suite: suite.name, return_type=str),
    WithJsonSchema({"enum": list(CipherSuite.__members__), "title": "CipherSuite", "type": "string"}),
]

#: TLCP suites whose key exchange needs the client's SM2 encryption pair (GB/T 38636-2020 6.4.5.3).
ECDHE_SUITES = frozenset(s for s, p in SUITE_PARAMETERS.items() if p.key_exchange is KeyExchange.ECDHE)


SuiteT = TypeVar("SuiteT", CipherSuite, Tls13CipherSuite)

#: A listener's TLCP suites unless configured: ECDHE first, GCM first.
_DEFAULT_TLCP_SUITES = (
    CipherSuite.ECDHE_SM4_GCM_SM3,
    CipherSuite.ECC_SM4_GCM_SM3,
    CipherSuite.ECDHE_SM4_CBC_SM3,
    CipherSuite.ECC_SM4_CBC_SM3,
)


def _no_duplicates(values: tuple[SuiteT, ...]) -> tuple[SuiteT, ...]:
    dupes = sorted({v.name for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate cipher suites {dupes}")
    return values


TlcpSuiteList = Annotated[tuple[TlcpSuite, ...], AfterValidator(_no_duplicates)]


def _tls13_sm_suite(value: object) -> Tls13CipherSuite:
    """An RFC 8998 cipher suite by its IANA name (``TLS_SM4_GCM_SM3``)."""
    if isinstance(value, Tls13CipherSuite):
        return value
    if isinstance(value, str) and value in Tls13CipherSuite.__members__:
        return Tls13CipherSuite[value]
    raise ValueError(
        f"unknown RFC 8998 cipher suite {value!r}; the engine has {', '.join(Tls13CipherSuite.__members__)}"
    )


#: A ``tls.tls13.CipherSuite``, written by name in the document.
Tls13SmSuite = Annotated[
    Tls13CipherSuite,
    PlainValidator(_tls13_sm_suite),
    PlainSerializer(lambda suite: suite.name, return_type=str),
    WithJsonSchema(
        {"enum": list(Tls13CipherSuite.__members__), "title": "Tls13SmCipherSuite", "type": "string"}
    ),
]
Tls13SmSuiteList = Annotated[tuple[Tls13SmSuite, ...], AfterValidator(_no_duplicates)]
#: A ``tls1.3-sm`` listener's suites unless configured: GCM first, as Tongsuo, BabaSSL and GmSSL order them.
_DEFAULT_TLS13_SM_SUITES = (Tls13CipherSuite.TLS_SM4_GCM_SM3, Tls13CipherSuite.TLS_SM4_CCM_SM3)


class TlsCertificate(_Model):
    """One standard TLS certificate (RSA or ECDSA) with its chain in ``cert_chain``."""

    cert_chain: FilePath
    private_key: FilePath


class CertificateSet(_Model):
    """Certificates presented for a group of SNI names: one SM2 sign/enc pair and/or standard certs."""

    name: str = "default"
    server_names: tuple[str, ...] = ()
    sign_cert: FilePath | None = None
    sign_key: FilePath | None = None
    enc_cert: FilePath | None = None
    enc_key: FilePath | None = None
    chain: FilePath | None = None
    key_password_env: str | None = None
    tls_certificates: tuple[TlsCertificate, ...] = ()

    @model_validator(mode="after")
    def _pair_complete(self) -> CertificateSet:
        sm2 = (self.sign_cert, self.sign_key, self.enc_cert, self.enc_key)
        if any(v is not None for v in sm2) and not all(v is not None for v in sm2):
            raise ValueError("an SM2 pair needs all of sign_cert, sign_key, enc_cert, enc_key")
        if not self.has_sm2 and not self.tls_certificates:
            raise ValueError("a certificate set needs an SM2 pair or tls_certificates")
        return self

    @property
    def has_sm2(self) -> bool:
        return self.sign_cert is not None


class CipherSuites(_Model):
    tlcp: TlcpSuiteList = Field(
        default=_DEFAULT_TLCP_SUITES,
        json_schema_extra={"default": [suite.name for suite in _DEFAULT_TLCP_SUITES]},
    )
    #: OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults).
    tls12: str = "ECDHE+AESGCM:ECDHE+CHACHA20"
    #: RFC 8998 suites of ``tls1.3-sm``, our preference first (CCM only where the crypto provider has it).
    tls13_sm: Tls13SmSuiteList = Field(
        default=_DEFAULT_TLS13_SM_SUITES,
        json_schema_extra={"default": [suite.name for suite in _DEFAULT_TLS13_SM_SUITES]},
    )

    @field_validator("tlcp")
    @classmethod
    def _some(cls, value: tuple[CipherSuite, ...]) -> tuple[CipherSuite, ...]:
        if not value:
            raise ValueError("at least one TLCP cipher suite is needed")
        return value

    @field_validator("tls13_sm")
    @classmethod
    def _some_sm(cls, value: tuple[Tls13CipherSuite, ...]) -> tuple[Tls13CipherSuite, ...]:
        if not value:
            raise ValueError("at least one RFC 8998 cipher suite is needed")
        return value


def _distinct_protocols(names: tuple[str, ...]) -> tuple[str, ...]:
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise ValueError(f"duplicate ALPN protocols {dupes}")
    return names


#: ALPN names the gateway's HTTP connection manager speaks, in preference order.
ApplicationProtocols = Annotated[tuple[Literal["h2", "http/1.1"], ...], AfterValidator(_distinct_protocols)]


class DownstreamTlcp(_Model):
    """TLCP server options of a listener."""

    #: ``tongsuo`` sends Tongsuo's CertificateRequest types (rsa_sign, ecdsa_sign). ``gmssl`` only
    #: changes client-side forms, so a server has no use for it.
    profile: PeerProfile = PeerProfile.STANDARD

    @field_validator("profile")
    @classmethod
    def _server_profile(cls, value: PeerProfile) -> PeerProfile:
        if value in (PeerProfile.GMSSL, PeerProfile.AUTO):
            raise ValueError(
                f"{value.value} only changes what a client sends; a listener takes standard or tongsuo"
            )
        return value


class Tls13SmSelection(StrEnum):
    """Which TLS 1.3 ClientHellos the sniffer sends to the RFC 8998 engine rather than to OpenSSL.

    Either way the hello must offer TLS 1.3, an RFC 8998 suite and the curveSM2 group.
    ``prefer_sm``: every such hello, even one that also offers standard suites (a national-crypto first
    deployment). ``standard_first``: only a hello offering no standard suite, so a client able to do
    both keeps getting standard TLS from OpenSSL.
    """

    PREFER_SM = "prefer_sm"
    STANDARD_FIRST = "standard_first"


class DownstreamTls13Sm(_Model):
    """RFC 8998 server options of a listener (suites are ``cipher_suites.tls13_sm``; client authentication
    uses ``client_auth`` with ``sm2_trust_anchors``; the certificate is each set's SM2 sign certificate)."""

    selection: Tls13SmSelection = Tls13SmSelection.PREFER_SM
    #: Issue session tickets (RFC 8446 4.6.1) sealed with the listener's rotated SM4-GCM keys.
    session_tickets: bool = True
    #: How long one ticket key seals new tickets before a fresh one takes over.
    ticket_key_rotation: Seconds = 3600.0
    #: The lifetime announced in each ticket (RFC 8446: at most seven days).
    ticket_lifetime: Annotated[float, Field(gt=0, le=7 * 86400)] = 7200.0


class DownstreamTls(_Model):
    """Per-listener transport policy: which protocols, which certificates, client authentication."""

    protocols: tuple[Protocol, ...] = (Protocol.TLCP, Protocol.TLS13, Protocol.TLS12)
    certificates: tuple[CertificateSet, ...] = ()
    client_auth: ClientAuth = ClientAuth.NONE
    #: PEM bundles of trust anchors for client certificates: standard TLS and SM2 (TLCP, TLS 1.3-SM).
    trust_anchors: FilePath | None = None
    sm2_trust_anchors: FilePath | None = None
    cipher_suites: CipherSuites = CipherSuites()
    tlcp: DownstreamTlcp = DownstreamTlcp()
    tls13_sm: DownstreamTls13Sm = DownstreamTls13Sm()
    #: ALPN (RFC 7301) on every secure protocol of the listener (TLS, TLCP, TLS 1.3-SM), our preference
    #: first; ``h2`` makes HTTP connection managers speak HTTP/2 to a client that selects it. A client
    #: offering no ALPN gets HTTP/1.1 (TLCP clients mostly: GB/T 38636 has no ALPN).
    alpn: ApplicationProtocols = ("http/1.1",)
    session_cache_size: int = Field(default=4096, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> DownstreamTls:
        secure = [p for p in self.protocols if p is not Protocol.PLAIN]
        if secure and not self.certificates:
            raise ValueError("TLS/TLCP protocols need at least one certificate set")
        if Protocol.TLCP in self.protocols and not any(c.has_sm2 for c in self.certificates):
            raise ValueError("tlcp needs a certificate set with an SM2 sign/enc pair")
        if Protocol.TLCP not in self.protocols and self.tlcp != DownstreamTlcp():
            raise ValueError("tlcp options need the tlcp protocol")
        if Protocol.TLS13_SM in self.protocols and not any(c.has_sm2 for c in self.certificates):
            raise ValueError("tls1.3-sm needs a certificate set with an SM2 pair (its sign certificate)")
        if Protocol.TLS13_SM not in self.protocols and self.tls13_sm != DownstreamTls13Sm():
            raise ValueError("tls13_sm options need the tls1.3-sm protocol")
        wants_tls = Protocol.TLS13 in self.protocols or Protocol.TLS12 in self.protocols
        if wants_tls and not any(c.tls_certificates for c in self.certificates):
            raise ValueError("tls1.2/tls1.3 need a certificate set with tls_certificates")
        if self.client_auth is not ClientAuth.NONE:
            if wants_tls and self.trust_anchors is None:
                raise ValueError("client_auth with tls needs trust_anchors")
            for sm in (Protocol.TLCP, Protocol.TLS13_SM):
                if sm in self.protocols and self.sm2_trust_anchors is None:
                    raise ValueError(f"client_auth with {sm.value} needs sm2_trust_anchors")
        if not secure and self.alpn != ("http/1.1",):
            raise ValueError(
                "alpn needs a secure protocol (tls1.3, tls1.2, tlcp, tls1.3-sm): ALPN is negotiated in "
                "the handshake (HTTP/2 on plain connections is h2c_prior_knowledge)"
            )
        defaults = [c.name for c in self.certificates if not c.server_names]
        if len(defaults) > 1:
            raise ValueError(f"more than one default certificate set (no server_names): {defaults}")
        return self


class FilterChainMatch(_Model):
    """Selects a filter chain by SNI and transport; empty fields match anything."""

    server_names: tuple[str, ...] = ()
    transport_protocols: tuple[Literal["tlcp", "tls", "tls13_sm", "plain"], ...] = ()


class PrincipalMatch(_Model):
    """Matches a client certificate; every given field must match (regular expressions)."""

    subject: str | None = None
    san: str | None = None
    issuer: str | None = None
    fingerprint: str | None = None
    authenticated: bool | None = None

    @field_validator("subject", "san", "issuer")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value

    @field_validator("fingerprint")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.replace(":", "").lower()
            if not re.fullmatch(r"[0-9a-f]{64}", value):
                raise ValueError("fingerprint must be 64 hex digits (SM3 or SHA-256)")
        return value


class AccessControl(_Model):
    """Deny rules win; with any allow rules, a client must match one."""

    allow: tuple[PrincipalMatch, ...] = ()
    deny: tuple[PrincipalMatch, ...] = ()


class RbacFilter(_Model):
    name: Literal["rbac"]
    access: AccessControl


class TcpProxyFilter(_Model):
    name: Literal["tcp_proxy"]
    cluster: str
    idle_timeout: Seconds = 300.0


class IdentityHeaders(_Model):
    """X-Client-Cert-* / X-SSL-* request headers describing the downstream peer (off by default)."""

    enabled: bool = False
    prefix: str = "X-Client-Cert-"
    include_cert: bool = False


class Http2ProtocolOptions(_Model):
    """HTTP/2 SETTINGS this side advertises and enforces (Envoy's ``http2_protocol_options``)."""

    max_concurrent_streams: int = Field(default=100, ge=1, le=2**31 - 1)
    max_header_list_size: int = Field(default=65536, ge=1024, le=2**24)
    max_frame_size: int = Field(default=16384, ge=16384, le=2**24 - 1)
    initial_stream_window_size: int = Field(default=1 << 20, ge=65535, le=2**31 - 1)
    initial_connection_window_size: int = Field(default=4 << 20, ge=65535, le=2**31 - 1)
    #: Stream resets a client may cause per 10 s before GOAWAY (rapid reset, CVE-2023-44487).
    max_stream_resets_per_10s: int = Field(default=200, ge=1)
    #: PING / SETTINGS frames a client may send per 10 s before GOAWAY.
    max_pings_per_10s: int = Field(default=100, ge=1)
    max_settings_per_10s: int = Field(default=100, ge=1)
    #: Listeners: advertise SETTINGS_ENABLE_CONNECT_PROTOCOL and take WebSocket over HTTP/2 (extended
    #: CONNECT, RFC 8441), forwarded to the upstream as an HTTP/1.1 Upgrade. Not for clusters.
    allow_connect: bool = False


class HttpConnectionManagerFilter(_Model):
    name: Literal["http_connection_manager"]
    route_config: str
    #: Codec: ``http1`` or ``module:Class`` naming a :class:`gateway.codec.base.CodecFactory`.
    codec: str = "http1"
    max_request_headers_bytes: int = Field(default=65536, ge=1024)
    max_request_body_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    idle_timeout: Seconds = 60.0
    #: From the first byte of a request head to its end (a total, not per read).
    request_headers_timeout: Seconds = 15.0
    #: From the first byte of a request head to the end of its body (a total; ``null``: none).
    request_timeout: Seconds | None = 300.0
    identity_headers: IdentityHeaders = IdentityHeaders()
    #: Limits of downstream HTTP/2 (ALPN ``h2``, or h2c with prior knowledge).
    http2_protocol_options: Http2ProtocolOptions = Http2ProtocolOptions()
    #: Plain connections that open with the HTTP/2 preface speak h2c (RFC 9113 3.3); off by default.
    h2c_prior_knowledge: bool = False
    #: An upgraded connection (WebSocket) closes after this long without a byte in either direction.
    upgrade_idle_timeout: Seconds = 300.0
    #: Draining HTTP/2 connections first get a GOAWAY naming the largest stream id (a notice that
    #: refuses nothing yet), then this long later the GOAWAY naming the last stream accepted (Envoy's
    #: HCM ``drain_timeout``); ``null``: only the second, at once. Shorter than the gateway's drain_timeout.
    http2_drain_notice: Seconds | None = 1.0


NetworkFilterConfig = Annotated[
    RbacFilter | TcpProxyFilter | HttpConnectionManagerFilter, Field(discriminator="name")
]


class FilterChain(_Model):
    name: str = "default"
    filter_chain_match: FilterChainMatch = FilterChainMatch()
    filters: tuple[NetworkFilterConfig, ...]

    @field_validator("filters")
    @classmethod
    def _terminal_last(cls, filters: tuple[Any, ...]) -> tuple[Any, ...]:
        terminal = [i for i, f in enumerate(filters) if f.name != "rbac"]
        if len(terminal) != 1 or terminal[0] != len(filters) - 1:
            raise ValueError(
                "a filter chain needs exactly one terminal filter (tcp_proxy or "
                "http_connection_manager), placed last"
            )
        return filters


class ListenerConfig(_Model):
    name: str
    address: str = "127.0.0.1"
    port: Port
    handshake_timeout: Seconds = 10.0
    max_first_record_bytes: int = Field(default=16384 + 2048, ge=512)
    #: Connections in their handshake at once (sniffing, PROXY header, TLS/TLCP handshake); beyond it the
    #: listener stops accepting until one finishes (new clients wait in the kernel's accept queue). With
    #: ``handshake_timeout`` it bounds what slow or silent clients can hold (about 50 KB each for TLS).
    max_pending_handshakes: int = Field(default=4096, ge=1)
    tls: DownstreamTls = DownstreamTls(protocols=(Protocol.PLAIN,))
    filter_chains: tuple[FilterChain, ...]
    #: Expect a PROXY protocol v1/v2 header (from an L4 load balancer) before the first record.
    proxy_protocol: ProxyProtocolConfig | None = None


class HeaderMatch(_Model):
    name: str
    exact: str | None = None
    regex: str | None = None
    present: bool | None = None
    invert: bool = False


class RouteMatch(_Model):
    prefix: str | None = None
    path: str | None = None
    regex: str | None = None
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()

    @model_validator(mode="after")
    def _one_path_rule(self) -> RouteMatch:
        if sum(v is not None for v in (self.prefix, self.path, self.regex)) > 1:
            raise ValueError("use at most one of prefix, path, regex")
        if self.regex is not None:
            re.compile(self.regex)
        return self


class HeaderValue(_Model):
    name: str
    value: str


class RetryPolicy(_Model):
    num_retries: int = Field(default=1, ge=0, le=10)
    retry_on: tuple[Literal["connect-failure", "502", "503", "504", "reset"], ...] = (
        "connect-failure",
        "502",
        "503",
    )
    #: Time allowed per attempt until the response head arrives (then the route timeout alone applies).
    per_try_timeout: Seconds | None = None
    #: At most this share of a cluster's active requests may be retries (Envoy's retry budget).
    budget_percent: float = Field(default=20.0, ge=0, le=100)
    min_retry_concurrency: int = Field(default=3, ge=0)


class ForwardAction(_Model):
    cluster: str
    prefix_rewrite: str | None = None
    host_rewrite: str | None = None
    timeout: Seconds = 15.0
    retry_policy: RetryPolicy | None = None
    request_headers_to_add: tuple[HeaderValue, ...] = ()
    request_headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[HeaderValue, ...] = ()
    identity_headers: bool = False


class DirectResponse(_Model):
    status: int = Field(ge=100, le=599)
    body: str = ""
    content_type: str = "text/plain"


class Redirect(_Model):
    scheme_redirect: str | None = None
    host_redirect: str | None = None
    path_redirect: str | None = None
    response_code: Literal[301, 302, 303, 307, 308] = 301


class Route(_Model):
    name: str
    match: RouteMatch = RouteMatch(prefix="/")
    access: AccessControl | None = None
    route: ForwardAction | None = None
    direct_response: DirectResponse | None = None
    redirect: Redirect | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        if sum(v is not None for v in (self.route, self.direct_response, self.redirect)) != 1:
            raise ValueError("a route needs exactly one of route, direct_response, redirect")
        return self


class VirtualHost(_Model):
    name: str
    domains: tuple[str, ...] = ("*",)
    routes: tuple[Route, ...]


class RouteConfiguration(_Model):
    name: str
    virtual_hosts: tuple[VirtualHost, ...]


class Endpoint(_Model):
    address: str
    port: Port = Field(gt=0)
    weight: int = Field(default=1, ge=1, le=128)


class HealthCheck(_Model):
    #: ``grpc``: grpc.health.v1 ``Check`` over HTTP/2 (the cluster needs ``http2_protocol_options``).
    type: Literal["tcp", "http", "tls", "tlcp", "tls13_sm", "grpc"] = "tcp"
    interval: Seconds = 5.0
    timeout: Seconds = 1.0
    unhealthy_threshold: int = Field(default=2, ge=1)
    healthy_threshold: int = Field(default=1, ge=1)
    path: str = "/healthz"
    expected_statuses: tuple[int, ...] = (200,)
    #: ``grpc``: the service asked about (``""``: the server as a whole).
    service_name: str = Field(default="", max_length=127)


class OutlierDetection(_Model):
    consecutive_errors: int = Field(default=5, ge=1)
    base_ejection_time: Seconds = 30.0
    max_ejection_percent: float = Field(default=50.0, ge=0, le=100)


class CircuitBreaker(_Model):
    max_connections: int = Field(default=1024, ge=1)
    max_pending_requests: int = Field(default=1024, ge=0)
    max_requests: int = Field(default=1024, ge=1)


class HashPolicy(_Model):
    client_cert_fingerprint: bool = False
    header: str | None = None

    @model_validator(mode="after")
    def _one(self) -> HashPolicy:
        if self.client_cert_fingerprint == (self.header is not None):
            raise ValueError("hash_policy needs exactly one of client_cert_fingerprint, header")
        return self


class UpstreamTransport(_Model):
    """How the gateway talks to a cluster's endpoints: plain TCP, TLS (optionally mutual), TLCP, or TLS 1.3
    with the RFC 8998 suites (``tls13_sm``, whose client certificate is an SM2 ``sign_cert``/``sign_key``)."""

    type: Literal["plain", "tls", "tlcp", "tls13_sm"] = "plain"
    server_name: str | None = None
    verify: bool = True
    trust_anchors: FilePath | None = None
    client_cert_chain: FilePath | None = None
    client_private_key: FilePath | None = None
    sign_cert: FilePath | None = None
    sign_key: FilePath | None = None
    enc_cert: FilePath | None = None
    enc_key: FilePath | None = None
    #: Intermediate certificates sent with the SM2 client pair (or the tls13_sm client certificate).
    chain: FilePath | None = None
    #: TLCP only: our preference order (default: ECC then ECDHE, GCM first; ECDHE needs the pair).
    cipher_suites: TlcpSuiteList = ()
    #: tls13_sm only: the RFC 8998 suites offered, our preference first (default GCM, then CCM).
    tls13_sm_cipher_suites: Tls13SmSuiteList = ()
    #: TLCP only: the upstream implementation's forms; ``auto`` recognises them per endpoint (fixed:
    #: ``gmssl`` for GmSSL servers that ask for client certificates, ``tongsuo`` for Tongsuo/BabaSSL).
    profile: PeerProfile = PeerProfile.AUTO
    session_resumption: bool = True
    #: tls13_sm only: answer a CertificateRequest in a resumed handshake (RFC 8446 4.3.2 forbids it;
    #: GmSSL 3.3 servers that ask for client certificates send one on every resumption) instead of
    #: refusing it with unexpected_message.
    accept_certificate_request_in_psk: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamTransport:
        if self.type != "plain" and self.verify and self.trust_anchors is None:
            raise ValueError("verify needs trust_anchors (or set verify: false)")
        if (self.client_cert_chain is None) != (self.client_private_key is None):
            raise ValueError("client_cert_chain and client_private_key go together")
        if self.type == "tls13_sm":
            self._check_tls13_sm()
            return self
        sm2 = (self.sign_cert, self.sign_key, self.enc_cert, self.enc_key)
        if any(v is not None for v in sm2) and not all(v is not None for v in sm2):
            raise ValueError("an SM2 client pair needs all of sign_cert, sign_key, enc_cert, enc_key")
        if self.tls13_sm_cipher_suites:
            raise ValueError("tls13_sm_cipher_suites: only for type tls13_sm")
        if self.accept_certificate_request_in_psk:
            raise ValueError("accept_certificate_request_in_psk: only for type tls13_sm")
        if self.type != "tlcp":
            tlcp_only = [
                name
                for name, value in (
                    ("cipher_suites", self.cipher_suites),
                    ("profile", self.profile is not PeerProfile.AUTO),
                    ("sign_cert", self.sign_cert),
                    ("chain", self.chain),
                )
                if value
            ]
            if tlcp_only:
                raise ValueError(f"{', '.join(tlcp_only)}: only for type tlcp")
        elif (
            self.cipher_suites
            and self.sign_cert is None
            and all(s in ECDHE_SUITES for s in self.cipher_suites)
        ):
            raise ValueError("ECDHE cipher suites need an SM2 client pair (sign_cert, enc_cert, ...)")
        return self

    def _check_tls13_sm(self) -> None:
        if (self.sign_cert is None) != (self.sign_key is None):
            raise ValueError("a tls13_sm client certificate needs sign_cert and sign_key")
        wrong = [
            name
            for name, value in (
                ("cipher_suites", self.cipher_suites),
                ("profile", self.profile is not PeerProfile.AUTO),
                ("enc_cert", self.enc_cert),
                ("enc_key", self.enc_key),
                ("client_cert_chain", self.client_cert_chain),
            )
            if value
        ]
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)}: not for type tls13_sm (suites are tls13_sm_cipher_suites; "
                "the client certificate is sign_cert/sign_key)"
            )
        if self.chain is not None and self.sign_cert is None:
            raise ValueError("chain goes with a client certificate (sign_cert, sign_key)")


class UpstreamProxyProtocol(_Model):
    """``clusters[].proxy_protocol``: start every upstream connection with a PROXY header (HAProxy's
    v1 text line or v2 binary block) naming the downstream client and the address it connected to."""

    version: Literal[1, 2]


class ClusterConfig(_Model):
    name: str
    endpoints: tuple[Endpoint, ...]
    lb_policy: Literal["round_robin", "least_request", "ring_hash"] = "round_robin"
    hash_policy: HashPolicy | None = None
    connect_timeout: Seconds = 5.0
    health_checks: HealthCheck | None = None
    outlier_detection: OutlierDetection | None = OutlierDetection()
    circuit_breakers: CircuitBreaker = CircuitBreaker()
    transport_socket: UpstreamTransport = UpstreamTransport()
    max_idle_connections: int = Field(default=32, ge=0)
    idle_connection_timeout: Seconds = 30.0
    #: Upstream connections then carry one downstream client each (the pool is keyed by the header).
    proxy_protocol: UpstreamProxyProtocol | None = None
    #: Set: requests go to the hosts over HTTP/2 (one multiplexed connection per host), ALPN ``h2`` on TLS.
    http2_protocol_options: Http2ProtocolOptions | None = None

    @model_validator(mode="after")
    def _hash(self) -> ClusterConfig:
        if self.lb_policy == "ring_hash" and self.hash_policy is None:
            raise ValueError("ring_hash needs a hash_policy")
        hc = self.health_checks
        if hc is not None and hc.type == "grpc" and self.http2_protocol_options is None:
            raise ValueError("a grpc health check needs http2_protocol_options (gRPC runs over HTTP/2)")
        if self.http2_protocol_options is not None and self.http2_protocol_options.allow_connect:
            raise ValueError(
                "http2_protocol_options.allow_connect is for listeners: WebSocket goes to an upstream as "
                "an HTTP/1.1 Upgrade"
            )
        return self


class AdminConfig(_Model):
    address: Literal["127.0.0.1", "::1", "localhost"] = "127.0.0.1"
    port: Port = 9901
    #: Certificates expiring within this many days are reported by /certs and the expiry check.
    cert_expiry_warning_days: int = Field(default=30, ge=0)
    cert_watch_interval: Seconds = 5.0


class GatewayConfig(_Model):
    listeners: tuple[ListenerConfig, ...]
    route_configs: tuple[RouteConfiguration, ...] = ()
    clusters: tuple[ClusterConfig, ...] = ()
    admin: AdminConfig | None = AdminConfig()
    #: The audit trail (the audit package's own model); relative paths are relative to the config file.
    audit: AuditConfig | None = None
    drain_timeout: Seconds = 20.0
    #: Operator logs: level, console/JSON format, access logs (see gateway.logs).
    logging: LoggingConfig = LoggingConfig()
    #: ``--workers N``: respawn policy of the supervisor (see gateway.fleet_config).
    supervisor: SupervisorConfig = SupervisorConfig()
    #: TLCP sessions and TLS 1.3-SM ticket keys shared by workers (host) or hosts (redis); None:
    #: per-process caches and keys.
    session_store: SessionStoreConfig | None = None

    def cluster(self, name: str) -> ClusterConfig:
        return next(c for c in self.clusters if c.name == name)


def _location(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("rbac", "tcp_proxy", "http_connection_manager") and out.endswith("]"):
            continue  # the discriminated-union tag pydantic inserts is not a key in the document
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def _message(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def check_references(config: GatewayConfig) -> list[str]:
    """Cross-references the schema cannot express: names that must exist and be unique."""
    errors: list[str] = []
    if not config.listeners:
        errors.append("listeners: at least one listener is needed")
    errors += [
        f"listeners[{i}].filter_chains: at least one filter chain is needed"
        for i, x in enumerate(config.listeners)
        if not x.filter_chains
    ]
    errors += [
        f"clusters[{i}].endpoints: at least one endpoint is needed"
        for i, c in enumerate(config.clusters)
        if not c.endpoints
    ]
    clusters = {c.name for c in config.clusters}
    routes = {r.name for r in config.route_configs}
    for kind, names in (
        ("listeners", [x.name for x in config.listeners]),
        ("clusters", [c.name for c in config.clusters]),
        ("route_configs", [r.name for r in config.route_configs]),
    ):
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            errors.append(f"{kind}: duplicate names {dupes}")
    bound: dict[tuple[str, int], int] = {}
    for i, x in enumerate(config.listeners):
        first = bound.setdefault((x.address, x.port), i) if x.port else i
        if first != i:
            errors.append(
                f"listeners[{i}].port: {x.address}:{x.port} ({x.name!r}) is already bound by "
                f"listeners[{first}] ({config.listeners[first].name!r})"
            )
    for i, listener in enumerate(config.listeners):
        for j, chain in enumerate(listener.filter_chains):
            for k, flt in enumerate(chain.filters):
                where = f"listeners[{i}].filter_chains[{j}].filters[{k}]"
                if isinstance(flt, TcpProxyFilter) and flt.cluster not in clusters:
                    errors.append(f"{where}.cluster: unknown cluster {flt.cluster!r}")
                if isinstance(flt, HttpConnectionManagerFilter) and flt.route_config not in routes:
                    errors.append(f"{where}.route_config: unknown route_config {flt.route_config!r}")
                speaks_h2 = "h2" in listener.tls.alpn or (
                    isinstance(flt, HttpConnectionManagerFilter) and flt.h2c_prior_knowledge
                )
                if isinstance(flt, HttpConnectionManagerFilter) and speaks_h2 and flt.codec != "http1":
                    errors.append(
                        f"{where}.codec: HTTP/2 (ALPN h2 or h2c_prior_knowledge) needs the http1 codec, "
                        f"not {flt.codec!r}"
                    )
                notice = isinstance(flt, HttpConnectionManagerFilter) and flt.http2_drain_notice
                if notice and notice >= config.drain_timeout:
                    errors.append(
                        f"{where}.http2_drain_notice: {notice} s leaves no time to drain within "
                        f"drain_timeout ({config.drain_timeout} s)"
                    )
    listener_names = {x.name for x in config.listeners}
    for i, access_log in enumerate(config.logging.access_logs):
        errors += [
            f"logging.access_logs[{i}].listeners: unknown listener {name!r}"
            for name in access_log.listeners
            if name not in listener_names
        ]
    if config.audit is not None:
        for key in ("key_file", "signing_key", "signing_cert", "signing_key_password_file"):
            path = getattr(config.audit, key)
            if path is not None and not Path(path).is_file():
                errors.append(f"audit.{key}: file not found")
    for i, rc in enumerate(config.route_configs):
        for j, vh in enumerate(rc.virtual_hosts):
            for k, route in enumerate(vh.routes):
                if route.route is not None and route.route.cluster not in clusters:
                    errors.append(
                        f"route_configs[{i}].virtual_hosts[{j}].routes[{k}].route.cluster: "
                        f"unknown cluster {route.route.cluster!r}"
                    )
    return errors + check_client_identity(config)


def _principal_needs_identity(rule: PrincipalMatch) -> bool:
    return any(
        value is not None
        for value in (rule.subject, rule.san, rule.issuer, rule.fingerprint, rule.authenticated)
    )


def _access_needs_identity(access: AccessControl | None) -> bool:
    return access is not None and any(_principal_needs_identity(r) for r in (*access.allow, *access.deny))


def verifies_client_certificates(tls: DownstreamTls) -> bool:
    """Whether a listener's client certificates are validated against trust anchors on every transport.

    ``client_auth: none`` never makes an identity: TLS asks for no certificate, and TLCP ECDHE asks for
    one only because the SM2 key exchange needs the client's encryption key.
    """
    if tls.client_auth is ClientAuth.NONE:
        return False
    wants_tls = Protocol.TLS13 in tls.protocols or Protocol.TLS12 in tls.protocols
    if wants_tls and tls.trust_anchors is None:
        return False
    wants_sm2 = Protocol.TLCP in tls.protocols or Protocol.TLS13_SM in tls.protocols
    return not wants_sm2 or tls.sm2_trust_anchors is not None


def _identity_uses(config: GatewayConfig, listener: ListenerConfig, i: int) -> list[str]:
    """Key paths of every rule reachable from listener ``i`` that reads the client's identity."""
    uses: list[str] = []
    route_configs = {rc.name: (j, rc) for j, rc in enumerate(config.route_configs)}
    hashing = {
        c.name: k
        for k, c in enumerate(config.clusters)
        if c.hash_policy and c.hash_policy.client_cert_fingerprint
    }
    for j, chain in enumerate(listener.filter_chains):
        for k, flt in enumerate(chain.filters):
            where = f"listeners[{i}].filter_chains[{j}].filters[{k}]"
            if isinstance(flt, RbacFilter) and _access_needs_identity(flt.access):
                uses.append(f"{where}.access")
            if isinstance(flt, TcpProxyFilter) and flt.cluster in hashing:
                uses.append(f"clusters[{hashing[flt.cluster]}].hash_policy.client_cert_fingerprint")
            if not isinstance(flt, HttpConnectionManagerFilter):
                continue
            if flt.identity_headers.enabled:
                uses.append(f"{where}.identity_headers")
            if flt.route_config not in route_configs:
                continue
            r, rc = route_configs[flt.route_config]
            for v, vh in enumerate(rc.virtual_hosts):
                for n, route in enumerate(vh.routes):
                    path = f"route_configs[{r}].virtual_hosts[{v}].routes[{n}]"
                    if _access_needs_identity(route.access):
                        uses.append(f"{path}.access")
                    if route.route is not None and route.route.identity_headers:
                        uses.append(f"{path}.route.identity_headers")
                    if route.route is not None and route.route.cluster in hashing:
                        uses.append(
                            f"clusters[{hashing[route.route.cluster]}].hash_policy.client_cert_fingerprint"
                        )
    return list(dict.fromkeys(uses))


def check_client_identity(config: GatewayConfig) -> list[str]:
    """Refuse rules that need a client identity on listeners that cannot give one (see identity.py)."""
    errors: list[str] = []
    for i, listener in enumerate(config.listeners):
        if verifies_client_certificates(listener.tls):
            continue
        why = (
            "client_auth: none"
            if listener.tls.client_auth is ClientAuth.NONE
            else "no trust anchors for one of its protocols"
        )
        errors += [
            f"{use}: needs a verified client certificate, but listener {listener.name!r} "
            f"(listeners[{i}]) does not verify client certificates ({why}); set client_auth "
            f"optional or required with trust_anchors/sm2_trust_anchors"
            for use in _identity_uses(config, listener, i)
        ]
    return errors


def _items(node: object, key: str) -> list[tuple[int, dict[str, Any]]]:
    value = node.get(key) if isinstance(node, dict) else None
    return [(i, x) for i, x in enumerate(value) if isinstance(x, dict)] if isinstance(value, list) else []


def _raw_reference_errors(document: object) -> list[str]:
    """Unknown cluster / route_config names, read from the raw document so that they are reported
    together with schema errors (the typed check needs a document that validated)."""
    clusters = {c.get("name") for _, c in _items(document, "clusters")}
    routes = {r.get("name") for _, r in _items(document, "route_configs")}
    errors: list[str] = []
    for i, listener in _items(document, "listeners"):
        for j, chain in _items(listener, "filter_chains"):
            for k, flt in _items(chain, "filters"):
                where = f"listeners[{i}].filter_chains[{j}].filters[{k}]"
                if (
                    flt.get("name") == "tcp_proxy"
                    and isinstance(flt.get("cluster"), str)
                    and flt["cluster"] not in clusters
                ):
                    errors.append(f"{where}.cluster: unknown cluster {flt['cluster']!r}")
                if (
                    flt.get("name") == "http_connection_manager"
                    and isinstance(flt.get("route_config"), str)
                    and flt["route_config"] not in routes
                ):
                    errors.append(f"{where}.route_config: unknown route_config {flt['route_config']!r}")
    for i, rc in _items(document, "route_configs"):
        for j, vh in _items(rc, "virtual_hosts"):
            for k, route in _items(vh, "routes"):
                action = route.get("route")
                cluster = action.get("cluster") if isinstance(action, dict) else None
                if isinstance(cluster, str) and cluster not in clusters:
                    errors.append(
                        f"route_configs[{i}].virtual_hosts[{j}].routes[{k}].route.cluster: "
                        f"unknown cluster {cluster!r}"
                    )
    return errors


def parse_config(document: object, base_dir: Path) -> GatewayConfig:
    """Validate a parsed YAML/JSON document; raises :class:`ConfigError` listing every problem."""
    try:
        config = GatewayConfig.model_validate(document, context={"base_dir": base_dir})
    except ValidationError as exc:
        errors = [f"{_location(e['loc'])}: {_message(e['msg'])}" for e in exc.errors()]
        errors += [e for e in _raw_reference_errors(document) if e not in errors]
        raise ConfigError(errors) from None
    if config.audit is not None:
        config = config.model_copy(update={"audit": config.audit.resolved(base_dir)})
    errors = check_references(config)
    if errors:
        raise ConfigError(errors)
    return config


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without PyYAML's ``in "<unicode string>"`` (callers name the file)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return str(exc)
    mark = exc.problem_mark
    context = f" ({exc.context})" if exc.context else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"


def load_config_text(text: str, base_dir: Path) -> GatewayConfig:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"(document): invalid YAML: {_yaml_problem(exc)}"]) from None
    if not isinstance(document, dict):
        raise ConfigError(["(document): expected a mapping at the top level"])
    return parse_config(document, base_dir)


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a YAML config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"(document): cannot read {path}: {exc.strerror}"]) from None
    return load_config_text(text, path.resolve().parent)


def redacted(config: GatewayConfig) -> dict[str, Any]:
    """The config as JSON-able data with secrets (key paths, password variables) masked for /config."""
    data: dict[str, Any] = config.model_dump(mode="json")

    def scrub(node: object) -> object:
        if isinstance(node, dict):
            return {
                k: ("[redacted]" if ("key" in k or "password" in k) and v is not None else scrub(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node

    result = scrub(data)
    assert isinstance(result, dict)
    return result
