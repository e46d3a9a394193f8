"""Bad input raises the documented :class:`CryptoError` subclass on every backend, never anything else."""

from __future__ import annotations

import pytest
from asn1crypto import core
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.crypto.conftest import BACKENDS
from tls.crypto import (
    CryptoError,
    DecryptionError,
    InvalidKey,
    InvalidSignature,
    SM2PrivateKey,
    SM2PublicKey,
    UnsupportedAlgorithm,
    get_backend,
    load_sm2_private_key,
    load_sm2_public_key,
    set_backend,
    sm2_c1c2c3_to_c1c3c2,
    sm2_c1c3c2_to_der,
    sm2_ciphertext_to_c1c3c2,
    sm2_key_exchange,
    use_backend,
)

N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
KEY = SM2PrivateKey.from_scalar(0x1F2E3D4C5B6A79880123456789ABCDEF0123456789ABCDEF0123456789ABCDEF)
PUBLIC = KEY.public_key()


def der_sequence(*values: core.Asn1Value) -> bytes:
    return bytes(core.Sequence(contents=b"".join(v.dump() for v in values)).dump())


@pytest.mark.parametrize(
    "point",
    [
        b"",
        b"\x00",
        b"\x04" + bytes(64),
        PUBLIC.to_bytes()[:-1] + bytes([PUBLIC.to_bytes()[-1] ^ 1]),
        PUBLIC.to_bytes()[:64],
        PUBLIC.to_bytes() + b"\x00",
        b"\x05" + PUBLIC.to_bytes()[1:],
        b"\x04" + P.to_bytes(32, "big") + PUBLIC.to_bytes()[33:],
        b"\x02" + (2).to_bytes(32, "big"),  # x^3 + ax + b is a non-residue for x = 2
        b"\x03" + (3).to_bytes(32, "big"),
        b"\x03" + P.to_bytes(32, "big"),
    ],
)
def test_invalid_points_raise_invalid_key(point: bytes, backend: str) -> None:
    with use_backend(backend), pytest.raises(InvalidKey):
        SM2PublicKey.from_bytes(point)


@pytest.mark.parametrize("scalar", [0, N - 1, N, N + 5, -1, bytes(31), bytes(33), bytes(32)])
def test_out_of_range_scalars_raise_invalid_key(scalar: int | bytes) -> None:
    with pytest.raises(InvalidKey):
        SM2PrivateKey.from_scalar(scalar)


@pytest.mark.parametrize("value", [65, "04" + "00" * 64, None])
def test_non_bytes_key_material_raises_invalid_key(value: object) -> None:
    with pytest.raises(InvalidKey):
        SM2PublicKey.from_bytes(value)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        load_sm2_private_key(value)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        load_sm2_public_key(value)  # type: ignore[arg-type]


def test_private_key_on_other_curve_raises_invalid_key() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        data = p256.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        with pytest.raises(InvalidKey):
            load_sm2_private_key(data)
    spki = p256.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(InvalidKey):
        load_sm2_public_key(spki)


def test_private_key_with_mismatched_public_key_raises_invalid_key() -> None:
    other = SM2PrivateKey.generate()
    forged = KEY.to_sec1_der()[:-65] + other.public_key().to_bytes()  # SEC1 ends with the public point
    with pytest.raises(InvalidKey):
        load_sm2_private_key(forged)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a key",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        KEY.to_pkcs8_der()[:-1],
        KEY.to_pkcs8_der() + b"\x00",
        KEY.to_sec1_der()[:40],
    ],
)
def test_malformed_private_key_raises_invalid_key(data: bytes) -> None:
    with pytest.raises(InvalidKey):
        load_sm2_private_key(data)


def test_legacy_pem_encryption_is_rejected() -> None:
    legacy = KEY.to_sec1_pem().replace(
        b"-----BEGIN EC PRIVATE KEY-----\n",
        b"-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\n",
    )
    with pytest.raises(InvalidKey):
        load_sm2_private_key(legacy, b"pw")


@pytest.mark.parametrize("data", [b"", b"\x30\x00", PUBLIC.spki_der()[:-1], PUBLIC.spki_der() + b"\x00"])
def test_malformed_public_key_raises_invalid_key(data: bytes) -> None:
    with pytest.raises(InvalidKey):
        load_sm2_public_key(data)


def _bad_signatures() -> list[bytes]:
    good = KEY.sign(b"message")
    seq = core.Sequence.load(good)
    r, s = seq[0].native, seq[1].native
    return [
        b"",
        b"\x30\x00",
        good[:-1],
        good + b"\x00",
        der_sequence(core.Integer(0), core.Integer(s)),
        der_sequence(core.Integer(r), core.Integer(N)),
        der_sequence(core.Integer(-r), core.Integer(s)),
        der_sequence(core.Integer(r), core.Integer(s), core.Integer(1)),
        der_sequence(core.Integer(r), core.Integer((N - r) % N)),
        good[:1] + b"\x81" + good[1:],  # BER long-form length: not DER
    ]


