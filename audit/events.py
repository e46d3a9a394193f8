"""Audit event types and helpers that build the shared TLS/certificate field groups.

The field schema itself lives in ``schema.json`` (shipped as package data); this module names the
event types so the gateway does not scatter string literals, and turns a peer certificate into the
``client_cert`` object the schema expects. It imports no certificate library: anything with
``subject``, ``issuer``, ``serial`` and ``der`` attributes (``certs.Certificate``) works.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from functools import cache
from importlib import resources
from typing import Any, Protocol

from audit.canonical import to_jsonable
from tls.crypto import sm3


class EventType(enum.StrEnum):
    LISTENER_START = "listener.start"
    LISTENER_STOP = "listener.stop"
    CONFIG_RELOAD = "config.reload"
    CERT_LOADED = "cert.loaded"
    CERT_EXPIRING = "cert.expiring"
    CERT_EXPIRED = "cert.expired"
    CONN_OPEN = "conn.open"
    HANDSHAKE_OK = "handshake.ok"
    HANDSHAKE_FAIL = "handshake.fail"
    ROUTE_DECISION = "route.decision"
    HTTP_REQUEST = "http.request"
    UPSTREAM_FAIL = "upstream.fail"
    CONN_CLOSE = "conn.close"
    ADMIN_ACTION = "admin.action"
    AUDIT_GAP = "audit.gap"
    AUDIT_CHECKPOINT = "audit.checkpoint"


#: Event types only the audit log itself writes; ``AuditLog.emit`` refuses them from callers.
INTERNAL_EVENTS = frozenset({EventType.AUDIT_GAP, EventType.AUDIT_CHECKPOINT})

#: TLS protocol names as they appear in the ``protocol`` field.
PROTOCOLS = ("TLCP", "TLSv1.3", "TLSv1.2")


class CertificateLike(Protocol):
    @property
    def subject(self) -> str: ...
    @property
    def issuer(self) -> str: ...
    @property
    def serial(self) -> int: ...
    @property
    def der(self) -> bytes: ...


def certificate_fields(cert: CertificateLike) -> dict[str, str]:
    """The ``client_cert`` / ``cert`` object: subject, issuer, serial (hex), SM3 fingerprint, and
    ``not_after`` when the object carries an aware ``not_after`` datetime (``certs.Certificate`` does)."""
    fields = {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "serial": format(cert.serial, "x"),
        "fingerprint_sm3": sm3(cert.der).hex(),
    }
    not_after = getattr(cert, "not_after", None)
    if isinstance(not_after, dt.datetime) and not_after.tzinfo is not None:
        fields["not_after"] = to_jsonable(not_after)
    return fields


def tls_fields(
    *,
    protocol: str,
    cipher_suite: str,
    sni: str | None,
    alpn: str | None,
    resumed: bool,
    client_cert: CertificateLike | None = None,
) -> dict[str, object]:
    """The TLS field group carried by ``handshake.ok`` (and bound onto later events of the connection)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
    return {
        "protocol": protocol,
        "cipher_suite": cipher_suite,
        "sni": sni,
        "alpn": alpn,
        "resumed": resumed,
        "client_cert": certificate_fields(client_cert) if client_cert is not None else None,
    }


@cache
def event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every audit record conforms to."""
    text = resources.files("audit").joinpath("schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
