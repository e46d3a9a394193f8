"""The provider pieces TLS 1.3 with SM suites adds: SM4-GCM/SM4-CCM (RFC 8998 Appendix A) and HKDF-SM3."""

from __future__ import annotations

import pytest

from tls.crypto import (
    SM4CCM,
    SM4GCM,
    CryptoError,
    DecryptionError,
    hkdf_sm3_expand,
    hkdf_sm3_extract,
    hmac_sm3,
    sm4_ccm_available,
)

# RFC 8998 Appendix A.1 / A.2 (the same key, IV, AAD and plaintext for both modes)
KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
IV = bytes.fromhex("00001234567800000000ABCD")
AAD = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
PLAINTEXT = bytes.fromhex(
    "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
    "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
)
GCM_CIPHERTEXT = bytes.fromhex(
    "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
    "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
)
GCM_TAG = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")
CCM_CIPHERTEXT = bytes.fromhex(
    "48AF93501FA62ADBCD414CCE6034D895DDA1BF8F132F042098661572E7483094"
    "FD12E518CE062C98ACEE28D95DF4416BED31A2F04476C18BB40C84A74B97DC5B"
)
CCM_TAG = bytes.fromhex("16842D4FA186F56AB33256971FA110F4")


def test_sm4_gcm_rfc8998_vector() -> None:
    aead = SM4GCM(KEY)
    assert aead.encrypt(IV, PLAINTEXT, AAD) == GCM_CIPHERTEXT + GCM_TAG
    assert aead.decrypt(IV, GCM_CIPHERTEXT + GCM_TAG, AAD) == PLAINTEXT


def test_sm4_ccm_is_available_in_the_development_environment() -> None:
    assert sm4_ccm_available()  # tongsuopy is a dev dependency, so CI exercises TLS_SM4_CCM_SM3


def test_sm4_ccm_rfc8998_vector() -> None:
    aead = SM4CCM(KEY)
    assert aead.encrypt(IV, PLAINTEXT, AAD) == CCM_CIPHERTEXT + CCM_TAG
    assert aead.decrypt(IV, CCM_CIPHERTEXT + CCM_TAG, AAD) == PLAINTEXT


@pytest.mark.parametrize("position", [0, 40, 70])
def test_sm4_ccm_rejects_any_flipped_bit(position: int) -> None:
    sealed = bytearray(CCM_CIPHERTEXT + CCM_TAG)
    sealed[position] ^= 0x01
    with pytest.raises(DecryptionError):
        SM4CCM(KEY).decrypt(IV, bytes(sealed), AAD)
    with pytest.raises(DecryptionError):
        SM4CCM(KEY).decrypt(IV, CCM_CIPHERTEXT + CCM_TAG, AAD + b"x")


def test_sm4_ccm_input_errors() -> None:
    with pytest.raises(CryptoError):
        SM4CCM(KEY[:15])
    with pytest.raises(CryptoError):
        SM4CCM(KEY).encrypt(IV + IV, PLAINTEXT, AAD)
    with pytest.raises(DecryptionError):
        SM4CCM(KEY).decrypt(IV, b"short", AAD)


def _hkdf_reference(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out over the provider's HMAC-SM3: an independent path to the same numbers."""
    prk = hmac_sm3(salt, ikm)
    output, block, counter = b"", b"", 1
    while len(output) < length:
        block = hmac_sm3(prk, block + info + bytes((counter,)))
        output += block
        counter += 1
    return output[:length]


@pytest.mark.parametrize("length", [1, 12, 16, 32, 33, 100])
def test_hkdf_sm3_matches_rfc5869(length: int) -> None:
    salt, ikm, info = b"salt" * 8, bytes(range(40)), b"tls13 derived"
    assert hkdf_sm3_expand(hkdf_sm3_extract(salt, ikm), info, length) == _hkdf_reference(
        salt, ikm, info, length
    )


def test_hkdf_sm3_limits() -> None:
    prk = hkdf_sm3_extract(b"", b"key")
    with pytest.raises(CryptoError):
        hkdf_sm3_expand(prk, b"", 255 * 32 + 1)
    with pytest.raises(CryptoError):
        hkdf_sm3_expand(prk[:16], b"", 16)
