from __future__ import annotations

import pytest

from audit.checkpoint import Checkpointer, CheckpointSigner, signer_id, verify_checkpoint_signature
from tls.crypto import SM2PrivateKey, SM3Hash, sm3


def _signed_checkpoint(signer: CheckpointSigner) -> dict[str, object]:
    checkpointer = Checkpointer(signer=signer, every_records=3, every_seconds=60.0, now=0.0)
    checkpointer.observe(1, b'{"seq":1}')
    checkpointer.observe(2, b'{"seq":2}')
    record = checkpointer.body("count", head_seq=2, head_mac=b"\x11" * 32)
    record.update({"ts": "2026-01-01T00:00:00.000000Z", "seq": 3, "_emit_ns": 1})
    return dict(checkpointer.sign(record))


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
    assert body["signature"] is None and body["sig_alg"] is None


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
    record = _signed_checkpoint(CheckpointSigner(private_key))
    assert record["signer"] == signer_id(private_key.public_key())
    assert verify_checkpoint_signature(record, private_key.public_key()) is None


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("records_sm3", "00" * 32, "does not verify"),
        ("to_seq", 5, "does not verify"),
        ("signature", None, "not signed"),
        ("sig_alg", "RSA", "unsupported"),
    ],
)
def test_signature_rejects_altered_checkpoints(field: str, value: object, reason: str) -> None:
    private_key = SM2PrivateKey.generate()
    record = _signed_checkpoint(CheckpointSigner(private_key))
    record[field] = value
    problem = verify_checkpoint_signature(record, private_key.public_key())
    assert problem is not None and reason in problem


def test_signature_rejects_other_key() -> None:
    record = _signed_checkpoint(CheckpointSigner(SM2PrivateKey.generate()))
    problem = verify_checkpoint_signature(record, SM2PrivateKey.generate().public_key())
    assert problem is not None and "different key" in problem


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
