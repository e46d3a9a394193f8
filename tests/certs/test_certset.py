"""TLCP double certificates (certs.certset): choosing sign/enc by keyUsage and loading key pairs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from certs import (
    KeyMismatch,
    KeyUsageMismatch,
    MalformedCertificate,
    SM2CertificateSet,
    load_sm2_certificate_set,
    split_sign_enc,
)
from certs.pki import write_private_file, write_public_file
from tests.certs.helpers import Chain, make_sm2


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_split_sign_enc_ignores_position(chain: Chain, order: tuple[int, ...]) -> None:
    certificates = [
        chain.server_sign.certificate,
        chain.server_enc.certificate,
        chain.intermediate.certificate,
        chain.root.certificate,
    ]
    shuffled = [certificates[index] for index in order]
    sign, enc, rest = split_sign_enc(shuffled)
    assert sign == chain.server_sign.certificate
    assert enc == chain.server_enc.certificate
    assert rest == [c for c in shuffled if c not in (sign, enc)]


def test_split_sign_enc_with_missing_enc(chain: Chain) -> None:
    sign, enc, rest = split_sign_enc([chain.root.certificate, chain.client_sign.certificate])
    assert sign == chain.client_sign.certificate
    assert enc is None
    assert rest == [chain.root.certificate]
    assert split_sign_enc([]) == (None, None, [])


def test_split_prefers_single_purpose_certificates(chain: Chain) -> None:
    both = make_sm2(
        "dual use", chain.intermediate, key_usage=frozenset({"digital_signature", "key_encipherment"})
    ).certificate
    sign, enc, rest = split_sign_enc([both, chain.server_enc.certificate, chain.server_sign.certificate])
    assert (sign, enc, rest) == (chain.server_sign.certificate, chain.server_enc.certificate, [both])


def test_certificate_set_checks_keys_and_usage(chain: Chain) -> None:
    certificate_set = SM2CertificateSet(
        chain.server_sign.certificate,
        chain.server_sign.key,
        chain.server_enc.certificate,
        chain.server_enc.key,
        [chain.intermediate.certificate],
    )
    assert certificate_set.certificate_list()[:2] == [
        chain.server_sign.certificate,
        chain.server_enc.certificate,
    ]
    with pytest.raises(KeyMismatch):
        SM2CertificateSet(
            chain.server_sign.certificate,
            chain.server_enc.key,
            chain.server_enc.certificate,
            chain.server_enc.key,
        )
    with pytest.raises(KeyUsageMismatch):
        SM2CertificateSet(
            chain.server_enc.certificate,
            chain.server_enc.key,
            chain.server_enc.certificate,
            chain.server_enc.key,
        )


def test_load_from_files_merges_chain(chain: Chain, tmp_path: Path) -> None:
    for name, node in (("sign", chain.client_sign), ("enc", chain.client_enc)):
        # The signing file carries the intermediate too, as a "fullchain" PEM would.
        extra = chain.intermediate.certificate.to_pem() if name == "sign" else b""
        write_public_file(tmp_path / f"{name}.pem", node.certificate.to_pem() + extra)
        write_private_file(tmp_path / f"{name}.key", node.key.to_pkcs8_pem(b"secret"))
    write_public_file(tmp_path / "chain.pem", chain.intermediate.certificate.to_pem())
    loaded = load_sm2_certificate_set(
        tmp_path / "sign.pem",
        tmp_path / "sign.key",
        tmp_path / "enc.pem",
        tmp_path / "enc.key",
        chain=tmp_path / "chain.pem",
        password=b"secret",
    )
    assert loaded.chain == [chain.intermediate.certificate]
    assert loaded.sign_key.public_key() == chain.client_sign.key.public_key()
    with pytest.raises(MalformedCertificate, match="does not load"):
        load_sm2_certificate_set(
            tmp_path / "sign.pem",
            tmp_path / "sign.key",
            tmp_path / "enc.pem",
            tmp_path / "enc.key",
            password=b"wrong",
        )
