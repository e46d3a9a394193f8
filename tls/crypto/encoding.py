"""ASN.1/PEM encodings of SM2 keys, signatures and ciphertexts (asn1crypto), plus PBES2 key wrapping.

Owns: SubjectPublicKeyInfo, PKCS#8 PrivateKeyInfo, SEC1 ECPrivateKey, encrypted PKCS#8 (PBES2 with
PBKDF2 and a CBC cipher: GmSSL's PBKDF2-HMAC-SM3 + SM4-CBC, and OpenSSL's HMAC-SHA* + AES-CBC), the
SM2 signature SEQUENCE{r, s}, and the GM/T 0009 ciphertext SEQUENCE{x, y, hash, ciphertext}.

Parsing is strict: DER must re-encode to the same bytes, so malleable encodings are rejected before a
backend sees them.  PBKDF2 and the block ciphers come from ``cryptography``; nothing is hand-rolled.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from asn1crypto import core, pem
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from tls.crypto.curve import EC_PUBLIC_KEY_OID, FIELD_SIZE, POINT_SIZE, SM2_CURVE_OID, N, P, int_to_bytes
from tls.crypto.errors import DecryptionError, InvalidKey, InvalidSignature

PBES2_OID = "1.2.840.113549.1.5.13"
PBKDF2_OID = "1.2.840.113549.1.5.12"
HMAC_SM3_OID = "1.2.156.10197.1.401.2"
SM4_CBC_OID = "1.2.156.10197.1.104.2"
DEFAULT_PBKDF2_ITERATIONS = 65536

_PRF_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    HMAC_SM3_OID: hashes.SM3,
    "1.2.840.113549.2.7": hashes.SHA1,
    "1.2.840.113549.2.9": hashes.SHA256,
    "1.2.840.113549.2.10": hashes.SHA384,
    "1.2.840.113549.2.11": hashes.SHA512,
}
# cipher OID -> (algorithm factory, key length)
_PBES2_CIPHERS: dict[str, tuple[str, int]] = {
    SM4_CBC_OID: ("sm4", 16),
    "2.16.840.1.101.3.4.1.2": ("aes", 16),
    "2.16.840.1.101.3.4.1.22": ("aes", 24),
    "2.16.840.1.101.3.4.1.42": ("aes", 32),
}
_MAX_PBKDF2_ITERATIONS = 10_000_000

# What asn1crypto raises on malformed or unexpected input (found by mutation fuzzing): all of these
# become the documented CryptoError subclass.
_ASN1_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


class _AlgorithmIdentifier(core.Sequence):
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class _SubjectPublicKeyInfo(core.Sequence):
    _fields = [("algorithm", _AlgorithmIdentifier), ("public_key", core.OctetBitString)]


class _ECPrivateKey(core.Sequence):
    _fields = [
        ("version", core.Integer),
        ("private_key", core.OctetString),
        ("parameters", core.ObjectIdentifier, {"explicit": 0, "optional": True}),
        ("public_key", core.OctetBitString, {"explicit": 1, "optional": True}),
    ]


class _PrivateKeyInfo(core.Sequence):
    _fields = [
        ("version", core.Integer),
        ("private_key_algorithm", _AlgorithmIdentifier),
        ("private_key", core.OctetString),
        ("attributes", core.Any, {"implicit": 0, "optional": True}),
        ("public_key", core.Any, {"implicit": 1, "optional": True}),
    ]


class _EncryptedPrivateKeyInfo(core.Sequence):
    _fields = [("encryption_algorithm", _AlgorithmIdentifier), ("encrypted_data", core.OctetString)]


class _PBES2Params(core.Sequence):
    _fields = [("key_derivation_func", _AlgorithmIdentifier), ("encryption_scheme", _AlgorithmIdentifier)]


class _PBKDF2Params(core.Sequence):
    _fields = [
        ("salt", core.OctetString),
        ("iteration_count", core.Integer),
        ("key_length", core.Integer, {"optional": True}),
        ("prf", _AlgorithmIdentifier, {"optional": True}),
    ]


class _SM2Signature(core.Sequence):
    _fields = [("r", core.Integer), ("s", core.Integer)]


class _SM2Ciphertext(core.Sequence):
    _fields = [
        ("x", core.Integer),
        ("y", core.Integer),
        ("hash", core.OctetString),
        ("ciphertext", core.OctetString),
    ]


def _strict_load(cls: type[core.Sequence], der: bytes) -> Any:
    """Load ``der`` as ``cls`` and require canonical DER (no trailing data, minimal lengths/integers)."""
    value = cls.load(der, strict=True)
    value.native  # noqa: B018 - forces full parse so malformed inner values raise here
    if value.dump(force=True) != der:
        raise ValueError("non-canonical DER")
    return value


def _sm2_params_der() -> bytes:
    return bytes(core.ObjectIdentifier(SM2_CURVE_OID).dump())


def _ec_algorithm() -> _AlgorithmIdentifier:
    return _AlgorithmIdentifier(
        {"algorithm": EC_PUBLIC_KEY_OID, "parameters": core.ObjectIdentifier(SM2_CURVE_OID)}
    )


# --- PEM -------------------------------------------------------------------------------------------


def to_pem(label: str, der: bytes) -> bytes:
    return bytes(pem.armor(label, der))


def pem_blocks(data: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """Every PEM block in ``data`` as (label, headers, der); [] when ``data`` is not PEM."""
    if not pem.detect(data):
        return []
    try:
        return [
            (label, dict(headers), bytes(der)) for label, headers, der in pem.unarmor(data, multiple=True)
        ]
    except _ASN1_ERRORS as exc:
        raise InvalidKey("malformed PEM") from exc


# --- public keys -----------------------------------------------------------------------------------


def encode_spki(point: bytes) -> bytes:
    info = _SubjectPublicKeyInfo({"algorithm": _ec_algorithm(), "public_key": core.OctetBitString(point)})
    return bytes(info.dump())


def _bitstring_bytes(value: core.OctetBitString) -> bytes:
    contents = bytes(value.contents)
    if not contents or contents[0] != 0:
        raise ValueError("BIT STRING with unused bits")
    return contents[1:]


def _check_sm2_algorithm(alg: _AlgorithmIdentifier) -> None:
    oid = alg["algorithm"].dotted
    params = alg["parameters"]
    if oid == EC_PUBLIC_KEY_OID:
        if not params or params.dump() != _sm2_params_der():
            raise InvalidKey("EC key is not on the SM2 curve")
    elif oid != SM2_CURVE_OID:
        raise InvalidKey(f"not an SM2 key (algorithm {oid})")


def decode_spki(der: bytes) -> bytes:
    """Return the encoded public point (not yet validated) from a SubjectPublicKeyInfo."""
    try:
        info = _strict_load(_SubjectPublicKeyInfo, der)
        _check_sm2_algorithm(info["algorithm"])
        return _bitstring_bytes(info["public_key"])
    except InvalidKey:
        raise
    except _ASN1_ERRORS as exc:
        raise InvalidKey("malformed SubjectPublicKeyInfo") from exc


# --- private keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedPrivateKey:
    scalar: int
    public_point: bytes | None  # as encoded, not yet validated


def encode_sec1(scalar: int, point: bytes, *, with_parameters: bool = True) -> bytes:
    fields: dict[str, Any] = {"version": 1, "private_key": int_to_bytes(scalar)}
    if with_parameters:
        fields["parameters"] = core.ObjectIdentifier(SM2_CURVE_OID)
    fields["public_key"] = core.OctetBitString(point)
    return bytes(_ECPrivateKey(fields).dump())


def encode_pkcs8(scalar: int, point: bytes) -> bytes:
    info = _PrivateKeyInfo(
        {
            "version": 0,
            "private_key_algorithm": _ec_algorithm(),
            "private_key": encode_sec1(scalar, point, with_parameters=False),
        }
    )
    return bytes(info.dump())


def _decode_sec1(der: bytes) -> DecodedPrivateKey:
    key = _strict_load(_ECPrivateKey, der)
    if key["version"].native != 1:
        raise InvalidKey("unsupported ECPrivateKey version")
    params = key["parameters"]
    if params.native is not None and params.dotted != SM2_CURVE_OID:
        raise InvalidKey("EC key is not on the SM2 curve")
    raw = bytes(key["private_key"].native)
    if len(raw) > FIELD_SIZE:
        raise InvalidKey("SM2 private scalar longer than 32 bytes")
    pub = key["public_key"]
    point = _bitstring_bytes(pub) if pub.native is not None else None
    return DecodedPrivateKey(int.from_bytes(raw, "big"), point)


def _decode_pkcs8(der: bytes) -> DecodedPrivateKey:
    info = _strict_load(_PrivateKeyInfo, der)
    if info["version"].native not in (0, 1):
        raise InvalidKey("unsupported PrivateKeyInfo version")
    _check_sm2_algorithm(info["private_key_algorithm"])
    return _decode_sec1(bytes(info["private_key"].native))


def decode_private_der(der: bytes, password: bytes | None) -> DecodedPrivateKey:
    """Decode PKCS#8, encrypted PKCS#8 or SEC1 DER (tried in that order)."""
    errors: list[Exception] = []
    for decoder in (_decode_pkcs8, _decode_sec1):
        try:
            return decoder(der)
        except InvalidKey:
            raise
        except _ASN1_ERRORS as exc:
            errors.append(exc)
    try:
        encrypted = _strict_load(_EncryptedPrivateKeyInfo, der)
    except _ASN1_ERRORS:
        raise InvalidKey("not an SM2 private key (PKCS#8, encrypted PKCS#8 or SEC1)") from errors[0]
    if password is None:
        raise InvalidKey("private key is encrypted and no password was given")
    return _decode_pkcs8_or_wrong_password(decrypt_pkcs8(encrypted, password))


