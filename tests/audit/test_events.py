from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from audit.events import EventType, certificate_fields, event_schema, tls_fields
from certs.certificate import load_certificate_file
from certs.demo import DemoPKI
from tls.crypto import sm3


def test_certificate_fields_from_a_real_certificate(demo_pki: DemoPKI) -> None:
    cert = load_certificate_file(demo_pki.sm2.client_sign.cert)
    fields = certificate_fields(cert)
    assert fields["subject"] == cert.subject and fields["issuer"] == cert.issuer
    assert int(fields["serial"], 16) == cert.serial
    assert fields["fingerprint_sm3"] == sm3(cert.der).hex() == cert.fingerprint_sm3()
    assert fields["not_after"] == cert.not_after.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_tls_fields_validate_protocol() -> None:
    group = tls_fields(protocol="TLSv1.3", cipher_suite="TLS_SM4_GCM_SM3", sni=None, alpn="h2", resumed=True)
    assert group == {
        "protocol": "TLSv1.3",
        "cipher_suite": "TLS_SM4_GCM_SM3",
        "sni": None,
        "alpn": "h2",
        "resumed": True,
        "client_cert": None,
    }
    with pytest.raises(ValueError, match="TLCP"):
        tls_fields(protocol="SSLv3", cipher_suite="x", sni=None, alpn=None, resumed=False)


def test_schema_names_every_event_type_and_ships_as_package_data() -> None:
    schema = event_schema()
    assert set(schema["properties"]["event"]["enum"]) == {event.value for event in EventType}
    assert {rule["if"]["properties"]["event"]["const"] for rule in schema["allOf"]} == {
        e.value for e in EventType
    }
    assert (Path(__file__).resolve().parents[2] / "audit" / "schema.json").is_file()