@pytest.mark.parametrize("index", range(10))
def test_malformed_signatures_raise_invalid_signature(index: int, backend: str) -> None:
    signature = _bad_signatures()[index]
    with pytest.raises(InvalidSignature):
        PUBLIC.verify(signature, b"message")
    with pytest.raises(InvalidSignature):
        get_backend(backend).verify(PUBLIC, signature, b"message")


def test_wrong_message_or_id_raises_invalid_signature(backend: str) -> None:
    signature = get_backend(backend).sign(KEY, b"message", b"alice@example")
    for message, uid in ((b"messagE", b"alice@example"), (b"message", b"bob@example"), (b"message", b"")):
        with pytest.raises(InvalidSignature):
            get_backend(backend).verify(PUBLIC, signature, message, uid)


def _tampered_ciphertexts() -> list[bytes]:
    good = PUBLIC.encrypt(b"pre-master secret 48 bytes long.................")
    raw = sm2_ciphertext_to_c1c3c2(good)

    def flip(i: int) -> bytes:
        return sm2_c1c3c2_to_der(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1 :])

    return [
        b"",
        good[:-1],
        good + b"\x00",
        flip(70),  # C3
        flip(len(raw) - 1),  # C2
        flip(10),  # C1.x: almost surely off the curve
        flip(64),  # C1.y
        der_sequence(core.Integer(1), core.Integer(2), core.OctetString(bytes(32)), core.OctetString(b"x")),
        der_sequence(core.Integer(-1), core.Integer(2), core.OctetString(bytes(32)), core.OctetString(b"x")),
        der_sequence(  # empty C2
            core.Integer(int.from_bytes(raw[1:33], "big")),
            core.Integer(int.from_bytes(raw[33:65], "big")),
            core.OctetString(raw[65:97]),
            core.OctetString(b""),
        ),
    ]


@pytest.mark.parametrize("index", range(10))
def test_tampered_ciphertexts_raise_decryption_error(index: int, backend: str) -> None:
    ciphertext = _tampered_ciphertexts()[index]
    with pytest.raises(DecryptionError):
        KEY.decrypt(ciphertext)
    with pytest.raises(DecryptionError):
        get_backend(backend).decrypt(KEY, ciphertext)


@pytest.mark.parametrize("raw", [b"", b"\x04" + bytes(96), b"\x02" + bytes(120)])
def test_malformed_raw_ciphertext_raises_decryption_error(raw: bytes) -> None:
    with pytest.raises(DecryptionError):
        sm2_c1c3c2_to_der(raw)
    with pytest.raises(DecryptionError):
        sm2_c1c2c3_to_c1c3c2(raw)


def test_misuse_raises_crypto_error(backend: str) -> None:
    with use_backend(backend):
        with pytest.raises(CryptoError):
            PUBLIC.encrypt(b"")
        with pytest.raises(CryptoError):
            KEY.sign(b"m", b"x" * 9000)
        with pytest.raises(CryptoError):
            sm2_key_exchange(
                initiator=True,
                static_key=KEY,
                ephemeral_key=KEY,
                peer_static=PUBLIC,
                peer_ephemeral=PUBLIC,
                key_length=0,
            )


def test_unknown_backend_raises_unsupported_algorithm() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        get_backend("nss")
    with pytest.raises(UnsupportedAlgorithm):
        set_backend("nss")
    with pytest.raises(UnsupportedAlgorithm), use_backend("nss"):
        pass


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    for call in (
        lambda: load_sm2_private_key(data),
        lambda: load_sm2_private_key(data, b"pw"),
        lambda: load_sm2_public_key(data),
        lambda: PUBLIC.verify(data, b"m"),
        lambda: KEY.decrypt(data),
        lambda: sm2_ciphertext_to_c1c3c2(data),
    ):
        try:
            call()
        except CryptoError:
            pass


_SEEDS = [
    KEY.to_pkcs8_der(),
    KEY.to_sec1_der(),
    KEY.to_pkcs8_der(b"pw", iterations=1),
    KEY.to_pkcs8_pem(),
    PUBLIC.spki_der(),
    KEY.sign(b"m"),
    PUBLIC.encrypt(b"hello"),
]


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    """A valid key/signature/ciphertext encoding with a few bytes replaced, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        position = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "insert" or not data:
            data.insert(position, draw(st.integers(min_value=0, max_value=255)))
        elif action == "replace":
            data[min(position, len(data) - 1)] = draw(st.integers(min_value=0, max_value=255))
        else:
            del data[min(position, len(data) - 1)]
    return bytes(data)


@settings(max_examples=50, deadline=None)
@given(data=mutated_encodings(), backend=st.sampled_from(BACKENDS))
def test_mutated_encodings_raise_only_crypto_errors(data: bytes, backend: str) -> None:
    with use_backend(backend):
        for call in (
            lambda: load_sm2_private_key(data),
            lambda: load_sm2_private_key(data, b"pw"),
            lambda: load_sm2_public_key(data),
            lambda: PUBLIC.verify(data, b"m"),
            lambda: KEY.decrypt(data),
        ):
            try:
                call()
            except CryptoError:
                pass
