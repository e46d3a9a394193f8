"""TLS 1.3 record layer (RFC 8446 5) with the RFC 8998 AEADs, SM4-GCM and SM4-CCM.

Each direction owns one `RecordProtection` (key, IV and sequence number of one traffic secret); a key
change (handshake keys, application keys, KeyUpdate) installs a new one, so sequence numbers restart
at zero as 5.3 requires.  Protected records are TLSCiphertext with outer type application_data and
the record header as additional data; the per-record nonce is the IV XOR the 64-bit sequence number.
TLSInnerPlaintext carries the real content type after the content (5.2); we send no padding and strip
any we receive.

Reader rules (5.1, 5.2, 5.4 and D.4):
- a record longer than 2^14 (plaintext) or 2^14+256 (ciphertext) is a record_overflow, as is inner
  plaintext over 2^14;
- a change_cipher_spec record is passed up unprotected whatever the keys (the connection drops the
  middlebox-compatibility one and refuses any other);
- a plaintext alert is accepted while `allow_plain_alerts` is set (a server, from its ServerHello until
  the client's first protected record: the client may fail before it has keys, as OpenSSL allows);
- while `skip_budget` is positive (a server that refused 0-RTT, 4.2.10) records that fail to deprotect
  are dropped and counted against it instead of raising bad_record_mac.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol

from tls.crypto import SM4CCM, DecryptionError, keyed_sm4_gcm

from .alerts import BadRecordMac, InternalError, ProtocolVersion, RecordOverflow, UnexpectedMessage
from .keyschedule import Secret, traffic_keys
from .suites import LEGACY_VERSION, SUITE_PARAMETERS, TAG_LENGTH, CipherSuite

RECORD_HEADER_LENGTH = 5
MAX_PLAINTEXT_LENGTH = 1 << 14
#: TLSCiphertext.length limit (RFC 8446 5.2): 2^14 + 256.
MAX_CIPHERTEXT_LENGTH = MAX_PLAINTEXT_LENGTH + 256
MAX_SEQUENCE_NUMBER = (1 << 64) - 1
#: Records sent under one key before we update it ourselves: far inside SM4-GCM's 2^24.5 limit (as for
#: AES-GCM, RFC 8446 5.5) and CCM's.
KEY_UPDATE_AFTER_RECORDS = 1 << 23

_LEGACY_VERSION_BYTES = LEGACY_VERSION.to_bytes(2, "big")


class ContentType(IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


_CONTENT_TYPES = frozenset(int(t) for t in ContentType)
_INNER_TYPES = frozenset((ContentType.ALERT, ContentType.HANDSHAKE, ContentType.APPLICATION_DATA))


class AEAD(Protocol):
    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes | bytearray, aad: bytes = b"") -> bytes: ...


def make_aead(suite: CipherSuite, key: bytes) -> AEAD:
    """The AEAD of one traffic key, keyed once and reused for every record under it."""
    if SUITE_PARAMETERS[suite].aead == "ccm":
        return SM4CCM(key)
    return keyed_sm4_gcm(key)


class RecordProtection:
    """AEAD state of one direction under one traffic secret."""

    __slots__ = ("_aead", "_iv", "sequence")

    def __init__(self, suite: CipherSuite, traffic_secret: bytes | Secret) -> None:
        key, iv = traffic_keys(traffic_secret)
        self._aead = make_aead(suite, key)
        self._iv = int.from_bytes(iv, "big")
        self.sequence = 0

    def __repr__(self) -> str:
        return f"RecordProtection(sequence={self.sequence})"

    def _next_nonce(self) -> bytes:
        sequence = self.sequence
        if sequence >= MAX_SEQUENCE_NUMBER:
            raise InternalError("sequence number exhausted")
        self.sequence = sequence + 1
        return (self._iv ^ sequence).to_bytes(12, "big")

    def seal(self, content_type: int, content: bytes) -> bytes:
        """The whole protected record (header included) for `content` of `content_type`."""
        length = len(content) + 1 + TAG_LENGTH
        header = bytes((ContentType.APPLICATION_DATA,)) + _LEGACY_VERSION_BYTES + length.to_bytes(2, "big")
        return header + self._aead.encrypt(self._next_nonce(), content + bytes((content_type,)), header)

    def open(self, header: bytes, ciphertext: bytes | bytearray) -> tuple[int, bytes]:
        """(inner content type, content) of a protected record; bad_record_mac if it does not verify."""
        if len(ciphertext) < TAG_LENGTH + 1:
            raise BadRecordMac("bad record")
        nonce = (self._iv ^ self.sequence).to_bytes(12, "big")
        try:
            inner = self._aead.decrypt(nonce, ciphertext, header)
        except DecryptionError:
            raise BadRecordMac("bad record") from None
        self._next_nonce()
        end = len(inner) - 1
        while end >= 0 and inner[end] == 0:
            end -= 1
        if end < 0:
            raise UnexpectedMessage("protected record without a content type")
        content_type = inner[end]
        if content_type not in _INNER_TYPES:
            raise UnexpectedMessage("protected record with an invalid inner content type")
        if end > MAX_PLAINTEXT_LENGTH:
            raise RecordOverflow("decrypted record too long")
        return content_type, inner[:end]


class RecordReader:
    """Incoming records: framing, limits and deprotection."""

    __slots__ = ("_buffer", "_offset", "allow_plain_alerts", "protection", "skip_budget")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._offset = 0
        self.protection: RecordProtection | None = None
        self.allow_plain_alerts = False
        self.skip_budget = 0

    def feed(self, data: bytes) -> None:
        if self._offset:
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data

    def pending_bytes(self) -> int:
        return len(self._buffer) - self._offset

    def set_protection(self, protection: RecordProtection) -> None:
        self.protection = protection

    def next_record(self) -> tuple[int, bytes] | None:
        """Next (content_type, content), or None until a whole record is buffered."""
        while True:
            buffer = self._buffer
            start = self._offset
            if len(buffer) - start < RECORD_HEADER_LENGTH:
                return None
            content_type = buffer[start]
            if content_type not in _CONTENT_TYPES:
                raise UnexpectedMessage("unknown record content type")
            if buffer[start + 1] != 3 or buffer[start + 2] > 4:
                raise ProtocolVersion("record version is not TLS")
            length = (buffer[start + 3] << 8) | buffer[start + 4]
            protected = self.protection is not None and content_type == ContentType.APPLICATION_DATA
            if length > (MAX_CIPHERTEXT_LENGTH if protected else MAX_PLAINTEXT_LENGTH):
                raise RecordOverflow("record too long")
            end = start + RECORD_HEADER_LENGTH + length
            if len(buffer) < end:
                return None
            header = bytes(buffer[start : start + RECORD_HEADER_LENGTH])
            # one copy out of the buffer (bytes(buffer[a:b]) would copy twice); opened as it is
            fragment = buffer[start + RECORD_HEADER_LENGTH : end]
            if end == len(buffer):
                buffer.clear()
                self._offset = 0
            else:
                self._offset = end
            if (
                self.protection is None
                and content_type == ContentType.APPLICATION_DATA
                and self.skip_budget > 0
            ):
                self.skip_budget -= length  # 0-RTT data after a HelloRetryRequest (RFC 8446 4.2.10)
                continue
            if self.protection is None or content_type == ContentType.CHANGE_CIPHER_SPEC:
                return content_type, bytes(fragment)
            if content_type == ContentType.ALERT and self.allow_plain_alerts:
                return content_type, bytes(fragment)
            if not protected:
                raise UnexpectedMessage("unprotected record after the keys changed")
            if self.skip_budget > 0:
                try:
                    record = self.protection.open(header, fragment)
                except BadRecordMac:
                    # rejected 0-RTT data (RFC 8446 4.2.10): drop it, within the budget
                    self.skip_budget -= length
                    continue
                self.skip_budget = 0
            else:
                record = self.protection.open(header, fragment)
            self.allow_plain_alerts = False
            return record


class RecordWriter:
    """Outgoing records: fragmentation and protection.

    Each handshake message gets its own record(s), as OpenSSL, Tongsuo and BabaSSL send them: RFC 8446
    5.1 allows coalescing, but GmSSL 3's TLS 1.3 client reads exactly one message per record.
    """

    __slots__ = ("_output", "max_fragment_size", "protection", "record_version")

    def __init__(self, max_fragment_size: int = MAX_PLAINTEXT_LENGTH) -> None:
        self._output = bytearray()
        self.max_fragment_size = max_fragment_size
        self.protection: RecordProtection | None = None
        self.record_version = _LEGACY_VERSION_BYTES

    def set_protection(self, protection: RecordProtection) -> None:
        self.protection = protection

    def write(self, content_type: int, data: bytes) -> None:
        """Queue `data` as records of `content_type`; empty data gives one empty record."""
        step = self.max_fragment_size
        protection = self.protection
        output = self._output
        offset = 0
        while True:
            fragment = data[offset : offset + step]
            if protection is not None:
                output += protection.seal(content_type, fragment)
            else:
                output.append(content_type)
                output += self.record_version
                output += len(fragment).to_bytes(2, "big")
                output += fragment
            offset += step
            if offset >= len(data):
                break

    def write_change_cipher_spec(self) -> None:
        """The middlebox-compatibility change_cipher_spec (RFC 8446 D.4): always unprotected."""
        self._output += bytes((ContentType.CHANGE_CIPHER_SPEC,)) + _LEGACY_VERSION_BYTES + b"\x00\x01\x01"

    @property
    def records_under_current_key(self) -> int:
        return self.protection.sequence if self.protection is not None else 0

    def data_to_send(self) -> bytes:
        data = bytes(self._output)
        self._output.clear()
        return data
