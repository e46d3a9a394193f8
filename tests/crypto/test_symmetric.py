"""SM3/HMAC-SM3 and SM4 modes: published vectors, an independent oracle (hashlib's libcrypto SM3) and
the input checks of Contract 1."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tls.crypto import (
    HMACSM3,
    SM4CBC,
    SM4GCM,
    CryptoError,
    DecryptionError,
    InvalidKey,
    hmac_sm3,
    sm3,
    sm4_cbc_decrypt,
    sm4_cbc_encrypt,
    sm4_ctr,
    sm4_ecb_encrypt,
    sm4_gcm_decrypt,
    sm4_gcm_encrypt,
)

# RFC 8998 Appendix A.1 (SM4-GCM).
GCM_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
GCM_IV = bytes.fromhex("00001234567800000000ABCD")
GCM_AAD = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
GCM_PLAINTEXT = bytes.fromhex(
    "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
    "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
)
GCM_CIPHERTEXT = bytes.fromhex(
    "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
    "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
)
GCM_TAG = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")

needs_hashlib_sm3 = pytest.mark.skipif(
    "sm3" not in hashlib.algorithms_available, reason="hashlib's libcrypto has no SM3"
)


@needs_hashlib_sm3
@settings(max_examples=30, deadline=None)
@given(key=st.binary(max_size=100), data=st.binary(max_size=300))
def test_sm3_and_hmac_match_hashlib(key: bytes, data: bytes) -> None:
    assert sm3(data) == hashlib.new("sm3", data).digest()
    assert hmac_sm3(key, data) == hmac.new(key, data, "sm3").digest()


def test_hmac_keyed_object_is_reusable() -> None:
    mac = HMACSM3(b"record mac key")
    first = mac.compute(b"header", b"fragment")
    assert mac.compute(b"header", b"fragment") == first == hmac_sm3(b"record mac key", b"headerfragment")
    assert mac.verify(first, b"header", b"fragment")
    assert not mac.verify(bytes(32), b"header", b"fragment")
    fork = mac.copy()
    fork.update(b"header")
    fork.update(b"fragment")
    assert fork.digest() == first
    assert mac.compute() == hmac_sm3(b"record mac key", b"")  # the fork left the keyed state alone


def test_sm4_gcm_rfc8998_vector() -> None:
    sealed = sm4_gcm_encrypt(GCM_KEY, GCM_IV, GCM_PLAINTEXT, GCM_AAD)
    assert sealed == GCM_CIPHERTEXT + GCM_TAG
    assert sm4_gcm_decrypt(GCM_KEY, GCM_IV, sealed, GCM_AAD) == GCM_PLAINTEXT
    assert SM4GCM(GCM_KEY).decrypt(GCM_IV, sealed, GCM_AAD) == GCM_PLAINTEXT


@pytest.mark.parametrize("position", [0, 40, len(GCM_CIPHERTEXT), len(GCM_CIPHERTEXT) + 15])
def test_sm4_gcm_tampering_raises(position: int) -> None:
    sealed = bytearray(GCM_CIPHERTEXT + GCM_TAG)
    sealed[position] ^= 0x01
    with pytest.raises(DecryptionError):
        sm4_gcm_decrypt(GCM_KEY, GCM_IV, bytes(sealed), GCM_AAD)


def test_sm4_gcm_wrong_aad_and_short_input_raise() -> None:
    sealed = GCM_CIPHERTEXT + GCM_TAG
    with pytest.raises(DecryptionError):
        sm4_gcm_decrypt(GCM_KEY, GCM_IV, sealed, GCM_AAD + b"x")
    with pytest.raises(DecryptionError):
        sm4_gcm_decrypt(GCM_KEY, GCM_IV, GCM_TAG[:15], GCM_AAD)


@settings(max_examples=30, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=16),
    iv=st.binary(min_size=16, max_size=16),
    blocks=st.integers(min_value=0, max_value=8),
    data=st.data(),
)
def test_sm4_cbc_is_ecb_chaining(key: bytes, iv: bytes, blocks: int, data: st.DataObject) -> None:
    plaintext = data.draw(st.binary(min_size=16 * blocks, max_size=16 * blocks))
    ciphertext = sm4_cbc_encrypt(key, iv, plaintext)
    previous, expected = iv, b""
    for i in range(0, len(plaintext), 16):
        block = bytes(a ^ b for a, b in zip(plaintext[i : i + 16], previous, strict=True))
        previous = sm4_ecb_encrypt(key, block)
        expected += previous
    assert ciphertext == expected
    assert sm4_cbc_decrypt(key, iv, ciphertext) == plaintext
    assert SM4CBC(key).decrypt(iv, SM4CBC(key).encrypt(iv, plaintext)) == plaintext


@settings(max_examples=30, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=100))
def test_sm4_ctr_is_ecb_keystream(key: bytes, data: bytes) -> None:
    counter = bytes(15) + b"\xfe"  # crosses a byte carry after two blocks
    keystream = b"".join(
        sm4_ecb_encrypt(key, (int.from_bytes(counter, "big") + i).to_bytes(16, "big"))
        for i in range((len(data) + 15) // 16)
    )
    assert sm4_ctr(key, counter, data) == bytes(a ^ b for a, b in zip(data, keystream, strict=False))
    assert sm4_ctr(key, counter, sm4_ctr(key, counter, data)) == data


@pytest.mark.parametrize("key", [b"", bytes(15), bytes(17), bytes(32)])
def test_sm4_wrong_key_length_raises_invalid_key(key: bytes) -> None:
    with pytest.raises(InvalidKey):
        sm4_ecb_encrypt(key, bytes(16))
    with pytest.raises(InvalidKey):
        SM4GCM(key)


def test_sm4_wrong_lengths_raise_crypto_error() -> None:
    with pytest.raises(CryptoError):
        sm4_ecb_encrypt(GCM_KEY, bytes(15))
    with pytest.raises(CryptoError):
        sm4_cbc_encrypt(GCM_KEY, bytes(15), bytes(16))
    with pytest.raises(CryptoError):
        sm4_cbc_decrypt(GCM_KEY, bytes(16), bytes(17))
    with pytest.raises(CryptoError):
        sm4_ctr(GCM_KEY, bytes(12), b"data")
    with pytest.raises(CryptoError):
        sm4_gcm_encrypt(GCM_KEY, bytes(4), b"data", b"")
