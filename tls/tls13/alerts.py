"""TLS 1.3 alerts (RFC 8446 6): descriptions, and the exceptions that carry them.

As in `tls.tlcp.alerts`, deep code raises a `TLS13Alert` subclass where it finds the problem and the
connection catches it once, queues the alert and refuses further input.  In TLS 1.3 every alert but
close_notify and user_canceled is fatal whatever its level (6.2).  Exception messages are for logs and
never carry key material.  Caller misuse is a `LocalProtocolError`, raised to the caller.
"""

from __future__ import annotations

from enum import IntEnum


class AlertLevel(IntEnum):
    WARNING = 1
    FATAL = 2


class AlertDescription(IntEnum):
    close_notify = 0
    unexpected_message = 10
    bad_record_mac = 20
    record_overflow = 22
    handshake_failure = 40
    bad_certificate = 42
    unsupported_certificate = 43
    certificate_revoked = 44
    certificate_expired = 45
    certificate_unknown = 46
    illegal_parameter = 47
    unknown_ca = 48
    access_denied = 49
    decode_error = 50
    decrypt_error = 51
    protocol_version = 70
    insufficient_security = 71
    internal_error = 80
    inappropriate_fallback = 86
    user_canceled = 90
    missing_extension = 109
    unsupported_extension = 110
    unrecognized_name = 112
    bad_certificate_status_response = 113
    unknown_psk_identity = 115
    certificate_required = 116
    no_application_protocol = 120


def alert_name(description: int) -> str:
    """Name of an alert code, or `unknown_<n>`."""
    try:
        return AlertDescription(description).name
    except ValueError:
        return f"unknown_{description}"


class LocalProtocolError(Exception):
    """The caller used the connection wrongly (e.g. sent data before the handshake)."""


class TLS13Alert(Exception):
    """A fatal protocol violation; `description` is the alert we send."""

    description: AlertDescription = AlertDescription.internal_error


class UnexpectedMessage(TLS13Alert):
    description = AlertDescription.unexpected_message


class BadRecordMac(TLS13Alert):
    description = AlertDescription.bad_record_mac


class RecordOverflow(TLS13Alert):
    description = AlertDescription.record_overflow


class HandshakeFailure(TLS13Alert):
    description = AlertDescription.handshake_failure


class BadCertificate(TLS13Alert):
    description = AlertDescription.bad_certificate


class UnsupportedCertificate(TLS13Alert):
    description = AlertDescription.unsupported_certificate


class IllegalParameter(TLS13Alert):
    description = AlertDescription.illegal_parameter


class DecodeError(TLS13Alert):
    description = AlertDescription.decode_error


class DecryptError(TLS13Alert):
    description = AlertDescription.decrypt_error


class ProtocolVersion(TLS13Alert):
    description = AlertDescription.protocol_version


class InternalError(TLS13Alert):
    description = AlertDescription.internal_error


class MissingExtension(TLS13Alert):
    description = AlertDescription.missing_extension


class UnsupportedExtension(TLS13Alert):
    description = AlertDescription.unsupported_extension


class UnrecognizedName(TLS13Alert):
    description = AlertDescription.unrecognized_name


class CertificateRequired(TLS13Alert):
    description = AlertDescription.certificate_required


class NoApplicationProtocol(TLS13Alert):
    description = AlertDescription.no_application_protocol


def alert_for_name(name: str, reason: str) -> TLS13Alert:
    """The alert exception for a TLS alert name (`certs.CertificateError.alert`)."""
    try:
        description = AlertDescription[name]
    except KeyError:
        description = AlertDescription.bad_certificate
    alert = TLS13Alert(reason)
    alert.description = description
    return alert
