"""Small SM2 PKIs built directly with certs.builder for the certificate tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from certs.builder import build_sm2_certificate
from certs.certificate import Certificate
from certs.pki import TLCP_ENC_USAGE, TLCP_SIGN_USAGE
from certs.profile import CertificateProfile, Subject
from tls.crypto import SM2PrivateKey

#: Fixed reference time for every generated chain: tests never depend on the wall clock.
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
CA_USAGE = frozenset({"key_cert_sign", "crl_sign"})


@dataclass(frozen=True)
class Node:
    certificate: Certificate
    key: SM2PrivateKey


def make_sm2(
    common_name: str,
    issuer: Node | None = None,
    *,
    is_ca: bool = False,
    path_len: int | None = None,
    key_usage: frozenset[str] = TLCP_SIGN_USAGE,
    ext_key_usage: tuple[str, ...] = ("server_auth",),
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Node:
    key = SM2PrivateKey.generate()
    profile = CertificateProfile(
        subject=Subject(common_name, organization="smgate tests", country="CN"),
        not_before=not_before or NOW - timedelta(days=30),
        not_after=not_after or NOW + timedelta(days=365),
        is_ca=is_ca,
        path_len=path_len,
        key_usage=CA_USAGE if is_ca else key_usage,
        ext_key_usage=() if is_ca else ext_key_usage,
        san_dns=dns,
        san_ip=ips,
    )
    signer = issuer.key if issuer is not None else key
    certificate = build_sm2_certificate(
        profile, key.public_key(), signer, issuer.certificate if issuer is not None else None
    )
    return Node(certificate, key)


@dataclass(frozen=True)
class Chain:
    root: Node
    intermediate: Node
    server_sign: Node
    server_enc: Node
    client_sign: Node
    client_enc: Node


def make_chain() -> Chain:
    root = make_sm2("Test Root CA", is_ca=True)
    intermediate = make_sm2("Test Intermediate CA", root, is_ca=True, path_len=0)
    dns = ("localhost", "*.example.test")
    ips = ("127.0.0.1", "::1")
    return Chain(
        root=root,
        intermediate=intermediate,
        server_sign=make_sm2("localhost", intermediate, key_usage=TLCP_SIGN_USAGE, dns=dns, ips=ips),
        server_enc=make_sm2("localhost", intermediate, key_usage=TLCP_ENC_USAGE, dns=dns, ips=ips),
        client_sign=make_sm2(
            "client", intermediate, key_usage=TLCP_SIGN_USAGE, ext_key_usage=("client_auth",)
        ),
        client_enc=make_sm2("client", intermediate, key_usage=TLCP_ENC_USAGE, ext_key_usage=("client_auth",)),
    )
