"""``smgate pki`` commands (certs.cli) driven through an argparse parser, as gateway/cli.py wires them."""

from __future__ import annotations

import argparse
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import core, pem

from certs import Role, TrustStore, load_certificate_file, verify_sm2_chain
from certs.cli import register
from certs.pki import MAX_VALIDITY_DAYS
from certs.standard import verify_standard_chain
from tests.conftest import SHARED


def run(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="smgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(arg) for arg in argv])
    result: int = args.func(args)
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def sm2_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sm2")
    assert (
        run(
            "pki",
            "ca",
            "--type",
            "sm2",
            "--cn",
            "CLI Root",
            "--org",
            "smgate",
            "--country",
            "CN",
            "--out-dir",
            out,
        )
        == 0
    )
    assert run(
        "pki", "intermediate", "--ca-cert", out / "root.pem", "--ca-key", out / "root.key",
        "--cn", "CLI Intermediate", "--out-dir", out,
    ) == 0  # fmt: skip
    assert run(
        "pki", "issue-tlcp", "--role", "server", "--ca-cert", out / "intermediate.pem",
        "--ca-key", out / "intermediate.key", "--cn", "gw.example.test", "--dns", "gw.example.test",
        "--dns", "localhost", "--ip", "127.0.0.1", "--out-dir", out,
    ) == 0  # fmt: skip
    assert run(
        "pki", "issue-tlcp", "--role", "client", "--ca-cert", out / "intermediate.pem",
        "--ca-key", out / "intermediate.key", "--cn", "client one", "--out-dir", out, "--name", "alice",
    ) == 0  # fmt: skip
    return out


def test_files_and_modes(sm2_pki: Path) -> None:
    for stem in ("root", "intermediate", "server_sign", "server_enc", "alice_sign", "alice_enc"):
        assert mode(sm2_pki / f"{stem}.key") == 0o600
        assert mode(sm2_pki / f"{stem}.pem") == 0o644
    assert load_certificate_file(sm2_pki / "server_chain.pem").subject == "CN=CLI Intermediate"


def test_default_validity_within_limits(sm2_pki: Path) -> None:
    root = load_certificate_file(sm2_pki / "root.pem")
    assert root.not_after - root.not_before <= timedelta(days=MAX_VALIDITY_DAYS, minutes=5)
    leaf = load_certificate_file(sm2_pki / "server_sign.pem")
    intermediate = load_certificate_file(sm2_pki / "intermediate.pem")
    assert leaf.not_after <= intermediate.not_after <= root.not_after
    assert intermediate.path_len == 0 and root.path_len is None


def test_tlcp_pair_profile(sm2_pki: Path) -> None:
    sign = load_certificate_file(sm2_pki / "server_sign.pem")
    enc = load_certificate_file(sm2_pki / "server_enc.pem")
    assert sign.subject == enc.subject == "CN=gw.example.test"
    assert sign.public_key_bytes != enc.public_key_bytes
    assert sign.key_usage == {"digital_signature", "non_repudiation"}
    assert enc.key_usage == {"key_encipherment", "data_encipherment", "key_agreement"}
    assert sign.san_dns == enc.san_dns == ("gw.example.test", "localhost")
    assert sign.san_ip == enc.san_ip == ("127.0.0.1",)
    assert sign.ext_key_usage == enc.ext_key_usage == {"server_auth"}
    client = load_certificate_file(sm2_pki / "alice_enc.pem")
    assert client.ext_key_usage == {"client_auth"}
    trust = TrustStore.from_pem_file(sm2_pki / "root.pem")
    chain = [load_certificate_file(sm2_pki / "server_chain.pem")]
    now = datetime.now(UTC)
    verify_sm2_chain(sign, chain, trust, role=Role.SERVER_SIGN, now=now, hostname="gw.example.test")
    verify_sm2_chain(enc, chain, trust, role=Role.SERVER_ENC, now=now, hostname="127.0.0.1")
    verify_sm2_chain(client, chain, trust, role=Role.CLIENT_ENC, now=now)


def test_show_prints_summary(sm2_pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    leaf = load_certificate_file(sm2_pki / "server_sign.pem")
    assert run("pki", "show", sm2_pki / "server_sign.pem", "--at", "2030-01-01T00:00:00Z") == 0
    output = capsys.readouterr().out
    sm3_hex = ":".join(leaf.fingerprint_sm3()[i : i + 2] for i in range(0, 64, 2)).upper()
    sha_hex = ":".join(leaf.fingerprint_sha256()[i : i + 2] for i in range(0, 64, 2)).upper()
    for expected in (
        "Subject:       CN=gw.example.test",
        "Issuer:        CN=CLI Intermediate",
        "SAN:           DNS:gw.example.test, DNS:localhost, IP:127.0.0.1",
        "Key type:      SM2",
        "Signature:     SM2-with-SM3",
        "Key usage:     digital_signature, non_repudiation",
        "Ext key usage: server_auth",
        f"Not before:    {leaf.not_before:%Y-%m-%d %H:%M:%S} UTC",
        f"SM3:           {sm3_hex}",
        f"SHA-256:       {sha_hex}",
    ):
        assert expected in output
    assert "(expired)" in output


def test_show_bundle_lists_each_certificate(sm2_pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = sm2_pki / "bundle.pem"
    bundle.write_bytes((sm2_pki / "root.pem").read_bytes() + (sm2_pki / "intermediate.pem").read_bytes())
    assert run("pki", "show", bundle) == 0
    output = capsys.readouterr().out
    assert "[1/2]" in output and "[2/2]" in output
    assert "CA:            yes (pathLen unlimited)" in output and "CA:            yes (pathLen 0)" in output


def test_verify_command(sm2_pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common: list[str | Path] = [
        "pki",
        "verify",
        "--ca-file",
        sm2_pki / "root.pem",
        "--untrusted",
        sm2_pki / "server_chain.pem",
    ]
    assert run(*common, "--role", "server-enc", "--hostname", "localhost", sm2_pki / "server_enc.pem") == 0
    assert ": OK" in capsys.readouterr().out
    assert run(*common, "--role", "server-enc", sm2_pki / "server_sign.pem") == 1
    assert "lacks key_agreement or key_encipherment" in capsys.readouterr().err
    assert run(*common, "--hostname", "elsewhere.test", sm2_pki / "server_sign.pem") == 1
    assert "elsewhere.test" in capsys.readouterr().err


def test_refuses_to_overwrite_without_force(sm2_pki: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (sm2_pki / "root.pem").read_bytes()
    assert run("pki", "ca", "--cn", "again", "--out-dir", sm2_pki) == 1
    assert "use --force" in capsys.readouterr().err
    assert (sm2_pki / "root.pem").read_bytes() == before


def test_days_above_limit_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        run("pki", "ca", "--cn", "long", "--days", str(MAX_VALIDITY_DAYS + 1), "--out-dir", tmp_path)
    assert info.value.code == 2


def test_name_over_64_bytes_is_refused_before_any_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("pki", "ca", "--cn", "x" * 65, "--out-dir", tmp_path) == 1
    assert "subject common name is longer than 64 bytes of UTF-8" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_issue_tlcp_needs_sm2_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("pki", "ca", "--type", "ecdsa", "--cn", "EC", "--out-dir", tmp_path) == 0
    code = run(
        "pki", "issue-tlcp", "--role", "server", "--ca-cert", tmp_path / "root.pem", "--ca-key",
        tmp_path / "root.key", "--cn", "x", "--out-dir", tmp_path,
    )  # fmt: skip
    assert code == 1
    assert "not SM2" in capsys.readouterr().err


@pytest.mark.parametrize("ca_type", ["rsa", "ecdsa"])
def test_standard_ca_and_issue(tmp_path: Path, ca_type: str) -> None:
    assert run("pki", "ca", "--type", ca_type, "--cn", f"{ca_type} root", "--out-dir", tmp_path) == 0
    for key_type in ("rsa", "ecdsa"):
        assert run(
            "pki", "issue", "--type", key_type, "--role", "server", "--ca-cert", tmp_path / "root.pem",
            "--ca-key", tmp_path / "root.key", "--cn", "localhost", "--dns", "localhost", "--ip", "127.0.0.1",
            "--out-dir", tmp_path,
        ) == 0  # fmt: skip
        leaf = load_certificate_file(tmp_path / f"{key_type}_server.pem")
        assert leaf.key_type == {"rsa": "RSA-2048", "ecdsa": "ECDSA-P256"}[key_type]
        assert mode(tmp_path / f"{key_type}_server.key") == 0o600
        verify_standard_chain(
            leaf,
            [],
            TrustStore.from_pem_file(tmp_path / "root.pem"),
            now=datetime.now(UTC),
            hostname="localhost",
        )
    root = load_certificate_file(tmp_path / "root.pem")
    assert root.key_type == {"rsa": "RSA-2048", "ecdsa": "ECDSA-P256"}[ca_type]


def test_encrypted_keys_and_gmssl_root_as_issuer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("correct horse\n")
    assert (
        run("pki", "ca", "--cn", "Locked Root", "--out-dir", tmp_path, "--key-password-file", password_file)
        == 0
    )
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "root.key").read_bytes()
    issue: list[str | Path] = [
        "pki",
        "issue-tlcp",
        "--role",
        "client",
        "--ca-cert",
        tmp_path / "root.pem",
        "--cn",
        "c",
    ]
    assert run(*issue, "--ca-key", tmp_path / "root.key", "--out-dir", tmp_path) == 1
    assert "smgate pki: error:" in capsys.readouterr().err
    assert (
        run(
            *issue,
            "--ca-key",
            tmp_path / "root.key",
            "--ca-key-password-file",
            password_file,
            "--out-dir",
            tmp_path,
        )
        == 0
    )

    # GmSSL's own root key is PBES2 with PBKDF2-HMAC-SM3 and SM4-CBC.
    gmssl = SHARED / "tlcp" / "gmssl" / "certs"
    (tmp_path / "gmssl_password").write_text("P@ssw0rd\n")
    assert run(
        "pki", "issue-tlcp", "--role", "server", "--ca-cert", gmssl / "root_ca_cert.pem",
        "--ca-key", gmssl / "root_ca_key.pem", "--ca-key-password-file", tmp_path / "gmssl_password",
        "--cn", "localhost", "--dns", "localhost", "--out-dir", tmp_path, "--name", "under_gmssl",
    ) == 0  # fmt: skip
    leaf = load_certificate_file(tmp_path / "under_gmssl_enc.pem")
    trust = TrustStore.from_pem_file(gmssl / "root_ca_cert.pem")
    verify_sm2_chain(leaf, [], trust, role=Role.SERVER_ENC, now=datetime.now(UTC), hostname="localhost")
    assert not (tmp_path / "under_gmssl_chain.pem").exists()


def test_utf8_subject(tmp_path: Path) -> None:
    assert (
        run("pki", "ca", "--cn", "国密测试根", "--org", "示例单位", "--country", "cn", "--out-dir", tmp_path)
        == 0
    )
    root = load_certificate_file(tmp_path / "root.pem")
    assert root.subject == "CN=国密测试根,O=示例单位,C=CN"


def _pbes2_header_without_salt_and_iv(encrypted_pem: bytes) -> bytes:
    _, _, der = pem.unarmor(encrypted_pem)
    algorithm = core.Sequence.load(der)[0]
    salt, iv = algorithm[1][0][1][0].native, algorithm[1][1][1].native
    return bytes(algorithm.dump()).replace(salt, bytes(len(salt))).replace(iv, bytes(len(iv)))


def test_encrypted_keys_match_gmssl_pbes2_layout(tmp_path: Path) -> None:
    """`pki --key-password-file` keys have GmSSL's exact PBES2 header (GmSSL refuses a NULL PRF parameter)."""
    password_file = tmp_path / "password"
    password_file.write_text("P@ssw0rd\n")
    assert (
        run("pki", "ca", "--cn", "Locked", "--out-dir", tmp_path, "--key-password-file", password_file) == 0
    )
    ours = _pbes2_header_without_salt_and_iv((tmp_path / "root.key").read_bytes())
    gmssl_key = SHARED / "tlcp" / "gmssl" / "certs" / "root_ca_key.pem"
    assert ours == _pbes2_header_without_salt_and_iv(gmssl_key.read_bytes())


def test_issue_tlcp_writes_no_file_when_a_later_step_fails(
    sm2_pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert run(
        "pki", "issue-tlcp", "--role", "server", "--ca-cert", sm2_pki / "intermediate.pem",
        "--ca-key", sm2_pki / "intermediate.key", "--ca-chain", sm2_pki / "root.key",
        "--cn", "half.example.test", "--out-dir", out,
    ) == 1  # fmt: skip
    assert f"{sm2_pki / 'root.key'}: holds a private key" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_issue_tlcp_with_force_restores_the_old_pair_when_a_file_cannot_be_replaced(
    sm2_pki: Path, tmp_path: Path
) -> None:
    issuer: list[str | Path] = [
        "--ca-cert",
        sm2_pki / "intermediate.pem",
        "--ca-key",
        sm2_pki / "intermediate.key",
    ]
    assert run("pki", "issue-tlcp", "--role", "server", *issuer, "--cn", "one", "--out-dir", tmp_path) == 0
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    (tmp_path / "server_enc.key").unlink()
    (tmp_path / "server_enc.key").mkdir()  # the last rename cannot replace a directory
    del before["server_enc.key"]
    assert run(
        "pki", "issue-tlcp", "--role", "server", *issuer, "--cn", "two", "--out-dir", tmp_path, "--force"
    ) == 1  # fmt: skip
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    assert after == before
    assert load_certificate_file(tmp_path / "server_sign.pem").subject == "CN=one"


def test_issue_audit_signing_certificate(sm2_pki: Path, tmp_path: Path) -> None:
    from audit.keys import load_signing_key, load_verification_key

    assert run(
        "pki", "issue", "--audit-signing", "--ca-cert", sm2_pki / "intermediate.pem",
        "--ca-key", sm2_pki / "intermediate.key", "--cn", "gateway audit", "--out-dir", tmp_path,
    ) == 0  # fmt: skip
    certificate = load_certificate_file(tmp_path / "audit_signing.pem")
    assert certificate.is_sm2 and not certificate.is_ca
    assert certificate.key_usage == {"digital_signature", "non_repudiation"}
    assert not certificate.ext_key_usage
    assert mode(tmp_path / "audit_signing.key") == 0o600
    key = load_signing_key(tmp_path / "audit_signing.key")
    assert key.public_key() == load_verification_key(tmp_path / "audit_signing.pem")
    chain = [load_certificate_file(tmp_path / "audit_signing_chain.pem")]
    trust = TrustStore.from_pem_file(sm2_pki / "root.pem")
    verify_sm2_chain(certificate, chain, trust, role=Role.CLIENT_SIGN, now=datetime.now(UTC))


def test_issue_audit_signing_refuses_tls_options(sm2_pki: Path, tmp_path: Path) -> None:
    assert run(
        "pki", "issue", "--audit-signing", "--type", "rsa", "--ca-cert", sm2_pki / "root.pem",
        "--ca-key", sm2_pki / "root.key", "--cn", "x", "--out-dir", tmp_path,
    ) == 2  # fmt: skip
    assert run(
        "pki", "issue", "--ca-cert", sm2_pki / "root.pem", "--ca-key", sm2_pki / "root.key",
        "--cn", "x", "--out-dir", tmp_path,
    ) == 2  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_csr_pair_is_issued_by_an_outside_ca(sm2_pki: Path, tmp_path: Path) -> None:
    """`pki csr` makes what a bank sends to its CA; OpenSSL plays that CA, and the pair it returns
    loads as a TLCP double certificate with the keys `pki csr` kept."""
    from certs import load_sm2_certificate_set

    assert run(
        "pki", "csr", "--role", "server", "--cn", "bank.example.test", "--org", "Bank",
        "--dns", "bank.example.test", "--out-dir", tmp_path, "--name", "bank",
    ) == 0  # fmt: skip
    assert mode(tmp_path / "bank_sign.key") == mode(tmp_path / "bank_enc.key") == 0o600
    distid = "distid:1234567812345678"
    for part in ("sign", "enc"):
        request = tmp_path / f"bank_{part}.csr"
        check = subprocess.run(
            ["openssl", "req", "-in", request, "-noout", "-verify", "-vfyopt", distid],
            capture_output=True, text=True,
        )  # fmt: skip
        assert "self-signature verify OK" in check.stdout + check.stderr
        subprocess.run(
            ["openssl", "x509", "-req", "-in", request, "-CA", sm2_pki / "intermediate.pem",
             "-CAkey", sm2_pki / "intermediate.key", "-sm3", "-sigopt", distid, "-vfyopt", distid,
             "-copy_extensions", "copy", "-days", "30", "-out", tmp_path / f"bank_{part}.pem"],
            check=True, capture_output=True,
        )  # fmt: skip
    pair = load_sm2_certificate_set(
        tmp_path / "bank_sign.pem", tmp_path / "bank_sign.key",
        tmp_path / "bank_enc.pem", tmp_path / "bank_enc.key", sm2_pki / "intermediate.pem",
    )  # fmt: skip
    assert pair.sign_cert.subject == pair.enc_cert.subject == "CN=bank.example.test,O=Bank"
    assert pair.sign_cert.key_usage == {"digital_signature", "non_repudiation"}
    assert pair.enc_cert.key_usage == {"key_encipherment", "data_encipherment", "key_agreement"}
    assert pair.sign_cert.ext_key_usage == pair.enc_cert.ext_key_usage == {"server_auth"}
    assert pair.sign_cert.san_dns == ("bank.example.test",)
    trust = TrustStore.from_pem_file(sm2_pki / "root.pem")
    now = datetime.now(UTC)
    for leaf, role in ((pair.sign_cert, Role.SERVER_SIGN), (pair.enc_cert, Role.SERVER_ENC)):
        verify_sm2_chain(leaf, pair.chain, trust, role=role, now=now, hostname="bank.example.test")


def test_show_names_a_key_or_request_file(
    sm2_pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("pki", "show", sm2_pki / "server_sign.key") == 1
    err = capsys.readouterr().err
    assert f"{sm2_pki / 'server_sign.key'}: holds a private key, not a certificate" in err
    assert run("pki", "csr", "--role", "client", "--cn", "c", "--out-dir", tmp_path) == 0
    capsys.readouterr()
    assert run("pki", "show", tmp_path / "client_sign.csr") == 1
    assert f"{tmp_path / 'client_sign.csr'}: holds a certificate request (CSR)" in capsys.readouterr().err
