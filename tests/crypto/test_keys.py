"""Key loading and saving: the shared GmSSL and Tongsuo keys against their certificates, every encoding
round trip, GmSSL-style encrypted PKCS#8, and tongsuopy (BabaSSL) as an independent encoder/decoder."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from asn1crypto import core, pem, x509
from tongsuopy.crypto import serialization as tongsuo_serialization
from tongsuopy.crypto.asymciphers import ec as tongsuo_ec

from tests.conftest import SHARED
from tls.crypto import (
    InvalidKey,
    SM2PrivateKey,
    SM2PublicKey,
    load_sm2_private_key,
    load_sm2_public_key,
    use_backend,
)

GMSSL_CERTS = SHARED / "tlcp" / "gmssl" / "certs"
TONGSUO_CERTS = SHARED / "tlcp" / "tongsuo" / "certs"
GMSSL_PASSWORD = b"P@ssw0rd"
GMSSL_NAMES = ["root_ca", "server_sign", "server_enc", "client_sign", "client_enc"]
TONGSUO_NAMES = ["ca", "server_sign", "server_enc", "client_sign", "client_enc"]

# PBES2 layout GmSSL writes (see the shared *_key.pem files).
PBES2, PBKDF2, HMAC_SM3, SM4_CBC = (
    "1.2.840.113549.1.5.13",
    "1.2.840.113549.1.5.12",
    "1.2.156.10197.1.401.2",
    "1.2.156.10197.1.104.2",
)


def cert_public_key(path: Path) -> SM2PublicKey:
    """The certificate's SubjectPublicKeyInfo via asn1crypto (``cryptography`` rejects the SM2 curve)."""
    _, _, der = pem.unarmor(path.read_bytes())
    spki = x509.Certificate.load(der)["tbs_certificate"]["subject_public_key_info"]
    return load_sm2_public_key(spki.dump())


@pytest.mark.parametrize("name", GMSSL_NAMES)
def test_gmssl_encrypted_key_matches_plain_copy_and_certificate(name: str, backend: str) -> None:
    with use_backend(backend):
        encrypted = load_sm2_private_key((GMSSL_CERTS / f"{name}_key.pem").read_bytes(), GMSSL_PASSWORD)
        plain = load_sm2_private_key((GMSSL_CERTS / f"{name}_key_plain.pem").read_bytes())
        assert encrypted == plain
        assert encrypted.public_key() == cert_public_key(GMSSL_CERTS / f"{name}_cert.pem")


def test_gmssl_key_wrong_or_missing_password_raises() -> None:
    data = (GMSSL_CERTS / "server_enc_key.pem").read_bytes()
    with pytest.raises(InvalidKey):
        load_sm2_private_key(data, b"wrong password")
    with pytest.raises(InvalidKey):
        load_sm2_private_key(data)


@pytest.mark.parametrize("name", TONGSUO_NAMES)
def test_tongsuo_key_matches_certificate(name: str) -> None:
    key = load_sm2_private_key((TONGSUO_CERTS / f"{name}.key").read_bytes())
    assert key.public_key() == cert_public_key(TONGSUO_CERTS / f"{name}.crt")


def test_encodings_round_trip(backend: str) -> None:
    with use_backend(backend):
        key = SM2PrivateKey.generate()
        for encoded in (
            key.to_pkcs8_der(),
            key.to_pkcs8_pem(),
            key.to_sec1_der(),
            key.to_sec1_pem(),
            key.scalar_bytes(),
        ):
            assert load_sm2_private_key(encoded) == key
        public = key.public_key()
        for encoded in (public.spki_der(), public.spki_pem(), public.to_bytes()):
            assert load_sm2_public_key(encoded) == public


def test_encrypted_pkcs8_round_trip_uses_gmssl_layout() -> None:
    key = SM2PrivateKey.generate()
    encrypted = key.to_pkcs8_pem(b"secret", iterations=1000)
    assert encrypted.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_sm2_private_key(encrypted, b"secret") == key
    with pytest.raises(InvalidKey):
        load_sm2_private_key(encrypted, b"Secret")

    _, _, der = pem.unarmor(encrypted)
    outer = core.Sequence.load(der)
    algorithm = outer[0]
    assert algorithm[0].native == PBES2
    kdf, cipher = algorithm[1][0], algorithm[1][1]
    assert kdf[0].native == PBKDF2
    salt, iterations, key_length, prf = kdf[1][0], kdf[1][1], kdf[1][2], kdf[1][3]
    assert (len(salt.native), iterations.native, key_length.native, prf[0].native) == (16, 1000, 16, HMAC_SM3)
    assert cipher[0].native == SM4_CBC and len(cipher[1].native) == 16


