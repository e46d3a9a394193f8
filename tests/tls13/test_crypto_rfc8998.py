"""The provider pieces TLS 1.3 with SM suites adds: SM4-GCM/SM4-CCM (RFC 8998 Appendix A) and HKDF-SM3."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tls.crypto import (
    SM4CCM,
    SM4GCM,
    CryptoError,
    DecryptionError,
    HKDFSM3Key,
    InvalidKey,
    SM2PrivateKey,
    TongsuoSM4GCM,
    available_backends,
    hkdf_sm3_expand,
    hkdf_sm3_extract,
    hmac_sm3,
    keyed_sm4_gcm,
    sm4_ccm_available,
    use_backend,
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


@pytest.mark.parametrize("implementation", [SM4GCM, TongsuoSM4GCM, keyed_sm4_gcm])
def test_every_sm4_gcm_computes_the_rfc8998_vector(implementation: Any) -> None:
    aead = implementation(KEY)
    assert aead.encrypt(IV, PLAINTEXT, AAD) == GCM_CIPHERTEXT + GCM_TAG
    assert aead.decrypt(IV, GCM_CIPHERTEXT + GCM_TAG, AAD) == PLAINTEXT
    assert aead.decrypt(IV, bytearray(GCM_CIPHERTEXT + GCM_TAG), AAD) == PLAINTEXT  # as the record layer


def test_reusable_sm4_gcm_equals_cryptography_across_messages_and_failures() -> None:
    """tongsuopy's reused context against cryptography's per-message one, and a failed open leaves it usable."""
    rng = random.Random(1998)
    key = rng.randbytes(16)
    ours, oracle = TongsuoSM4GCM(key), SM4GCM(key)
    assert isinstance(keyed_sm4_gcm(key), TongsuoSM4GCM)  # tongsuopy is a dev dependency
    for index in range(40):
        nonce = rng.randbytes(12)
        plaintext = rng.randbytes(rng.choice((0, 1, 15, 16, 17, 300, 16385)))
        aad = rng.randbytes(rng.choice((0, 5, 13)))
        sealed = ours.encrypt(nonce, plaintext, aad)
        assert sealed == oracle.encrypt(nonce, plaintext, aad)
        assert oracle.decrypt(nonce, sealed, aad) == plaintext
        if index % 3 == 0:
            tampered = bytearray(sealed)
            tampered[rng.randrange(len(tampered))] ^= 0x80
            with pytest.raises(DecryptionError):
                ours.decrypt(nonce, bytes(tampered), aad)
            with pytest.raises(DecryptionError):
                ours.decrypt(nonce, sealed, aad + b"x")
        assert ours.decrypt(nonce, sealed, aad) == plaintext
    with pytest.raises(DecryptionError):
        ours.decrypt(bytes(12), b"short", b"")
    with pytest.raises(CryptoError):
        ours.encrypt(bytes(7), b"x", b"")
    with pytest.raises(CryptoError):
        TongsuoSM4GCM(key[:15])


def test_reusable_aeads_may_be_shared_between_threads() -> None:
    aead = SM4CCM(bytes(16))
    nonces = [index.to_bytes(12, "big") for index in range(200)]
    expected = [SM4CCM(bytes(16)).encrypt(nonce, nonce * 50, b"aad") for nonce in nonces]

    def work(offset: int) -> bool:
        ok = True
        for nonce, sealed in list(zip(nonces, expected, strict=True))[offset::4]:
            ok &= aead.encrypt(nonce, nonce * 50, b"aad") == sealed
            ok &= aead.decrypt(nonce, sealed, b"aad") == nonce * 50
        return ok

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(4)))


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


def test_sm4_ccm_reuses_its_contexts_across_messages_and_failures() -> None:
    """One object seals and opens many messages (fresh nonce each) exactly as tongsuopy's own AEAD does,
    and a failed open leaves it usable."""
    from tongsuopy.crypto.ciphers.aead import SM4CCM as TongsuoSM4CCM

    rng = random.Random(8998)
    key = rng.randbytes(16)
    ours, oracle = SM4CCM(key), TongsuoSM4CCM(key)
    for index in range(40):
        nonce = rng.randbytes(12)
        plaintext = rng.randbytes(rng.choice((0, 1, 15, 16, 17, 300, 16385)))
        aad = rng.randbytes(rng.choice((0, 5, 13)))
        sealed = ours.encrypt(nonce, plaintext, aad)
        assert sealed == oracle.encrypt(nonce, plaintext, aad)
        if index % 3 == 0:
            tampered = bytearray(sealed)
            tampered[rng.randrange(len(tampered))] ^= 0x80
            with pytest.raises(DecryptionError):
                ours.decrypt(nonce, bytes(tampered), aad)
        assert ours.decrypt(nonce, sealed, aad) == plaintext
    short_nonce = bytes(7)
    assert ours.decrypt(short_nonce, ours.encrypt(short_nonce, b"x", b""), b"") == b"x"


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


@pytest.mark.parametrize("length", [1, 12, 16, 31, 32, 33, 64, 100])
def test_keyed_hkdf_expand_equals_hkdf_expand(length: int) -> None:
    """`HKDFSM3Key` (one HMAC block for L <= 32) gives exactly `hkdf_sm3_expand` (cryptography's HKDFExpand)."""
    rng = random.Random(length)
    for _ in range(20):
        prk = rng.randbytes(rng.choice((32, 48)))
        key = HKDFSM3Key(prk)
        for info in (b"", rng.randbytes(rng.randrange(1, 80))):
            assert key.expand(info, length) == hkdf_sm3_expand(prk, info, length)


def test_hkdf_sm3_limits() -> None:
    prk = hkdf_sm3_extract(b"", b"key")
    with pytest.raises(CryptoError):
        hkdf_sm3_expand(prk, b"", 255 * 32 + 1)
    with pytest.raises(CryptoError):
        hkdf_sm3_expand(prk[:16], b"", 16)
    with pytest.raises(CryptoError):
        HKDFSM3Key(prk[:16])
    with pytest.raises(CryptoError):
        HKDFSM3Key(prk).expand(b"", 0)


@pytest.mark.parametrize("backend", available_backends())
def test_exchange_point_validates_the_peer_point_in_every_backend(backend: str) -> None:
    """ECDHE with a received point: the same secret as `exchange`, and a bad point is InvalidKey."""
    ours, peer = SM2PrivateKey.from_scalar(0x1234567), SM2PrivateKey.from_scalar(0x7654321)
    point = peer.public_key().to_bytes()
    compressed = bytes((2 + (point[-1] & 1),)) + point[1:33]
    off_curve = point[:-1] + bytes(((point[-1] + 1) % 256,))
    outside_field = b"\x04" + b"\xff" * 64
    with use_backend(backend):
        assert ours.exchange_point(point) == ours.exchange(peer.public_key())
        assert ours.exchange_point(compressed) == ours.exchange(peer.public_key())
        for bad in (off_curve, outside_field, point[:-1], b"\x00", b"\x05" + point[1:], b""):
            with pytest.raises(InvalidKey):
                ours.exchange_point(bad)
