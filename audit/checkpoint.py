"""SM2-signed checkpoints: a third party holding only the audit signing certificate verifies a segment.

A checkpoint covers the records since the previous checkpoint (``from_seq``..``to_seq``): ``records_sm3``
is SM3 over those exact stored lines, each followed by ``\\n``, and ``head_mac`` is the chain MAC of
``to_seq`` (the checkpoint's own ``prev``). ``signature`` is SM2 with SM3 and the default user id
(``1234567812345678``, GM/T 0009) over the stored line up to its ``signature`` member (format 2,
:mod:`audit.format`): the checkpoint's body and its ``prev`` link, byte for byte. Without the HMAC key
a verifier recomputes ``records_sm3``, checks the signature and the sequence, so editing, deleting or
reordering any covered line is detected. Checkpoints are written every N records or T seconds, at
rotation, at shutdown and after recovery.
"""

from __future__ import annotations

from typing import Any

from audit.events import EventType
from tls.crypto import InvalidSignature, SM2PrivateKey, SM2PublicKey, SM3Hash, sm3

SIG_ALG = "SM2-SM3"


def signer_id(public_key: SM2PublicKey) -> str:
    """The ``signer`` field: SM3 of the signing key's SubjectPublicKeyInfo DER, hex."""
    return sm3(public_key.spki_der()).hex()


class CheckpointSigner:
    """Holds the audit signing key; signs the bytes the chain step hands it (DER signature)."""

    def __init__(self, private_key: SM2PrivateKey) -> None:
        self._private_key = private_key
        self.signer = signer_id(private_key.public_key())

    def __repr__(self) -> str:
        return f"CheckpointSigner(signer={self.signer})"

    def sign(self, data: bytes) -> bytes:
        return self._private_key.sign(data)


def check_signer(record: dict[str, Any], public_key: SM2PublicKey) -> str | None:
    """``None`` if ``record`` names ``public_key`` as its signer with the SM2-SM3 algorithm, else why not."""
    if record.get("sig_alg") != SIG_ALG:
        return f"unsupported checkpoint signature algorithm {record.get('sig_alg')!r}"
    if record.get("signer") != signer_id(public_key):
        return "checkpoint signed by a different key than the given certificate"
    return None


def verify_signature(public_key: SM2PublicKey, signature: bytes, signed: bytes) -> bool:
    """Whether ``signature`` (DER) is an SM2-SM3 signature of ``signed`` under ``public_key``."""
    try:
        public_key.verify(signature, signed)
    except (InvalidSignature, ValueError):
        return False
    return True


class Checkpointer:
    """Accumulates the lines since the last checkpoint and decides when the next one is due.

    State: ``from_seq``/``count``/``digest`` over the uncovered lines, ``last_checkpoint_seq`` and
    ``last_time`` (monotonic seconds) of the previous checkpoint.
    """

    def __init__(
        self,
        *,
        signer: CheckpointSigner | None,
        every_records: int,
        every_seconds: float,
        now: float,
        last_checkpoint_seq: int | None = None,
    ) -> None:
        self.signer = signer
        self.every_records = every_records
        self.every_seconds = every_seconds
        self.last_checkpoint_seq = last_checkpoint_seq
        self.last_time = now
        self.from_seq: int | None = None
        self.count = 0
        self.digest = SM3Hash()

    def observe(self, seq: int, line: bytes) -> None:
        """Account one written non-checkpoint line."""
        if self.from_seq is None:
            self.from_seq = seq
        self.count += 1
        self.digest.update(line)
        self.digest.update(b"\n")

    def observe_block(self, first_seq: int, count: int, data: bytes) -> None:
        """Account ``count`` consecutive written lines (``data``: each line followed by ``\\n``) at once."""
        if self.from_seq is None:
            self.from_seq = first_seq
        self.count += count
        self.digest.update(data)

    def due(self, now: float) -> str | None:
        """The reason a checkpoint is due now (``"count"``/``"interval"``), or ``None``."""
        if self.count >= self.every_records:
            return "count"
        if self.count and now - self.last_time >= self.every_seconds:
            return "interval"
        return None

    def body(self, reason: str, *, head_seq: int, head_mac: bytes) -> dict[str, Any]:
        """The checkpoint's fields; the processors add context, and the chain step signs and seals it."""
        return {
            "event": EventType.AUDIT_CHECKPOINT.value,
            "reason": reason,
            "from_seq": self.from_seq,
            "to_seq": head_seq,
            "count": self.count,
            "records_sm3": self.digest.copy().digest().hex(),
            "head_mac": head_mac.hex(),
            "prev_checkpoint_seq": self.last_checkpoint_seq,
            "sig_alg": SIG_ALG if self.signer else None,
            "signer": self.signer.signer if self.signer else None,
        }

    def reset(self, checkpoint_seq: int, now: float) -> None:
        """Start a new range after the checkpoint with sequence number ``checkpoint_seq``."""
        self.last_checkpoint_seq = checkpoint_seq
        self.last_time = now
        self.from_seq = None
        self.count = 0
        self.digest = SM3Hash()