def test_encrypted_pkcs8_default_iterations_match_gmssl() -> None:
    key = SM2PrivateKey.generate()
    _, _, der = pem.unarmor(key.to_pkcs8_pem(b"secret"))
    _, _, gmssl_der = pem.unarmor((GMSSL_CERTS / "server_sign_key.pem").read_bytes())
    ours = core.Sequence.load(der)[0][1][0][1][1].native
    theirs = core.Sequence.load(gmssl_der)[0][1][0][1][1].native
    assert ours == theirs


def test_encrypted_pkcs8_prf_encoding_matches_gmssl() -> None:
    """GmSSL 3.x refuses a PBKDF2 PRF AlgorithmIdentifier with parameters (even NULL)."""
    key = SM2PrivateKey.generate()
    _, _, der = pem.unarmor(key.to_pkcs8_pem(b"secret", iterations=1000))
    _, _, gmssl_der = pem.unarmor((GMSSL_CERTS / "server_sign_key.pem").read_bytes())
    ours = core.Sequence.load(der)[0][1][0][1][3]
    theirs = core.Sequence.load(gmssl_der)[0][1][0][1][3]
    assert ours.dump() == theirs.dump() == bytes.fromhex("300b06092a811ccf5501831102")


def test_private_key_repr_hides_scalar() -> None:
    key = SM2PrivateKey.generate()
    assert key.scalar_bytes().hex() not in repr(key)
    assert f"{key.scalar:x}" not in repr(key)


def test_public_key_is_hashable_value() -> None:
    key = SM2PrivateKey.generate()
    a = SM2PublicKey.from_bytes(key.public_key().to_bytes())
    b = load_sm2_public_key(key.public_key().spki_der())
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a._point = b"\x04" + bytes(64)


def test_keys_copy_and_pickle_by_value() -> None:
    key = SM2PrivateKey.generate()
    key.public_key().verify(key.sign(b"m"), b"m")  # populate the native handle caches
    for clone in (copy.deepcopy(key), pickle.loads(pickle.dumps(key))):
        assert clone == key and clone is not key
        clone.public_key().verify(clone.sign(b"m"), b"m")
    public = key.public_key()
    assert copy.deepcopy(public) == public == pickle.loads(pickle.dumps(public))


def test_sec1_pem_with_ec_parameters_block_loads() -> None:
    key = SM2PrivateKey.generate()
    params = b"-----BEGIN EC PARAMETERS-----\nBggqgRzPVQGCLQ==\n-----END EC PARAMETERS-----\n"
    assert load_sm2_private_key(params + key.to_sec1_pem()) == key


def test_compressed_point_decodes_on_every_backend(backend: str) -> None:
    public = SM2PrivateKey.generate().public_key()
    compressed = bytes([2 | (public.y & 1)]) + public.to_bytes()[1:33]
    with use_backend(backend):
        assert SM2PublicKey.from_bytes(compressed) == public


# --- tongsuopy (BabaSSL) as an independent encoder/decoder ----------------------------------------


def test_tongsuopy_reads_our_encodings() -> None:
    key = SM2PrivateKey.generate()
    theirs = tongsuo_serialization.load_der_private_key(key.to_pkcs8_der(), None)
    assert theirs.private_numbers().private_value == key.scalar
    theirs_sec1 = tongsuo_serialization.load_pem_private_key(key.to_sec1_pem(), None)
    assert theirs_sec1.private_numbers().private_value == key.scalar
    public = tongsuo_serialization.load_der_public_key(key.public_key().spki_der())
    encoded = public.public_bytes(
        tongsuo_serialization.Encoding.X962, tongsuo_serialization.PublicFormat.UncompressedPoint
    )
    assert encoded == key.public_key().to_bytes()


@pytest.mark.parametrize(
    "private_format",
    [tongsuo_serialization.PrivateFormat.PKCS8, tongsuo_serialization.PrivateFormat.TraditionalOpenSSL],
)
def test_we_read_tongsuopy_encodings(private_format: tongsuo_serialization.PrivateFormat) -> None:
    theirs = tongsuo_ec.generate_private_key(tongsuo_ec.SM2())
    scalar = theirs.private_numbers().private_value
    for encoding in (tongsuo_serialization.Encoding.PEM, tongsuo_serialization.Encoding.DER):
        data = theirs.private_bytes(encoding, private_format, tongsuo_serialization.NoEncryption())
        assert load_sm2_private_key(data).scalar == scalar


def test_we_read_tongsuopy_encrypted_pkcs8() -> None:
    theirs = tongsuo_ec.generate_private_key(tongsuo_ec.SM2())
    data = theirs.private_bytes(
        tongsuo_serialization.Encoding.PEM,
        tongsuo_serialization.PrivateFormat.PKCS8,
        tongsuo_serialization.BestAvailableEncryption(b"tongsuo"),
    )
    assert load_sm2_private_key(data, b"tongsuo").scalar == theirs.private_numbers().private_value
