"""SM2 key exchange protocol (GB/T 32918.3 clause 6.1) on the active backend's point arithmetic.

Roles: A is the initiator, B the responder.  Both sides hash in A-then-B order: Z_A/Z_B are the
initiator's and responder's identity hashes, (x1, y1) = R_A and (x2, y2) = R_B the ephemeral points.
TLCP ECDHE (GB/T 38636 clause 6.4.5.5) makes the SERVER the initiator and uses the ENC key pairs as the
static keys.  The optional confirmation hashes are S_B = S_1 (tag 0x02) and S_A = S_2 (tag 0x03).
"""

from __future__ import annotations

from dataclasses import dataclass

from tls.crypto.backends import current_backend
from tls.crypto.curve import DEFAULT_SM2_ID, FIELD_SIZE, N, kdf, x_bar
from tls.crypto.errors import CryptoError
from tls.crypto.hashes import sm3
from tls.crypto.keys import SM2PrivateKey, SM2PublicKey

_MAX_KEY_LENGTH = 1 << 16


@dataclass(frozen=True)
class SM2KeyExchangeResult:
    """The shared key and, with confirmation, our hash to send and the peer's hash to expect."""

    key: bytes
    own_confirmation: bytes | None
    expected_peer_confirmation: bytes | None

    def __repr__(self) -> str:
        return f"SM2KeyExchangeResult(key=<{len(self.key)} bytes>, confirmation={self.own_confirmation is not None})"


def sm2_key_exchange(
    *,
    initiator: bool,
    static_key: SM2PrivateKey,
    ephemeral_key: SM2PrivateKey,
    peer_static: SM2PublicKey,
    peer_ephemeral: SM2PublicKey,
    own_id: bytes = DEFAULT_SM2_ID,
    peer_id: bytes = DEFAULT_SM2_ID,
    key_length: int,
    confirmation: bool = False,
) -> SM2KeyExchangeResult:
    """Run one side of the SM2 key exchange and return K (``key_length`` bytes) and S_A/S_B."""
    if not 1 <= key_length <= _MAX_KEY_LENGTH:
        raise CryptoError("key exchange output length out of range")
    backend = current_backend()
    own_ephemeral = ephemeral_key.public_key()
    # t = (d + x̄·r) mod n; U = [h·t](P_peer + [x̄_peer]R_peer) with cofactor h = 1 for sm2p256v1.
    t = (static_key.scalar + x_bar(own_ephemeral.x) * ephemeral_key.scalar) % N
    if t == 0:
        raise CryptoError("SM2 key exchange failed")
    # x̄_peer and both peer points are public, so the sum may use the backend's variable-time path.
    peer_sum = backend.point_add_mul(
        peer_static.to_bytes(), x_bar(peer_ephemeral.x), peer_ephemeral.to_bytes()
    )
    shared = backend.point_mul(t, peer_sum)
    xu, yu = shared[1 : 1 + FIELD_SIZE], shared[1 + FIELD_SIZE :]

    own_z = static_key.public_key().z_value(own_id)
    peer_z = peer_static.z_value(peer_id)
    za, zb = (own_z, peer_z) if initiator else (peer_z, own_z)
    ra, rb = (own_ephemeral, peer_ephemeral) if initiator else (peer_ephemeral, own_ephemeral)
    key = kdf(xu + yu + za + zb, key_length)
    if not confirmation:
        return SM2KeyExchangeResult(key, None, None)
    inner = sm3(xu + za + zb + ra.to_bytes()[1:] + rb.to_bytes()[1:])
    s_b = sm3(b"\x02" + yu + inner)
    s_a = sm3(b"\x03" + yu + inner)
    own, peer = (s_a, s_b) if initiator else (s_b, s_a)
    return SM2KeyExchangeResult(key, own, peer)
