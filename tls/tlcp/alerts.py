"""Alert protocol: descriptions, levels and the exceptions that carry them.

Deep code raises a `TLCPAlert` subclass where it finds the problem (aioquic,
Go's `alert.go`); `TLCPConnection` catches it once, queues the fatal alert
record and refuses further input.  Messages given to these exceptions are
for logs and must never contain key material.  Caller misuse of the API is a
`LocalProtocolError`, which is raised to the caller and sends nothing.

Codes are those of GB/T 38636-2020 6.3.4 (the TLS 1.1/1.2 set plus the
TLCP-specific 200-205 range), plus RFC 7301's no_application_protocol for the
ALPN extension that TLCP stacks carry in their hellos.
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
    decryption_failed = 21
    record_overflow = 22
    decompression_failure = 30
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
    user_canceled = 90
    no_renegotiation = 100
    unsupported_extension = 110
    unrecognized_name = 112
    no_application_protocol = 120
    unsupported_site2site = 200
    no_area = 201
    unsupported_areatype = 202
    bad_ibcparam = 203
    unsupported_ibcparam = 204
    identity_need = 205


def alert_name(description: int) -> str:
    """Name of an alert code, or `unknown_<n>` for codes TLCP does not define."""
    try:
        return AlertDescription(description).name
    except ValueError:
        return f"unknown_{description}"


class LocalProtocolError(Exception):
    """The caller used the connection wrongly (e.g. sent data before the handshake)."""


class TLCPAlert(Exception):
    """A fatal protocol violation; `description` is the alert we send."""

    description: AlertDescription = AlertDescription.internal_error
    level: AlertLevel = AlertLevel.FATAL


class UnexpectedMessage(TLCPAlert):
    description = AlertDescription.unexpected_message


class BadRecordMac(TLCPAlert):
    description = AlertDescription.bad_record_mac


class RecordOverflow(TLCPAlert):
    description = AlertDescription.record_overflow


class HandshakeFailure(TLCPAlert):
    description = AlertDescription.handshake_failure


class BadCertificate(TLCPAlert):
    description = AlertDescription.bad_certificate


class UnsupportedCertificate(TLCPAlert):
    description = AlertDescription.unsupported_certificate


class CertificateExpired(TLCPAlert):
    description = AlertDescription.certificate_expired


class CertificateUnknown(TLCPAlert):
    description = AlertDescription.certificate_unknown


class IllegalParameter(TLCPAlert):
    description = AlertDescription.illegal_parameter


class UnknownCA(TLCPAlert):
    description = AlertDescription.unknown_ca


class AccessDenied(TLCPAlert):
    description = AlertDescription.access_denied


class DecodeError(TLCPAlert):
    description = AlertDescription.decode_error


class DecryptError(TLCPAlert):
    description = AlertDescription.decrypt_error


class ProtocolVersion(TLCPAlert):
    description = AlertDescription.protocol_version


class InsufficientSecurity(TLCPAlert):
    description = AlertDescription.insufficient_security


class InternalError(TLCPAlert):
    description = AlertDescription.internal_error


class NoRenegotiation(TLCPAlert):
    description = AlertDescription.no_renegotiation


class UnsupportedExtension(TLCPAlert):
    description = AlertDescription.unsupported_extension


class UnrecognizedName(TLCPAlert):
    description = AlertDescription.unrecognized_name


class NoApplicationProtocol(TLCPAlert):
    description = AlertDescription.no_application_protocol


def alert_for_name(name: str, reason: str) -> TLCPAlert:
    """Build the alert exception for a TLS alert name (e.g. `CertificateError.alert`)."""
    try:
        description = AlertDescription[name]
    except KeyError:
        description = AlertDescription.bad_certificate
    for cls in TLCPAlert.__subclasses__():
        if cls.description == description:
            return cls(reason)
    alert = TLCPAlert(reason)
    alert.description = description
    return alert
