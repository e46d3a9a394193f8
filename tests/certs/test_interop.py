"""Interoperability: certificates from GmSSL, Tongsuo and the openssl CLI validate in certs/, and ours in OpenSSL.

OpenSSL 3.0's ``verify`` applies ``-vfyopt distid:`` to the target certificate only, and checks other
SM2 signatures with an empty ID. A three-level chain (made by smgate or by openssl itself) therefore
can't be checked in one ``openssl verify -untrusted`` call. Each link is checked as a target instead:
the intermediate against the root, then the leaf against the intermediate with ``-partial_chain``.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from certs import (
    Role,
    TrustStore,
    UnknownCA,
    load_certificate_file,
    load_sm2_certificate_set,
    split_sign_enc,
    verify_sm2_chain,
)
from certs.pki import create_sm2_intermediate_ca, create_sm2_root_ca, issue_tlcp_pair, save_issued
from certs.profile import Subject
from tests.certs.helpers import Chain
from tests.conftest import SHARED

OPENSSL = "/usr/bin/openssl"
DISTID = "distid:1234567812345678"
GMSSL = SHARED / "tlcp" / "gmssl" / "certs"
TONGSUO = SHARED / "tlcp" / "tongsuo" / "certs"
#: Both shared PKIs were made on 2026-11-25 around 09:38 UTC; check them at a fixed later time.
SHARED_NOW = datetime(2026, 12, 1, tzinfo=UTC)


def run_openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    ("file_name", "role", "hostname"),
    [
        ("server_sign_cert.pem", Role.SERVER_SIGN, "localhost"),
        ("server_enc_cert.pem", Role.SERVER_ENC, "localhost"),
        ("client_sign_cert.pem", Role.CLIENT_SIGN, None),
        ("client_enc_cert.pem", Role.CLIENT_ENC, None),
    ],
)
def test_gmssl_certificates_validate(file_name: str, role: Role, hostname: str | None) -> None:
    trust = TrustStore.from_pem_file(GMSSL / "root_ca_cert.pem")
    leaf = load_certificate_file(GMSSL / file_name)
    path = verify_sm2_chain(leaf, [], trust, role=role, now=SHARED_NOW, hostname=hostname)
    assert path[-1].subject == "CN=GmSSL TLCP Test Root CA,OU=Test,O=GmSSL,L=Haidian,ST=Beijing,C=CN"


@pytest.mark.parametrize(
    ("file_name", "role", "hostname"),
    [
        ("server_sign.crt", Role.SERVER_SIGN, "127.0.0.1"),
        ("server_enc.crt", Role.SERVER_ENC, "localhost"),
        ("client_sign.crt", Role.CLIENT_SIGN, None),
        ("client_enc.crt", Role.CLIENT_ENC, None),
    ],
)
def test_tongsuo_certificates_validate(file_name: str, role: Role, hostname: str | None) -> None:
    trust = TrustStore.from_pem_file(TONGSUO / "ca.crt")
    leaf = load_certificate_file(TONGSUO / file_name)
    path = verify_sm2_chain(leaf, [], trust, role=role, now=SHARED_NOW, hostname=hostname)
    assert path[-1].subject == "CN=TLCP KAT SM2 Root CA,O=TLCP KAT,C=CN"


def test_shared_certificates_do_not_cross_validate() -> None:
    with pytest.raises(UnknownCA):
        verify_sm2_chain(
            load_certificate_file(TONGSUO / "server_sign.crt"),
            [],
            TrustStore.from_pem_file(GMSSL / "root_ca_cert.pem"),
            role=Role.SERVER_SIGN,
            now=SHARED_NOW,
        )


def test_gmssl_bundle_splits_by_key_usage_and_loads_encrypted_keys() -> None:
    certificates = [
        *TrustStore.from_pem_file(GMSSL / "server_certs.pem").anchors,
        load_certificate_file(GMSSL / "root_ca_cert.pem"),
    ]
    sign, enc, rest = split_sign_enc(list(reversed(certificates)))
    assert sign is not None and enc is not None
    assert sign.key_usage == {"digital_signature"}
    assert enc.key_usage == {"key_encipherment", "data_encipherment"}
    assert [c.is_ca for c in rest] == [True]
    certificate_set = load_sm2_certificate_set(
        GMSSL / "server_sign_cert.pem",
        GMSSL / "server_sign_key.pem",
        GMSSL / "server_enc_cert.pem",
        GMSSL / "server_enc_key.pem",
        chain=GMSSL / "root_ca_cert.pem",
        password=b"P@ssw0rd",
    )
    assert certificate_set.certificate_list() == [sign, enc, *rest]


def test_tongsuo_set_loads() -> None:
    certificate_set = load_sm2_certificate_set(
        TONGSUO / "client_sign.crt",
        TONGSUO / "client_sign.key",
        TONGSUO / "client_enc.crt",
        TONGSUO / "client_enc.key",
    )
    assert certificate_set.sign_cert.subject == certificate_set.enc_cert.subject.replace(
        "client enc", "client sign"
    )
    assert certificate_set.chain == []


def test_cryptography_parses_generated_certificates(chain: Chain) -> None:
    for node in (chain.root, chain.intermediate, chain.server_sign, chain.server_enc):
        parsed = x509.load_der_x509_certificate(node.certificate.der)
        assert parsed.signature_algorithm_oid.dotted_string == "1.2.156.10197.1.501"
        assert parsed.subject.rfc4514_string() == node.certificate.subject
        assert parsed.serial_number == node.certificate.serial
        assert parsed.not_valid_after_utc == node.certificate.not_after
    leaf = x509.load_der_x509_certificate(chain.server_sign.certificate.der)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "*.example.test"]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.content_commitment
    with pytest.raises(x509.ExtensionNotFound):  # leaves omit it (GmSSL rejects an empty one)
        leaf.extensions.get_extension_for_class(x509.BasicConstraints)


def test_openssl_reads_and_verifies_smgate_chain(tmp_path: Path) -> None:
    root = create_sm2_root_ca(Subject("Interop Root", country="CN"))
    intermediate = create_sm2_intermediate_ca(Subject("Interop Intermediate"), root)
    pair = issue_tlcp_pair(
        Subject("localhost"), intermediate, role="server", dns=("localhost",), ips=("127.0.0.1",)
    )
    direct = issue_tlcp_pair(Subject("direct"), root, role="client")
    for name, issued in [
        ("root", root),
        ("inter", intermediate),
        ("sign", pair.sign),
        ("enc", pair.enc),
        ("direct", direct.sign),
    ]:
        save_issued(issued, tmp_path / f"{name}.pem", tmp_path / f"{name}.key")

    text = run_openssl("x509", "-noout", "-text", "-in", tmp_path / "sign.pem")
    assert text.returncode == 0, text.stderr
    assert "SM2-with-SM3" in text.stdout and "ASN1 OID: SM2" in text.stdout
    assert "Digital Signature, Non Repudiation" in text.stdout
    assert "DNS:localhost, IP Address:127.0.0.1" in text.stdout
    enc_text = run_openssl("x509", "-noout", "-text", "-in", tmp_path / "enc.pem")
    assert "Key Encipherment, Data Encipherment, Key Agreement" in enc_text.stdout

    checks = [
        ("-CAfile", tmp_path / "root.pem", tmp_path / "direct.pem"),
        ("-CAfile", tmp_path / "root.pem", tmp_path / "inter.pem"),
        ("-partial_chain", "-CAfile", tmp_path / "inter.pem", tmp_path / "sign.pem"),
        ("-partial_chain", "-CAfile", tmp_path / "inter.pem", tmp_path / "enc.pem"),
    ]
    for check in checks:
        result = run_openssl("verify", "-vfyopt", DISTID, *check)
        assert result.returncode == 0, (check, result.stdout, result.stderr)
        assert result.stdout.strip().endswith(": OK")


def test_chain_made_by_openssl_cli_validates(tmp_path: Path) -> None:
    def step(*args: str | Path) -> None:
        result = run_openssl(*args)
        assert result.returncode == 0, (args, result.stderr)

    for name in ("root", "inter", "leaf"):
        step(
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:SM2",
            "-out",
            tmp_path / f"{name}.key",
        )
    (tmp_path / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
    )
    (tmp_path / "leaf.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    step(
        "req", "-new", "-x509", "-sm3", "-sigopt", DISTID, "-key", tmp_path / "root.key", "-subj", "/CN=OpenSSL Root",
        "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", tmp_path / "root.pem",
    )  # fmt: skip
    for name, issuer, ext in (("inter", "root", "ca.ext"), ("leaf", "inter", "leaf.ext")):
        step("req", "-new", "-sm3", "-sigopt", DISTID, "-key", tmp_path / f"{name}.key", "-subj", f"/CN={name}",
             "-out", tmp_path / f"{name}.csr")  # fmt: skip
        step(
            "x509", "-req", "-sm3", "-sigopt", DISTID, "-vfyopt", DISTID, "-in", tmp_path / f"{name}.csr",
            "-CA", tmp_path / f"{issuer}.pem", "-CAkey", tmp_path / f"{issuer}.key", "-days", "10",
            "-extfile", tmp_path / ext, "-out", tmp_path / f"{name}.pem",
        )  # fmt: skip
    leaf = load_certificate_file(tmp_path / "leaf.pem")
    intermediate = load_certificate_file(tmp_path / "inter.pem")
    trust = TrustStore.from_pem_file(tmp_path / "root.pem")
    now = datetime.now(UTC)
    path = verify_sm2_chain(leaf, [intermediate], trust, role=Role.SERVER_SIGN, now=now, hostname="127.0.0.1")
    assert [c.subject for c in path] == ["CN=leaf", "CN=inter", "CN=OpenSSL Root"]
    assert intermediate.path_len == 0 and intermediate.is_ca
    assert leaf.ext_key_usage == {"server_auth"}
