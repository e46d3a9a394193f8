"""Cross-backend differential tests: what one SM2 backend produces the other accepts, and both derive
the same keys.  tongsuopy (a ``cryptography`` fork on BabaSSL) is a third, independent signer/verifier
(it signs with the default ID 1234567812345678; it offers no SM2 encryption or ECDH for SM2 keys)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tongsuopy.crypto import hashes as tongsuo_hashes
from tongsuopy.crypto import serialization as tongsuo_serialization
from tongsuopy.crypto.asymciphers import ec as tongsuo_ec

from tests.crypto.conftest import BACKENDS
from tls.crypto import (
    DEFAULT_SM2_ID,
    CryptoError,
    InvalidSignature,
    SM2PrivateKey,
    get_backend,
    sm2_c1c2c3_to_c1c3c2,
    sm2_c1c3c2_to_c1c2c3,
    sm2_c1c3c2_to_der,
    sm2_ciphertext_to_c1c3c2,
    sm2_key_exchange,
    use_backend,
)

PAIRS = list(itertools.product(BACKENDS, repeat=2))
needs_two_backends = pytest.mark.skipif(len(BACKENDS) < 2, reason="only one SM2 backend available")
KEYS = [SM2PrivateKey.generate() for _ in range(4)]

messages = st.binary(max_size=300)
uids = st.one_of(st.just(DEFAULT_SM2_ID), st.binary(max_size=40))
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
keys = st.one_of(
    st.sampled_from(KEYS), st.integers(min_value=1, max_value=N - 2).map(SM2PrivateKey.from_scalar)
)


@needs_two_backends
@settings(max_examples=25, deadline=None)
@given(key=keys, message=messages, uid=uids, pair=st.sampled_from(PAIRS))
def test_sign_one_verify_other(key: SM2PrivateKey, message: bytes, uid: bytes, pair: tuple[str, str]) -> None:
    signer, verifier = (get_backend(name) for name in pair)
    signature = signer.sign(key, message, uid)
    verifier.verify(key.public_key(), signature, message, uid)
    with pytest.raises(InvalidSignature):
        verifier.verify(key.public_key(), signature, message + b"\x00", uid)


@needs_two_backends
@settings(max_examples=25, deadline=None)
@given(key=keys, plaintext=st.binary(min_size=1, max_size=300), pair=st.sampled_from(PAIRS))
def test_encrypt_one_decrypt_other(key: SM2PrivateKey, plaintext: bytes, pair: tuple[str, str]) -> None:
    encryptor, decryptor = (get_backend(name) for name in pair)
    ciphertext = encryptor.encrypt(key.public_key(), plaintext)
    assert decryptor.decrypt(key, ciphertext) == plaintext


@settings(max_examples=25, deadline=None)
@given(plaintext=st.binary(min_size=1, max_size=200))
def test_ciphertext_layout_conversions_round_trip(plaintext: bytes) -> None:
    der = KEYS[0].public_key().encrypt(plaintext)
    raw = sm2_ciphertext_to_c1c3c2(der)
    assert len(raw) == 65 + 32 + len(plaintext) and raw[0] == 4
    legacy = sm2_c1c3c2_to_c1c2c3(raw)
    assert legacy[:65] == raw[:65] and legacy[-32:] == raw[65:97]
    assert sm2_c1c2c3_to_c1c3c2(legacy) == raw
    assert sm2_c1c3c2_to_der(raw) == der
    assert KEYS[0].decrypt(sm2_c1c3c2_to_der(raw)) == plaintext


@needs_two_backends
@settings(max_examples=10, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    confirmation=st.booleans(),
    key_length=st.integers(min_value=1, max_value=100),
    ids=st.tuples(uids, uids),
)
def test_key_exchange_between_backends(
    pair: tuple[str, str], confirmation: bool, key_length: int, ids: tuple[bytes, bytes]
) -> None:
    initiator_backend, responder_backend = pair
    da, db = KEYS[0], KEYS[1]
    ra, rb = SM2PrivateKey.generate(), SM2PrivateKey.generate()
    id_a, id_b = ids
    with use_backend(initiator_backend):
        a = sm2_key_exchange(
            initiator=True,
            static_key=da,
            ephemeral_key=ra,
            peer_static=db.public_key(),
            peer_ephemeral=rb.public_key(),
            own_id=id_a,
            peer_id=id_b,
            key_length=key_length,
            confirmation=confirmation,
        )
    with use_backend(responder_backend):
        b = sm2_key_exchange(
            initiator=False,
            static_key=db,
            ephemeral_key=rb,
            peer_static=da.public_key(),
            peer_ephemeral=ra.public_key(),
            own_id=id_b,
            peer_id=id_a,
            key_length=key_length,
            confirmation=confirmation,
        )
    assert a.key == b.key and len(a.key) == key_length
    assert a.own_confirmation == b.expected_peer_confirmation
    assert b.own_confirmation == a.expected_peer_confirmation
    if confirmation:
        assert a.own_confirmation != b.own_confirmation


def test_key_exchange_mismatched_ids_disagree() -> None:
    da, db, ra, rb = (SM2PrivateKey.generate() for _ in range(4))
    a = sm2_key_exchange(
        initiator=True,
        static_key=da,
        ephemeral_key=ra,
        peer_static=db.public_key(),
        peer_ephemeral=rb.public_key(),
        peer_id=b"bob",
        key_length=32,
        confirmation=True,
    )
    b = sm2_key_exchange(
        initiator=False,
        static_key=db,
        ephemeral_key=rb,
        peer_static=da.public_key(),
        peer_ephemeral=ra.public_key(),
        own_id=b"mallory",
        key_length=32,
        confirmation=True,
    )
    assert a.key != b.key
    assert a.expected_peer_confirmation != b.own_confirmation


@pytest.mark.parametrize("pair", PAIRS)
def test_public_key_with_x_starting_0x04(pair: tuple[str, str]) -> None:
    # gmssl's CryptSM2 strips "04" with str.lstrip, which corrupts such keys unless worked around.
    key = SM2PrivateKey.from_scalar(11)
    assert key.public_key().to_bytes()[:2] == b"\x04\x04"
    signer, verifier = (get_backend(name) for name in pair)
    verifier.verify(key.public_key(), signer.sign(key, b"message"), b"message")
    assert verifier.decrypt(key, signer.encrypt(key.public_key(), b"message")) == b"message"


@needs_two_backends
@pytest.mark.parametrize("pair", PAIRS)
def test_ecdh_agrees_across_backends(pair: tuple[str, str]) -> None:
    a, b = SM2PrivateKey.generate(), SM2PrivateKey.generate()
    with use_backend(pair[0]):
        shared_a = a.exchange(b.public_key())
    with use_backend(pair[1]):
        shared_b = b.exchange(a.public_key())
    assert shared_a == shared_b and len(shared_a) == 32


@needs_two_backends
@settings(max_examples=10, deadline=None)
@given(scalar=st.integers(min_value=1, max_value=(1 << 256) - 1).filter(lambda k: k % N))
def test_point_arithmetic_agrees(scalar: int) -> None:
    """Any scalar but a multiple of the order (whose product is the point at infinity: next test)."""
    points = {name: get_backend(name).point_mul(scalar, KEYS[0].public_key().to_bytes()) for name in BACKENDS}
    sums = {
        name: get_backend(name).point_add(points[name], KEYS[1].public_key().to_bytes()) for name in BACKENDS
    }
    assert len(set(points.values())) == 1
    assert len(set(sums.values())) == 1


@needs_two_backends
def test_point_at_infinity_is_refused_by_every_backend() -> None:
    point = KEYS[0].public_key().to_bytes()
    for name in BACKENDS:
        with pytest.raises(CryptoError, match="point at infinity"):
            get_backend(name).point_mul(N, point)


@needs_two_backends
@settings(max_examples=10, deadline=None)
@given(scalar=st.integers(min_value=1, max_value=(1 << 128) - 1))
def test_point_add_mul_agrees(scalar: int) -> None:
    p, q = KEYS[1].public_key().to_bytes(), KEYS[0].public_key().to_bytes()
    combined = {name: get_backend(name).point_add_mul(p, scalar, q) for name in BACKENDS}
    separate = {
        name: get_backend(name).point_add(p, get_backend(name).point_mul(scalar, q)) for name in BACKENDS
    }
    assert len(set(combined.values())) == 1
    assert combined == separate


# --- tongsuopy oracle ------------------------------------------------------------------------------


def _tongsuo_key(key: SM2PrivateKey) -> tongsuo_ec.EllipticCurvePrivateKey:
    return tongsuo_serialization.load_der_private_key(key.to_pkcs8_der(), None)


@settings(max_examples=25, deadline=None)
@given(key=keys, message=messages, backend=st.sampled_from(BACKENDS))
def test_tongsuopy_signature_verifies_with_default_id(
    key: SM2PrivateKey, message: bytes, backend: str
) -> None:
    signature = _tongsuo_key(key).sign(message, tongsuo_ec.ECDSA(tongsuo_hashes.SM3()))
    get_backend(backend).verify(key.public_key(), signature, message, DEFAULT_SM2_ID)


@settings(max_examples=25, deadline=None)
@given(key=keys, message=messages, backend=st.sampled_from(BACKENDS))
def test_tongsuopy_verifies_our_signature(key: SM2PrivateKey, message: bytes, backend: str) -> None:
    signature = get_backend(backend).sign(key, message)
    _tongsuo_key(key).public_key().verify(signature, message, tongsuo_ec.ECDSA(tongsuo_hashes.SM3()))