def _decode_pkcs8_or_wrong_password(der: bytes) -> DecodedPrivateKey:
    try:
        return _decode_pkcs8(der)
    except _ASN1_ERRORS as exc:
        raise InvalidKey("wrong password or corrupt encrypted private key") from exc


# --- PBES2 -----------------------------------------------------------------------------------------


def _cipher_algorithm(kind: str, key: bytes) -> algorithms.SM4 | algorithms.AES:
    return algorithms.SM4(key) if kind == "sm4" else algorithms.AES(key)


def decrypt_pkcs8(encrypted: Any, password: bytes) -> bytes:
    """Decrypt an EncryptedPrivateKeyInfo protected with PBES2 (RFC 8018) and return the PKCS#8 DER."""
    if not isinstance(password, bytes | bytearray):
        raise InvalidKey("password must be bytes")
    try:
        alg = encrypted["encryption_algorithm"]
        if alg["algorithm"].dotted != PBES2_OID:
            raise InvalidKey(f"unsupported key encryption scheme {alg['algorithm'].dotted}")
        params = _strict_load(_PBES2Params, alg["parameters"].dump())
        kdf_alg = params["key_derivation_func"]
        if kdf_alg["algorithm"].dotted != PBKDF2_OID:
            raise InvalidKey("unsupported PBES2 key derivation function")
        kdf_params = _strict_load(_PBKDF2Params, kdf_alg["parameters"].dump())
        scheme = params["encryption_scheme"]
        cipher_oid = scheme["algorithm"].dotted
        if cipher_oid not in _PBES2_CIPHERS:
            raise InvalidKey(f"unsupported PBES2 cipher {cipher_oid}")
        kind, key_length = _PBES2_CIPHERS[cipher_oid]
        iv = core.OctetString.load(scheme["parameters"].dump()).native
        prf = kdf_params["prf"]
        prf_oid = prf["algorithm"].dotted if prf.native is not None else "1.2.840.113549.2.7"
        if prf_oid not in _PRF_HASHES:
            raise InvalidKey(f"unsupported PBKDF2 PRF {prf_oid}")
        iterations = kdf_params["iteration_count"].native
        declared = kdf_params["key_length"].native
        salt = kdf_params["salt"].native
        data = bytes(encrypted["encrypted_data"].native)
    except InvalidKey:
        raise
    except _ASN1_ERRORS as exc:
        raise InvalidKey("malformed encrypted private key") from exc
    if not isinstance(iterations, int) or not 1 <= iterations <= _MAX_PBKDF2_ITERATIONS:
        raise InvalidKey("PBKDF2 iteration count out of range")
    if declared is not None and declared != key_length:
        raise InvalidKey("PBKDF2 key length does not match the cipher")
    if not isinstance(salt, bytes) or not isinstance(iv, bytes) or len(iv) != 16:
        raise InvalidKey("malformed encrypted private key")
    if not data or len(data) % 16:
        raise InvalidKey("malformed encrypted private key")
    key = PBKDF2HMAC(
        algorithm=_PRF_HASHES[prf_oid](), length=key_length, salt=salt, iterations=iterations
    ).derive(password)
    dec = Cipher(_cipher_algorithm(kind, key), modes.CBC(iv)).decryptor()
    padded = dec.update(data) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise InvalidKey("wrong password or corrupt encrypted private key") from None


