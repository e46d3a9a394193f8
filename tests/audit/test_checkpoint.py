from __future__ import annotations

from audit.checkpoint import Checkpointer, CheckpointSigner, check_signer, signer_id, verify_signature
from tls.crypto import SM2PrivateKey, SM3Hash, sm3

SIGNED = b'{"event":"audit.checkpoint","seq":3,"prev":"' + b"11" * 32 + b'"'


def test_checkpoint_body_digest_and_range() -> None:
    checkpointer = Checkpointer(
        signer=None, every_records=3, every_seconds=60.0, now=0.0, last_checkpoint_seq=9
    )
    checkpointer.observe(10, b"a")
    checkpointer.observe(11, b"b")
    body = checkpointer.body("interval", head_seq=11, head_mac=b"\x01" * 32)
    assert body["from_seq"] == 10 and body["to_seq"] == 11 and body["count"] == 2
    assert body["records_sm3"] == sm3(b"a\nb\n").hex()
    assert body["prev_checkpoint_seq"] == 9
    assert "signature" not in body and body["sig_alg"] is None and body["signer"] is None


def test_checkpoint_due_by_count_and_time() -> None:
    checkpointer = Checkpointer(signer=None, every_records=2, every_seconds=5.0, now=100.0)
    assert checkpointer.due(200.0) is None  # nothing to cover
    checkpointer.observe(1, b"x")
    assert checkpointer.due(101.0) is None
    assert checkpointer.due(105.0) == "interval"
    checkpointer.observe(2, b"y")
    assert checkpointer.due(101.0) == "count"
    checkpointer.reset(3, 106.0)
    assert (checkpointer.count, checkpointer.from_seq, checkpointer.last_checkpoint_seq) == (0, None, 3)
    assert checkpointer.digest.digest() == SM3Hash().digest()


def test_signature_verifies_with_public_key_only() -> None:
    private_key = SM2PrivateKey.generate()
    signer = CheckpointSigner(private_key)
    signature = signer.sign(SIGNED)
    assert signer.signer == signer_id(private_key.public_key())
    assert verify_signature(private_key.public_key(), signature, SIGNED)
    assert not verify_signature(private_key.public_key(), signature, SIGNED.replace(b'"seq":3', b'"seq":4'))
    assert not verify_signature(private_key.public_key(), b"\x30\x00", SIGNED)
    assert not verify_signature(SM2PrivateKey.generate().public_key(), signature, SIGNED)


def test_check_signer_names_the_key_and_algorithm() -> None:
    private_key = SM2PrivateKey.generate()
    signer = CheckpointSigner(private_key)
    record = {"sig_alg": "SM2-SM3", "signer": signer.signer}
    assert check_signer(record, private_key.public_key()) is None
    problem = check_signer(record, SM2PrivateKey.generate().public_key())
    assert problem is not None and "different key" in problem
    problem = check_signer({**record, "sig_alg": "RSA"}, private_key.public_key())
    assert problem is not None and "unsupported" in problem


def test_signer_repr_has_no_key_material() -> None:
    private_key = SM2PrivateKey.generate()
    assert private_key.scalar_bytes().hex() not in repr(CheckpointSigner(private_key))


def test_observe_block_equals_observing_each_line() -> None:
    one = Checkpointer(signer=None, every_records=10, every_seconds=60.0, now=0.0)
    many = Checkpointer(signer=None, every_records=10, every_seconds=60.0, now=0.0)
    for seq, line in ((4, b"x"), (5, b"yy")):
        one.observe(seq, line)
    many.observe_block(4, 2, b"x\nyy\n")
    assert one.body("count", head_seq=5, head_mac=bytes(32)) == many.body(
        "count", head_seq=5, head_mac=bytes(32)
    )
