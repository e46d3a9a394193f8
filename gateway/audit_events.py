"""Audit records the gateway writes, shaped to the audit package's schema (``audit/schema.json``).

Every data-path call site goes through one of these helpers, so event names and field groups match
the schema (``conn.open``, ``handshake.ok``/``handshake.fail``, ``route.decision``, ``http.request``,
``upstream.fail``, ``conn.close``, ``config.reload``, ``cert.loaded``/``cert.expiring``/``cert.expired``,
``listener.start/stop``, ``admin.action``) and a ``conn_id`` ties a connection's records together.

``handshake.fail`` carries the TLS/TLCP alert name and code; a connection closed without any alert
(garbage first bytes, timeout) is recorded as alert ``none`` with code 0, and a peer that hung up
mid-handshake as reason ``peer_closed``, direction ``received`` (a TLS client rejecting our
certificate sends its alert and closes; the event loop may report only the close).
"""

from __future__ import annotations

import datetime as dt

from audit.events import EventType
from gateway.auditing import AuditHandle
from gateway.identity import PeerCertificate, PeerIdentity

_SCHEMA_PROTOCOL = {"tlcp": "TLCP", "tls1.3": "TLSv1.3", "tls1.2": "TLSv1.2"}

#: Alert codes of TLS 1.2/1.3 (RFC 8446 6) and TLCP (GB/T 38636-2020 6.3.3.2) by name.
ALERT_CODES: dict[str, int] = {
    "close_notify": 0,
    "unexpected_message": 10,
    "bad_record_mac": 20,
    "decryption_failed": 21,
    "record_overflow": 22,
    "decompression_failure": 30,
    "handshake_failure": 40,
    "bad_certificate": 42,
    "unsupported_certificate": 43,
    "certificate_revoked": 44,
    "certificate_expired": 45,
    "certificate_unknown": 46,
    "illegal_parameter": 47,
    "unknown_ca": 48,
    "access_denied": 49,
    "decode_error": 50,
    "decrypt_error": 51,
    "protocol_version": 70,
    "insufficient_security": 71,
    "internal_error": 80,
    "inappropriate_fallback": 86,
    "user_canceled": 90,
    "no_renegotiation": 100,
    "missing_extension": 109,
    "unsupported_extension": 110,
    "unrecognized_name": 112,
    "bad_certificate_status_response": 113,
    "unknown_psk_identity": 115,
    "certificate_required": 116,
    "no_application_protocol": 120,
    "unsupported_site2site": 200,
    "no_area": 201,
    "unsupported_areatype": 202,
    "bad_ibcparam": 203,
    "unsupported_ibcparam": 204,
    "identity_need": 205,
}

_OPENSSL_ALERT_PREFIXES = ("sslv3_alert_", "tlsv1_alert_", "tlsv13_alert_")

#: OpenSSL failure reasons (``SSLError.reason``) and the alert OpenSSL sends for them.
_OPENSSL_SENT_ALERTS: dict[str, str] = {
    "no_shared_cipher": "handshake_failure",
    "no_suitable_signature_algorithm": "handshake_failure",
    "unsupported_protocol": "protocol_version",
    "wrong_version_number": "protocol_version",
    "version_too_low": "protocol_version",
    "version_too_high": "protocol_version",
    "peer_did_not_return_a_certificate": "certificate_required",
    "certificate_verify_failed": "bad_certificate",
    "no_application_protocol": "no_application_protocol",
    "decryption_failed_or_bad_record_mac": "bad_record_mac",
    "record_layer_failure": "decode_error",
    "packet_length_too_long": "record_overflow",
    "unexpected_message": "unexpected_message",
    "bad_key_share": "illegal_parameter",
    "missing_sigalgs_extension": "missing_extension",
}


def openssl_alert(reason: str) -> tuple[str | None, bool]:
    """The alert behind an OpenSSL failure reason and whether we sent it (``False``: the peer sent it)."""
    reason = reason.lower()
    for prefix in _OPENSSL_ALERT_PREFIXES:
        if reason.startswith(prefix):
            return reason[len(prefix) :], False
    return _OPENSSL_SENT_ALERTS.get(reason), True


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
        **_unverified_client_cert(identity),
    )


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
    alert: str | None = None,
    alert_code: int | None = None,
    alert_sent: bool = True,
    detail: str = "",
) -> None:
    if alert_code is None:
        alert_code = ALERT_CODES.get(alert or "", 0)
    audit.emit(
        EventType.HANDSHAKE_FAIL,
        conn_id=str(conn_id),
        alert=alert or "none",
        alert_code=alert_code,
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


def http_request(audit: AuditHandle, conn_id: int, request_id: str, **fields: object) -> None:
    audit.emit(EventType.HTTP_REQUEST, conn_id=str(conn_id), request_id=request_id, **fields)


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