def encrypt_pkcs8(pkcs8_der: bytes, password: bytes, *, iterations: int = DEFAULT_PBKDF2_ITERATIONS) -> bytes:
    """Wrap PKCS#8 DER as GmSSL does: PBES2, PBKDF2-HMAC-SM3 (16-byte salt), SM4-CBC."""
    if not isinstance(password, bytes | bytearray):
        raise InvalidKey("password must be bytes")
    if not 1 <= iterations <= _MAX_PBKDF2_ITERATIONS:
        raise InvalidKey("PBKDF2 iteration count out of range")
    salt = secrets.token_bytes(16)
    iv = secrets.token_bytes(16)
    key = PBKDF2HMAC(algorithm=hashes.SM3(), length=16, salt=salt, iterations=iterations).derive(password)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(pkcs8_der) + padder.finalize()
    enc = Cipher(algorithms.SM4(key), modes.CBC(iv)).encryptor()
    data = enc.update(padded) + enc.finalize()
    kdf_params = _PBKDF2Params(
        {
            "salt": salt,
            "iteration_count": iterations,
            "key_length": 16,
            # GmSSL writes the HMAC-SM3 PRF with absent parameters and rejects an explicit NULL.
            "prf": _AlgorithmIdentifier({"algorithm": HMAC_SM3_OID}),
        }
    )
    pbes2 = _PBES2Params(
        {
            "key_derivation_func": _AlgorithmIdentifier({"algorithm": PBKDF2_OID, "parameters": kdf_params}),
            "encryption_scheme": _AlgorithmIdentifier(
                {"algorithm": SM4_CBC_OID, "parameters": core.OctetString(iv)}
            ),
        }
    )
    info = _EncryptedPrivateKeyInfo(
        {
            "encryption_algorithm": _AlgorithmIdentifier({"algorithm": PBES2_OID, "parameters": pbes2}),
            "encrypted_data": data,
        }
    )
    return bytes(info.dump(force=True))


