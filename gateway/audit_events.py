"""Audit records the gateway writes, shaped to the audit package's schema (``audit/schema.json``).

Every data-path call site goes through one of these helpers, so event names and field groups match
the schema (``conn.open``, ``handshake.ok``/``handshake.fail``, ``route.decision``, ``http.request``,
``upstream.fail``, ``conn.close``, ``config.reload``, ``cert.loaded``/``cert.expiring``/``cert.expired``,
``listener.start/stop``, ``admin.action``) and a ``conn_id`` ties a connection's records together.

``handshake.fail`` carries the alert as the transport's engine names and numbers it; a connection closed without any alert
(garbage first bytes, timeout) is recorded as alert ``none`` with code 0, and a peer that hung up
mid-handshake as reason ``peer_closed``, direction ``received`` (a TLS client rejecting our
certificate sends its alert and closes; the event loop may report only the close).
"""

from __future__ import annotations

import datetime as dt

from audit.events import EventType
from gateway.auditing import AuditHandle
from gateway.identity import PeerCertificate, PeerIdentity
from gateway.transports.base import Alert

_SCHEMA_PROTOCOL = {"tlcp": "TLCP", "tls1.3": "TLSv1.3", "tls1.3-sm": "TLSv1.3", "tls1.2": "TLSv1.2"}
#: Handshake details a transport adds to ``PeerIdentity.extras`` that the audit records (RFC 8998's
#: key-exchange group and signature schemes).
_AUDITED_EXTRAS = ("group", "signature_scheme", "client_signature_scheme")


def timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cert_fields(cert: PeerCertificate) -> dict[str, str]:
    from tls.crypto import sm3

    return {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "serial": format(cert.serial, "x"),
        "fingerprint_sm3": cert.fingerprint_sm3 or sm3(cert.der).hex(),
    }


def conn_open(
    audit: AuditHandle, conn_id: int, listener: str, client: tuple[str, int], local: tuple[str, int] | None
) -> None:
    audit.emit(
        EventType.CONN_OPEN,
        conn_id=str(conn_id),
        listener=listener,
        client_addr=f"{client[0]}:{client[1]}",
        local_addr=f"{local[0]}:{local[1]}" if local else "",
    )


def handshake_ok(audit: AuditHandle, conn_id: int, identity: PeerIdentity, handshake_ms: float) -> None:
    protocol = _SCHEMA_PROTOCOL.get(identity.protocol)
    if protocol is None:  # plaintext: no handshake to record
        return
    audit.emit(
        EventType.HANDSHAKE_OK,
        conn_id=str(conn_id),
        protocol=protocol,
        cipher_suite=identity.cipher_suite or "",
        sni=identity.sni,
        alpn=identity.alpn,
        resumed=identity.resumed,
        client_cert=cert_fields(identity.peer) if identity.peer else None,
        duration_ms=round(handshake_ms, 3),
        **_handshake_details(identity),
        **_unverified_client_cert(identity),
    )


def _handshake_details(identity: PeerIdentity) -> dict[str, str]:
    return {key: identity.extras[key] for key in _AUDITED_EXTRAS if key in identity.extras}


def _unverified_client_cert(identity: PeerIdentity) -> dict[str, object]:
    """A certificate presented without validation is recorded as such, apart from ``client_cert``."""
    if identity.unverified_peer is None:
        return {}
    return {"client_cert_unverified": cert_fields(identity.unverified_peer)}


def handshake_fail(
    audit: AuditHandle,
    conn_id: int,
    reason: str,
    *,
    alert: Alert | None = None,
    alert_sent: bool = True,
    detail: str = "",
) -> None:
    audit.emit(
        EventType.HANDSHAKE_FAIL,
        conn_id=str(conn_id),
        alert=alert.name if alert else "none",
        alert_code=alert.code if alert else 0,
        alert_direction="sent" if alert_sent else "received",
        reason=reason,
        error=detail[:200],
    )


