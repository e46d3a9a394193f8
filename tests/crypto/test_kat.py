"""Published known-answer vectors: SM3 (GB/T 32905), SM4 (GB/T 32907), SM2 on sm2p256v1 (GM/T 0003.5).

The SM2 vectors are literal copies of the published values (not imported from tls.crypto.kat), so a
typo in the provider's self-check data cannot make these tests agree with it.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tls.crypto import (
    SM2PrivateKey,
    SM2PublicKey,
    SM3Hash,
    get_backend,
    sm2_key_exchange,
    sm3,
    sm4_ecb_decrypt,
    sm4_ecb_encrypt,
    use_backend,
)
from tls.crypto.backends.gmssl import GmSSLBackend

# GB/T 32905-2016 Appendix A.
SM3_ABC = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
SM3_ABCD16 = "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"

# GB/T 32907-2016 Appendix A.
SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
SM4_EXAMPLE_1 = bytes.fromhex("681edf34d206965e86b3e94f536e4246")
SM4_EXAMPLE_2 = bytes.fromhex("595298c7c6fd271f0402f804c33d3f66")

# GM/T 0003.5-2012 / GB/T 32918.5 Annex A (signature) and Annex C (encryption), curve sm2p256v1.
D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
PUBLIC = bytes.fromhex(
    "0409F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
Z_A = bytes.fromhex("B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3")
E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")
K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
SIGNATURE = bytes.fromhex(f"3046022100{R:064X}022100{S:064X}")
CIPHERTEXT = bytes.fromhex(
    "307C022004EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73"
    "022100E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0"
    "042059983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766"
    "041321886CA989CA9C7D58087307CA93092D651EFA"
)

# GM/T 0003.5-2012 / GB/T 32918.5 Annex B (key exchange), both IDs 1234567812345678, klen = 128 bits.
KX_DA = 0x81EB26E941BB5AF16DF116495F90695272AE2CD63D6C4AE1678418BE48230029
KX_PA = bytes.fromhex(
    "04160E12897DF4EDB61DD812FEB96748FBD3CCF4FFE26AA6F6DB9540AF49C94232"
    "4A7DAD08BB9A459531694BEB20AA489D6649975E1BFCF8C4741B78B4B223007F"
)
KX_DB = 0x785129917D45A9EA5437A59356B82338EAADDA6CEB199088F14AE10DEFA229B5
KX_PB = bytes.fromhex(
    "046AE848C57C53C7B1B5FA99EB2286AF078BA64C64591B8B566F7357D576F16DFB"
    "EE489D771621A27B36C5C7992062E9CD09A9264386F3FBEA54DFF69305621C4D"
)
KX_RA = 0xD4DE15474DB74D06491C440D305E012400990F3E390C7E87153C12DB2EA60BB3
KX_RB = 0x7E07124814B309489125EAED101113164EBF0F3458C5BD88335C1F9D596243D6
KX_KEY = bytes.fromhex("6C89347354DE2484C60B4AB1FDE4C6E5")
KX_SB = bytes.fromhex("D3A0FE15DEE185CEAE907A6B595CC32A266ED7B3367E9983A896DC32FA20F8EB")
KX_SA = bytes.fromhex("18C7894B3816DF16CF07B05C5EC0BEF5D655D58F779CC1B400A4F3884644DB88")


def test_sm3_abc() -> None:
    assert sm3(b"abc").hex() == SM3_ABC


def test_sm3_512_bit_message() -> None:
    assert sm3(b"abcd" * 16).hex() == SM3_ABCD16


def test_sm3_incremental_matches_one_shot() -> None:
    h = SM3Hash()
    for _ in range(16):
        h.update(b"abcd")
        fork = h.copy()
        fork.update(b"tail")
    assert h.digest().hex() == SM3_ABCD16
    assert h.digest().hex() == SM3_ABCD16  # digest() does not consume the state
    assert fork.digest() == sm3(b"abcd" * 16 + b"tail")


def test_sm4_example_1() -> None:
    assert sm4_ecb_encrypt(SM4_KEY, SM4_KEY) == SM4_EXAMPLE_1
    assert sm4_ecb_decrypt(SM4_KEY, SM4_EXAMPLE_1) == SM4_KEY


@pytest.mark.slow
def test_sm4_example_2_one_million_iterations() -> None:
    # One ECB context re-encrypting its own output 1,000,000 times (GB/T 32907 Appendix A.2).
    encryptor = Cipher(algorithms.SM4(SM4_KEY), modes.ECB()).encryptor()
    block = SM4_KEY
    for _ in range(1_000_000):
        block = encryptor.update(block)
    assert block == SM4_EXAMPLE_2


def test_sm2_public_key_from_scalar(backend: str) -> None:
    with use_backend(backend):
        assert SM2PrivateKey.from_scalar(D).public_key().to_bytes() == PUBLIC
        assert SM2PrivateKey.from_scalar(KX_DA).public_key().to_bytes() == KX_PA
        assert SM2PrivateKey.from_scalar(KX_DB).public_key().to_bytes() == KX_PB


def test_sm2_z_value_and_message_digest() -> None:
    public = SM2PublicKey.from_bytes(PUBLIC)
    assert public.z_value() == Z_A == public.z_value(b"1234567812345678")
    assert sm3(public.z_value() + b"message digest") == E


def test_sm2_signature_with_fixed_k() -> None:
    backend = get_backend("gmssl")
    assert isinstance(backend, GmSSLBackend)
    assert backend.sign_with_k(SM2PrivateKey.from_scalar(D), b"message digest", K) == SIGNATURE


def test_sm2_encryption_with_fixed_k() -> None:
    backend = get_backend("gmssl")
    assert isinstance(backend, GmSSLBackend)
    public = SM2PrivateKey.from_scalar(D).public_key()
    assert backend.encrypt_with_k(public, b"encryption standard", K) == CIPHERTEXT


def test_sm2_published_signature_verifies(backend: str) -> None:
    key = SM2PrivateKey.from_scalar(D)
    get_backend(backend).verify(key.public_key(), SIGNATURE, b"message digest", b"1234567812345678")


def test_sm2_published_ciphertext_decrypts(backend: str) -> None:
    key = SM2PrivateKey.from_scalar(D)
    assert get_backend(backend).decrypt(key, CIPHERTEXT) == b"encryption standard"


@pytest.mark.parametrize("initiator", [True, False])
def test_sm2_key_exchange_example(backend: str, initiator: bool) -> None:
    da, db, ra, rb = (SM2PrivateKey.from_scalar(v) for v in (KX_DA, KX_DB, KX_RA, KX_RB))
    own, own_eph, peer, peer_eph = (da, ra, db, rb) if initiator else (db, rb, da, ra)
    with use_backend(backend):
        result = sm2_key_exchange(
            initiator=initiator,
            static_key=own,
            ephemeral_key=own_eph,
            peer_static=peer.public_key(),
            peer_ephemeral=peer_eph.public_key(),
            key_length=16,
            confirmation=True,
        )
    assert result.key == KX_KEY
    expected = (KX_SA, KX_SB) if initiator else (KX_SB, KX_SA)
    assert (result.own_confirmation, result.expected_peer_confirmation) == expected


def test_sm2_key_exchange_without_confirmation(backend: str) -> None:
    da, db, ra, rb = (SM2PrivateKey.from_scalar(v) for v in (KX_DA, KX_DB, KX_RA, KX_RB))
    with use_backend(backend):
        result = sm2_key_exchange(
            initiator=True,
            static_key=da,
            ephemeral_key=ra,
            peer_static=db.public_key(),
            peer_ephemeral=rb.public_key(),
            key_length=16,
        )
    assert result.key == KX_KEY
    assert result.own_confirmation is None and result.expected_peer_confirmation is None