# --- signatures and ciphertexts --------------------------------------------------------------------


def encode_signature(r: int, s: int) -> bytes:
    return bytes(_SM2Signature({"r": r, "s": s}).dump())


def decode_signature(der: bytes) -> tuple[int, int]:
    """Strict SEQUENCE{r, s} with 1 <= r, s < n; anything else raises :class:`InvalidSignature`."""
    try:
        sig = _strict_load(_SM2Signature, der)
        r, s = sig["r"].native, sig["s"].native
    except _ASN1_ERRORS as exc:
        raise InvalidSignature("malformed SM2 signature") from exc
    if not (1 <= r < N and 1 <= s < N):
        raise InvalidSignature("SM2 signature component out of range")
    return r, s


def encode_ciphertext(c1: bytes, c3: bytes, c2: bytes) -> bytes:
    if len(c1) != POINT_SIZE or c1[0] != 4:
        raise DecryptionError("C1 must be a 65-byte uncompressed point")
    value = _SM2Ciphertext(
        {
            "x": int.from_bytes(c1[1 : 1 + FIELD_SIZE], "big"),
            "y": int.from_bytes(c1[1 + FIELD_SIZE :], "big"),
            "hash": c3,
            "ciphertext": c2,
        }
    )
    return bytes(value.dump())


def _der_element(der: bytes, position: int, tag: int) -> tuple[int, int]:
    """Content bounds of the DER element at ``position``: identifier ``tag``, definite minimal length."""
    if position + 2 > len(der) or der[position] != tag:
        raise ValueError("unexpected DER element")
    length = der[position + 1]
    position += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or position + count > len(der) or der[position] == 0:
            raise ValueError("bad DER length")
        length = int.from_bytes(der[position : position + count], "big")
        if length < 0x80:
            raise ValueError("non-minimal DER length")
        position += count
    end = position + length
    if end > len(der):
        raise ValueError("DER element longer than its container")
    return position, end


def _der_unsigned(der: bytes, start: int, end: int) -> int:
    """A minimally encoded, non-negative DER INTEGER's value."""
    if start == end or der[start] & 0x80:
        raise ValueError("empty or negative INTEGER")
    if end - start > 1 and der[start] == 0 and not der[start + 1] & 0x80:
        raise ValueError("non-minimal INTEGER")
    return int.from_bytes(der[start:end], "big")


def decode_ciphertext(der: bytes) -> tuple[bytes, bytes, bytes]:
    """Strict GM/T 0009 ciphertext DER -> (C1 as 65-byte point, C3, C2); raises DecryptionError.

    SEQUENCE { INTEGER x, INTEGER y, OCTET STRING hash, OCTET STRING ciphertext } in canonical DER
    (the same inputs ``_strict_load`` accepts), read directly: this runs on every TLCP ECC handshake,
    where asn1crypto's generic decoder cost about a tenth of the SM2 decryption itself.
    """
    try:
        der = bytes(der)
        start, end = _der_element(der, 0, 0x30)
        if end != len(der):
            raise ValueError("trailing data after the ciphertext")
        x_start, x_end = _der_element(der, start, 0x02)
        y_start, y_end = _der_element(der, x_end, 0x02)
        c3_start, c3_end = _der_element(der, y_end, 0x04)
        c2_start, c2_end = _der_element(der, c3_end, 0x04)
        if c2_end != end:
            raise ValueError("extra fields in the ciphertext")
        x, y = _der_unsigned(der, x_start, x_end), _der_unsigned(der, y_start, y_end)
    except (ValueError, TypeError) as exc:
        raise DecryptionError("malformed SM2 ciphertext") from exc
    c3, c2 = der[c3_start:c3_end], der[c2_start:c2_end]
    if not (0 <= x < P and 0 <= y < P) or len(c3) != 32 or not c2:
        raise DecryptionError("malformed SM2 ciphertext")
    return b"\x04" + int_to_bytes(x) + int_to_bytes(y), c3, c2
