"""Published known-answer vectors and the runtime self-check built on them.

Sources: SM3 — GB/T 32905 Appendix A ("abc" and "abcd" x 16); SM4 — GB/T 32907 Appendix A;
SM4-GCM — RFC 8998 Appendix A.1; SM2 on the recommended curve sm2p256v1 — GM/T 0003.5-2012 /
GB/T 32918.5-2017 Annex A (signature), Annex B (key exchange, with S_A/S_B) and Annex C (encryption,
serialised as GM/T 0009 DER).
The signature and encryption vectors need a fixed nonce k, which only the gmssl backend accepts; the
openssl backend is checked by verifying/decrypting those outputs.  :func:`run_selfcheck` is what
``smgate selfcheck`` prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from tls.crypto.backends import get_backend, use_backend
from tls.crypto.errors import CryptoError
from tls.crypto.hashes import sm3
from tls.crypto.keys import SM2PrivateKey
from tls.crypto.kx import sm2_key_exchange
from tls.crypto.sm4 import SM4GCM, sm4_ecb_encrypt

SM3_ABC = bytes.fromhex("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
SM3_ABCD16 = bytes.fromhex("debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732")

SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
SM4_CIPHERTEXT = bytes.fromhex("681edf34d206965e86b3e94f536e4246")

# RFC 8998 Appendix A.1: SM4-GCM.
GCM_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
GCM_NONCE = bytes.fromhex("00001234567800000000ABCD")
GCM_AAD = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
GCM_PLAINTEXT = bytes.fromhex(
    "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
    "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
)
GCM_SEALED = bytes.fromhex(
    "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
    "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    "83DE3541E4C2B58177E065A9BF7B62EC"
)

SIGN_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
SIGN_K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
SIGN_MESSAGE = b"message digest"
SIGN_DER = bytes.fromhex(
    "3046022100F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "022100B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)
ENCRYPT_MESSAGE = b"encryption standard"
ENCRYPT_DER = bytes.fromhex(
    "307C022004EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73"
    "022100E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0"
    "042059983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766"
    "041321886CA989CA9C7D58087307CA93092D651EFA"
)
KX_DA = 0x81EB26E941BB5AF16DF116495F90695272AE2CD63D6C4AE1678418BE48230029
KX_DB = 0x785129917D45A9EA5437A59356B82338EAADDA6CEB199088F14AE10DEFA229B5
KX_RA = 0xD4DE15474DB74D06491C440D305E012400990F3E390C7E87153C12DB2EA60BB3
KX_RB = 0x7E07124814B309489125EAED101113164EBF0F3458C5BD88335C1F9D596243D6
KX_KEY = bytes.fromhex("6C89347354DE2484C60B4AB1FDE4C6E5")
KX_SB = bytes.fromhex("D3A0FE15DEE185CEAE907A6B595CC32A266ED7B3367E9983A896DC32FA20F8EB")
KX_SA = bytes.fromhex("18C7894B3816DF16CF07B05C5EC0BEF5D655D58F779CC1B400A4F3884644DB88")


@dataclass(frozen=True)
class CheckResult:
    backend: str
    name: str
    ok: bool
    detail: str = ""


def _check_sm3() -> None:
    if sm3(b"abc") != SM3_ABC or sm3(b"abcd" * 16) != SM3_ABCD16:
        raise CryptoError("SM3 known answer mismatch")


def _check_sm4() -> None:
    if sm4_ecb_encrypt(SM4_KEY, SM4_KEY) != SM4_CIPHERTEXT:
        raise CryptoError("SM4 known answer mismatch")
    sealed = SM4GCM(GCM_KEY).encrypt(GCM_NONCE, GCM_PLAINTEXT, GCM_AAD)
    if sealed != GCM_SEALED or SM4GCM(GCM_KEY).decrypt(GCM_NONCE, sealed, GCM_AAD) != GCM_PLAINTEXT:
        raise CryptoError("SM4-GCM known answer mismatch")


def _check_sm2_kat(backend: str) -> None:
    impl = get_backend(backend)
    key = SM2PrivateKey(SIGN_D)
    if backend == "gmssl":
        from tls.crypto.backends.gmssl import GmSSLBackend  # only gmssl can fix the nonce k

        if not isinstance(impl, GmSSLBackend):
            raise CryptoError("gmssl backend has an unexpected type")
        if impl.sign_with_k(key, SIGN_MESSAGE, SIGN_K) != SIGN_DER:
            raise CryptoError("SM2 signature known answer mismatch")
        if impl.encrypt_with_k(key.public_key(), ENCRYPT_MESSAGE, SIGN_K) != ENCRYPT_DER:
            raise CryptoError("SM2 encryption known answer mismatch")
    impl.verify(key.public_key(), SIGN_DER, SIGN_MESSAGE)
    if impl.decrypt(key, ENCRYPT_DER) != ENCRYPT_MESSAGE:
        raise CryptoError("SM2 decryption known answer mismatch")


def _check_kx_kat(backend: str) -> None:
    da, db, ra, rb = (SM2PrivateKey(v) for v in (KX_DA, KX_DB, KX_RA, KX_RB))
    with use_backend(backend):
        a = sm2_key_exchange(
            initiator=True,
            static_key=da,
            ephemeral_key=ra,
            peer_static=db.public_key(),
            peer_ephemeral=rb.public_key(),
            key_length=len(KX_KEY),
            confirmation=True,
        )
    if (a.key, a.own_confirmation, a.expected_peer_confirmation) != (KX_KEY, KX_SA, KX_SB):
        raise CryptoError("SM2 key exchange known answer mismatch")


def _check_round_trip(backend: str) -> None:
    impl = get_backend(backend)
    key = SM2PrivateKey.generate()
    peer = SM2PrivateKey.generate()
    message = b"smgate selfcheck"
    impl.verify(key.public_key(), impl.sign(key, message, b"selfcheck@smgate"), message, b"selfcheck@smgate")
    if impl.decrypt(key, impl.encrypt(key.public_key(), message)) != message:
        raise CryptoError("SM2 encrypt/decrypt round trip mismatch")
    with use_backend(backend):
        ra, rb = SM2PrivateKey.generate(), SM2PrivateKey.generate()
        a = sm2_key_exchange(
            initiator=True,
            static_key=key,
            ephemeral_key=ra,
            peer_static=peer.public_key(),
            peer_ephemeral=rb.public_key(),
            key_length=48,
            confirmation=True,
        )
        b = sm2_key_exchange(
            initiator=False,
            static_key=peer,
            ephemeral_key=rb,
            peer_static=key.public_key(),
            peer_ephemeral=ra.public_key(),
            key_length=48,
            confirmation=True,
        )
        if a.key != b.key or a.own_confirmation != b.expected_peer_confirmation:
            raise CryptoError("SM2 key exchange round trip mismatch")
        if key.exchange(peer.public_key()) != peer.exchange(key.public_key()):
            raise CryptoError("SM2 ECDH round trip mismatch")


def _run(backend: str, name: str, check: Callable[[], None]) -> CheckResult:
    try:
        check()
    except Exception as exc:  # the self-check reports every failure instead of stopping at the first
        return CheckResult(backend, name, False, f"{type(exc).__name__}: {exc}")
    return CheckResult(backend, name, True)


def run_selfcheck(backends: list[str]) -> list[CheckResult]:
    results = [_run("-", "SM3 KAT", _check_sm3), _run("-", "SM4 KAT", _check_sm4)]
    for backend in backends:
        results.append(_run(backend, "SM2 sign/encrypt KAT", partial(_check_sm2_kat, backend)))
        results.append(_run(backend, "SM2 key exchange KAT", partial(_check_kx_kat, backend)))
        results.append(_run(backend, "SM2 round trip", partial(_check_round_trip, backend)))
    return results
