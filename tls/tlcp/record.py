"""Record layer (GB/T 38636-2020 6.3): framing, per-direction protection, sequence numbers.

A `RecordReader` splits incoming bytes into records and removes protection; a
`RecordWriter` fragments and protects outgoing data.  Each direction owns its
protection and sequence number and a pending protection that
`change_cipher_spec()` installs, as Go's `halfConn` does.

Protection (6.3.3):
- SM4-CBC + HMAC-SM3, MAC-then-encrypt: `IV(16) || SM4-CBC(plaintext || MAC || padding)`,
  MAC = HMAC-SM3(mac_key, seq || type || version || length || plaintext); explicit
  random IV per record.  Every padding or MAC failure is reported as the same
  `bad_record_mac`, and the MAC is computed even when the padding is bad so
  both failures cost about the same (the RFC 5246 6.2.3.2 countermeasure).
- SM4-GCM: `explicit_nonce(8) || ciphertext || tag(16)`, nonce = fixed_iv(4) ||
  explicit_nonce, AAD = seq || type || version || plaintext length.  The
  explicit nonce is a per-key random start plus the sequence number (OpenSSL's
  scheme; GmSSL's start is 0), so it never repeats under one key.
"""

from __future__ import annotations

import hmac
import struct
from enum import IntEnum
from typing import Protocol

from tls.crypto import HMACSM3, SM4CBC, SM4GCM, DecryptionError

from .alerts import BadRecordMac, InternalError, ProtocolVersion, RecordOverflow, UnexpectedMessage
from .suites import TLCP_VERSION

RECORD_HEADER_LENGTH = 5
MAX_PLAINTEXT_LENGTH = 1 << 14
#: TLSCiphertext.length limit (RFC 5246 6.2.3): 2^14 + 2048.
MAX_CIPHERTEXT_LENGTH = MAX_PLAINTEXT_LENGTH + 2048
MAX_SEQUENCE_NUMBER = (1 << 64) - 1

#: type, version, length: the record header (6.3.2)
_RECORD_HEADER = struct.Struct(">BHH")
#: seq_num, type, version, length: what the MAC (CBC) or the AAD (GCM) covers before the content
_PROTECTED_HEADER = struct.Struct(">QBHH")
_MAC_LENGTH = 32
_BLOCK = 16
_GCM_EXPLICIT_NONCE = 8
_GCM_TAG = 16


