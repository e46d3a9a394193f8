"""PRF, key block and Finished known answers from the GmSSL `secrets.txt` files and Tongsuo recordings."""

from __future__ import annotations

import pytest

from tls.crypto import SM4CBC, SM4GCM
from tls.tlcp.keys import (
    CLIENT_FINISHED_LABEL,
    SERVER_FINISHED_LABEL,
    compute_verify_data,
    derive_key_block,
    derive_key_block_bytes,
    derive_master_secret,
)
from tls.tlcp.prf import prf
from tls.tlcp.suites import SUITE_PARAMETERS, CipherSuite

from .recordings import Recording, all_recordings, handshake_messages

RECORDINGS = all_recordings()
GMSSL = [r for r in RECORDINGS if r.implementation == "gmssl"]


@pytest.mark.parametrize("recording", GMSSL, ids=repr)
def test_gmssl_master_secret_and_key_block(recording: Recording) -> None:
    secrets = recording.secrets
    assert (
        derive_master_secret(secrets["pre_master_secret"], secrets["client_random"], secrets["server_random"])
        == (secrets["master_secret"])
    )
    key_block = derive_key_block_bytes(
        secrets["master_secret"],
        secrets["client_random"],
        secrets["server_random"],
        len(secrets["key_blocks"]),
    )
    assert key_block == secrets["key_blocks"]
    block = derive_key_block(
        secrets["master_secret"],
        secrets["client_random"],
        secrets["server_random"],
        SUITE_PARAMETERS[CipherSuite(recording.suite)],
    )
    assert block.client_key == secrets["client_write_key"]
    assert block.server_key == secrets["server_write_key"]
    if recording.gcm:
        assert block.client_iv == secrets["client_write_iv"] and block.server_iv == secrets["server_write_iv"]
        assert block.client_mac_key == b""
    else:
        assert block.client_mac_key == secrets["client_write_mac_key"]
        assert block.server_mac_key == secrets["server_write_mac_key"]
    assert "client_key" not in repr(block) and secrets["client_write_key"].hex() not in repr(block)


def _decrypt_finished(recording: Recording, records_from_client: bool) -> bytes:
    """Decrypt the first encrypted record with the logged master secret, independently of record.py."""
    suite = CipherSuite(recording.suite)
    block = derive_key_block(
        recording.master_secret, recording.client_random, recording.server_random, SUITE_PARAMETERS[suite]
    )
    records = recording.client_records if records_from_client else recording.server_records
    fragment = recording.encrypted_records(records)[0].fragment
    key = block.client_key if records_from_client else block.server_key
    if recording.gcm:
        iv = block.client_iv if records_from_client else block.server_iv
        aad = bytes(8) + b"\x16\x01\x01" + (len(fragment) - 24).to_bytes(2, "big")
        return SM4GCM(key).decrypt(iv + fragment[:8], fragment[8:], aad)
    body = SM4CBC(key).decrypt(fragment[:16], fragment[16:])
    return body[: len(body) - body[-1] - 1 - 32]


@pytest.mark.parametrize("recording", RECORDINGS, ids=repr)
def test_finished_verify_data(recording: Recording) -> None:
    """verify_data = PRF(master, label, SM3(handshake messages)) for both Finished of every recording."""
    client = handshake_messages(recording.client_records)
    server = handshake_messages(recording.server_records)
    # message order on the wire: ClientHello, server flight, client flight (NewSessionTicket comes later)
    before_client_finished = b"".join([client[0], *(m for m in server if m[0] != 4), *client[1:]])
    client_finished = _decrypt_finished(recording, True)
    assert client_finished[:4] == b"\x14\x00\x00\x0c"
    expected = compute_verify_data(recording.master_secret, CLIENT_FINISHED_LABEL, before_client_finished)
    assert client_finished[4:] == expected
    ticket = b"".join(m for m in server if m[0] == 4)
    before_server_finished = before_client_finished + client_finished + ticket
    server_finished = _decrypt_finished(recording, False)
    assert server_finished[4:] == compute_verify_data(
        recording.master_secret, SERVER_FINISHED_LABEL, before_server_finished
    )


def test_prf_is_p_hash_over_hmac_sm3() -> None:
    output = prf(b"secret", b"label", b"seed", 100)
    assert len(output) == 100
    assert prf(b"secret", b"label", b"seed", 32) == output[:32]
    assert prf(b"secret", b"label", b"seed2", 32) != output[:32]
    assert prf(b"", b"label", b"", 1) != b""