def route_decision(
    audit: AuditHandle,
    conn_id: int,
    *,
    route: str | None,
    cluster: str | None,
    upstream: str | None,
    allow: bool,
    reason: str = "",
    **extra: object,
) -> None:
    audit.emit(
        EventType.ROUTE_DECISION,
        conn_id=str(conn_id),
        route=route,
        cluster=cluster,
        upstream=upstream,
        verdict="allow" if allow else "deny",
        reason=reason,
        **extra,
    )


def upstream_fail(
    audit: AuditHandle, conn_id: int | str, cluster: str, upstream: str | None, reason: str
) -> None:
    audit.emit(
        EventType.UPSTREAM_FAIL, conn_id=str(conn_id), cluster=cluster, upstream=upstream, reason=reason
    )


def conn_close(
    audit: AuditHandle, conn_id: int, *, bytes_received: int, bytes_sent: int, duration_ms: float, reason: str
) -> None:
    audit.emit(
        EventType.CONN_CLOSE,
        conn_id=str(conn_id),
        bytes_received=bytes_received,
        bytes_sent=bytes_sent,
        duration_ms=round(duration_ms, 3),
        reason=reason,
    )


#: The one record of an HTTP request (see :func:`connection_fields` and ``gateway.proxy.Exchange``).
HTTP_REQUEST = EventType.HTTP_REQUEST


def connection_fields(conn_id: int, listener: str, identity: PeerIdentity) -> dict[str, object]:
    """The fields every ``http.request`` record of a connection repeats: who the client is and how it
    came (transport, suite, SNI, the verified client certificate). Built once per connection."""
    fields: dict[str, object] = {
        "conn_id": str(conn_id),
        "listener": listener,
        "client_addr": f"{identity.remote_address}:{identity.remote_port}",
        "protocol": _SCHEMA_PROTOCOL.get(identity.protocol),
        "cipher_suite": identity.cipher_suite,
        "sni": identity.sni,
        "client_cert": cert_fields(identity.peer) if identity.peer else None,
    }
    fields.update(_handshake_details(identity))
    fields.update(_unverified_client_cert(identity))
    return fields


def http_request(
    audit: AuditHandle, connection: dict[str, object], request_id: str, **fields: object
) -> None:
    audit.emit(HTTP_REQUEST, **connection, request_id=request_id, **fields)


def config_reload(
    audit: AuditHandle,
    *,
    accepted: bool,
    source: str,
    diff: dict[str, object],
    errors: list[str] | None = None,
    generation: int | None = None,
) -> None:
    fields: dict[str, object] = {
        "result": "accepted" if accepted else "rejected",
        "source": source,
        "diff": diff,
    }
    if generation is not None:
        fields["generation"] = generation
    if errors:
        fields["error"] = "; ".join(errors)[:2000]
    audit.emit(EventType.CONFIG_RELOAD, **fields)


def listener_start(audit: AuditHandle, listener: str, address: str) -> None:
    audit.emit(EventType.LISTENER_START, listener=listener, address=address)


def listener_stop(audit: AuditHandle, listener: str, reason: str) -> None:
    audit.emit(EventType.LISTENER_STOP, listener=listener, reason=reason)


def cert_loaded(audit: AuditHandle, cert: dict[str, str], purpose: str, path: str, generation: int) -> None:
    audit.emit(EventType.CERT_LOADED, cert=cert, purpose=purpose, path=path, generation=generation)


def cert_expiring(
    audit: AuditHandle, cert: dict[str, str], purpose: str, days_left: float, path: str
) -> None:
    event = EventType.CERT_EXPIRED if days_left <= 0 else EventType.CERT_EXPIRING
    audit.emit(event, cert=cert, purpose=purpose, days_left=round(days_left, 3), path=path)


def admin_action(
    audit: AuditHandle, action: str, actor: str, result: str, target: str | None = None, **extra: object
) -> None:
    audit.emit(EventType.ADMIN_ACTION, action=action, actor=actor, result=result, target=target, **extra)