class ContentType(IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


_CONTENT_TYPES = frozenset(int(t) for t in ContentType)


class RecordProtection(Protocol):
    def seal(self, content_type: int, sequence: int, plaintext: bytes) -> bytes: ...

    def open(self, content_type: int, sequence: int, fragment: bytes) -> bytes: ...


class CBCProtection:
    """SM4-CBC with HMAC-SM3 for one direction."""

    __slots__ = ("_cipher", "_mac", "_random")

    def __init__(self, mac_key: bytes, key: bytes, random: RandomSource | None) -> None:
        self._mac = HMACSM3(mac_key)
        self._cipher = SM4CBC(key)
        self._random = random

    def __repr__(self) -> str:
        return "CBCProtection()"

    def _compute_mac(self, content_type: int, sequence: int, plaintext: bytes) -> bytes:
        header = _PROTECTED_HEADER.pack(sequence, content_type, TLCP_VERSION, len(plaintext))
        return self._mac.compute(header, plaintext)

    def seal(self, content_type: int, sequence: int, plaintext: bytes) -> bytes:
        mac = self._compute_mac(content_type, sequence, plaintext)
        pad = _BLOCK - 1 - (len(plaintext) + _MAC_LENGTH) % _BLOCK
        if self._random is None:
            raise InternalError("read-only cipher state")
        iv = self._random(_BLOCK)
        body = plaintext + mac + bytes((pad,)) * (pad + 1)
        return iv + self._cipher.encrypt(iv, body)

    def open(self, content_type: int, sequence: int, fragment: bytes) -> bytes:
        length = len(fragment)
        if length < 2 * _BLOCK + _MAC_LENGTH or length % _BLOCK:
            raise BadRecordMac("bad record")
        body = self._cipher.decrypt(fragment[:_BLOCK], fragment[_BLOCK:])
        pad = body[-1]
        good = pad + 1 + _MAC_LENGTH <= len(body)
        if good:
            good = hmac.compare_digest(body[-1 - pad : -1], bytes((pad,)) * pad)
        if not good:
            pad = 0
        end = len(body) - pad - 1 - _MAC_LENGTH
        plaintext = body[:end]
        expected = self._compute_mac(content_type, sequence, plaintext)
        mac_ok = hmac.compare_digest(expected, body[end : end + _MAC_LENGTH])
        if not (good and mac_ok):
            raise BadRecordMac("bad record")
        return plaintext


class GCMProtection:
    """SM4-GCM for one direction."""

    __slots__ = ("_cipher", "_fixed_iv", "_nonce_start")

    def __init__(self, key: bytes, fixed_iv: bytes, nonce_start: int) -> None:
        self._cipher = SM4GCM(key)
        self._fixed_iv = fixed_iv
        self._nonce_start = nonce_start

    def __repr__(self) -> str:
        return "GCMProtection()"

    def seal(self, content_type: int, sequence: int, plaintext: bytes) -> bytes:
        explicit = ((self._nonce_start + sequence) & MAX_SEQUENCE_NUMBER).to_bytes(8, "big")
        aad = _PROTECTED_HEADER.pack(sequence, content_type, TLCP_VERSION, len(plaintext))
        return explicit + self._cipher.encrypt(self._fixed_iv + explicit, plaintext, aad)

    def open(self, content_type: int, sequence: int, fragment: bytes) -> bytes:
        length = len(fragment) - _GCM_EXPLICIT_NONCE - _GCM_TAG
        if length < 0:
            raise BadRecordMac("bad record")
        aad = _PROTECTED_HEADER.pack(sequence, content_type, TLCP_VERSION, length)
        try:
            return self._cipher.decrypt(
                self._fixed_iv + fragment[:_GCM_EXPLICIT_NONCE], fragment[_GCM_EXPLICIT_NONCE:], aad
            )
        except DecryptionError:
            raise BadRecordMac("bad record") from None


class RandomSource(Protocol):
    def __call__(self, length: int, /) -> bytes: ...


class _Direction:
    __slots__ = ("pending", "protection", "sequence")

    def __init__(self) -> None:
        self.protection: RecordProtection | None = None
        self.pending: RecordProtection | None = None
        self.sequence = 0

    def change_cipher_spec(self) -> None:
        if self.pending is None:
            raise InternalError("no pending cipher state")
        self.protection = self.pending
        self.pending = None
        self.sequence = 0

    def next_sequence(self) -> int:
        sequence = self.sequence
        if sequence >= MAX_SEQUENCE_NUMBER:
            raise InternalError("sequence number exhausted")
        self.sequence = sequence + 1
        return sequence


class RecordReader(_Direction):
    """Incoming records: header checks, then protection removal.

    Records are read from a cursor into the buffered bytes, which are dropped only when everything
    is consumed or more arrives, so a large read holding many records is not shifted once per record.
    """

    __slots__ = ("_buffer", "_offset")

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._offset = 0

    def feed(self, data: bytes) -> None:
        if self._offset:
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data

    def pending_bytes(self) -> int:
        return len(self._buffer) - self._offset

    def next_record(self) -> tuple[int, bytes] | None:
        """Next (content_type, plaintext), or None until a whole record is buffered."""
        buffer = self._buffer
        start = self._offset
        if len(buffer) - start < RECORD_HEADER_LENGTH:
            return None
        content_type, version, length = _RECORD_HEADER.unpack_from(buffer, start)
        if content_type not in _CONTENT_TYPES:
            raise UnexpectedMessage("unknown record content type")
        if version != TLCP_VERSION:
            raise ProtocolVersion("record version is not 0x0101")
        protection = self.protection
        if length > (MAX_PLAINTEXT_LENGTH if protection is None else MAX_CIPHERTEXT_LENGTH):
            raise RecordOverflow("record too long")
        end = start + RECORD_HEADER_LENGTH + length
        if len(buffer) < end:
            return None
        fragment = bytes(buffer[start + RECORD_HEADER_LENGTH : end])
        if end == len(buffer):
            buffer.clear()
            end = 0
        self._offset = end
        if protection is None:
            return content_type, fragment
        plaintext = protection.open(content_type, self.next_sequence(), fragment)
        if len(plaintext) > MAX_PLAINTEXT_LENGTH:
            raise RecordOverflow("decrypted record too long")
        return content_type, plaintext


class RecordWriter(_Direction):
    """Outgoing records: fragmentation and protection."""

    __slots__ = ("_output", "max_fragment_size")

    def __init__(self, max_fragment_size: int = MAX_PLAINTEXT_LENGTH) -> None:
        super().__init__()
        self._output = bytearray()
        self.max_fragment_size = max_fragment_size

    def write(self, content_type: int, data: bytes) -> None:
        """Queue `data` as records of `content_type`; empty data gives one empty record."""
        step = self.max_fragment_size
        if len(data) <= step:
            self._write_record(content_type, data)
            return
        for offset in range(0, len(data), step):
            self._write_record(content_type, data[offset : offset + step])

    def _write_record(self, content_type: int, fragment: bytes) -> None:
        protection = self.protection
        if protection is not None:
            fragment = protection.seal(content_type, self.next_sequence(), fragment)
        output = self._output
        output += _RECORD_HEADER.pack(content_type, TLCP_VERSION, len(fragment))
        output += fragment

    def data_to_send(self) -> bytes:
        data = bytes(self._output)
        self._output.clear()
        return data
