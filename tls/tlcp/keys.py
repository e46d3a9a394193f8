"""Key schedule (GB/T 38636-2020 6.5): master secret, key block, Finished.

- master_secret = PRF(pre_master_secret, "master secret", client_random || server_random)[0:48]
- key_block = PRF(master_secret, "key expansion", server_random || client_random), cut into
  client_write_MAC_key, server_write_MAC_key, client_write_key, server_write_key,
  client_write_IV, server_write_IV (6.5.2; MAC keys are absent for GCM).
- verify_data = PRF(master_secret, finished_label, SM3(handshake_messages))[0:12] (6.4.5.10).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tls.crypto import HMACSM3, sm3

from .prf import prf, prf_keyed
from .suites import SuiteParameters

MASTER_SECRET_LENGTH = 48
PRE_MASTER_SECRET_LENGTH = 48
VERIFY_DATA_LENGTH = 12

CLIENT_FINISHED_LABEL = b"client finished"
SERVER_FINISHED_LABEL = b"server finished"


def derive_master_secret(pre_master_secret: bytes, client_random: bytes, server_random: bytes) -> bytes:
    return prf(pre_master_secret, b"master secret", client_random + server_random, MASTER_SECRET_LENGTH)


@dataclass(frozen=True, slots=True)
class KeyBlock:
    """Per-direction keys of one connection; `repr` hides them."""

    client_mac_key: bytes = field(repr=False)
    server_mac_key: bytes = field(repr=False)
    client_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)
    client_iv: bytes = field(repr=False)
    server_iv: bytes = field(repr=False)


def _master_mac(master_secret: bytes, mac: HMACSM3 | None) -> HMACSM3:
    return mac if mac is not None else HMACSM3(master_secret)


def derive_key_block_bytes(
    master_secret: bytes,
    client_random: bytes,
    server_random: bytes,
    length: int,
    *,
    mac: HMACSM3 | None = None,
) -> bytes:
    """`mac`, when given, is HMAC-SM3 already keyed with `master_secret`."""
    return prf_keyed(_master_mac(master_secret, mac), b"key expansion", server_random + client_random, length)


def derive_key_block(
    master_secret: bytes,
    client_random: bytes,
    server_random: bytes,
    parameters: SuiteParameters,
    *,
    mac: HMACSM3 | None = None,
) -> KeyBlock:
    block = derive_key_block_bytes(
        master_secret, client_random, server_random, parameters.key_block_length, mac=mac
    )
    # 6.5.2: client MAC key, server MAC key, client key, server key, client IV, server IV
    mac_end = 2 * parameters.mac_key_length
    key_end = mac_end + 2 * parameters.key_length
    mac_key, key, iv = parameters.mac_key_length, parameters.key_length, parameters.iv_length
    return KeyBlock(
        block[:mac_key],
        block[mac_key:mac_end],
        block[mac_end : mac_end + key],
        block[mac_end + key : key_end],
        block[key_end : key_end + iv],
        block[key_end + iv : key_end + 2 * iv],
    )


def compute_verify_data(master_secret: bytes, label: bytes, handshake_messages: bytes) -> bytes:
    return verify_data_from_hash(master_secret, label, sm3(handshake_messages))


def verify_data_from_hash(
    master_secret: bytes, label: bytes, handshake_hash: bytes, *, mac: HMACSM3 | None = None
) -> bytes:
    """`compute_verify_data` when SM3(handshake_messages) is already known (the running transcript
    hash); `mac`, when given, is HMAC-SM3 already keyed with `master_secret`."""
    return prf_keyed(_master_mac(master_secret, mac), label, handshake_hash, VERIFY_DATA_LENGTH)
