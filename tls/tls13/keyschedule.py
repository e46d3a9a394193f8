"""The TLS 1.3 key schedule (RFC 8446 7.1) over HKDF-SM3 (RFC 8998 3.1): pure functions and one holder.

::

                 0
                 |
       PSK ->  HKDF-Extract = Early Secret ---> Derive-Secret(., "res binder", "") = binder_key
                 |
           Derive-Secret(., "derived", "")
                 |
    (EC)DHE -> HKDF-Extract = Handshake Secret -> "c hs traffic" / "s hs traffic" (ClientHello..ServerHello)
                 |
           Derive-Secret(., "derived", "")
                 |
       0 ->  HKDF-Extract = Master Secret -> "c ap traffic" / "s ap traffic" / "exp master"
                                            (ClientHello..server Finished)
                                         -> "res master" (ClientHello..client Finished)

HKDF-Extract and HKDF-Expand come from the crypto provider; only the label framing is ours.  A secret
that is expanded more than once is held as a `Secret` (`tls.crypto.HKDFSM3Key`: HMAC-SM3 keyed once),
and the HkdfLabel bytes before the context are built once per label.
"""

from __future__ import annotations

from functools import lru_cache

from tls.crypto import HKDFSM3Key, hkdf_sm3_extract, hmac_sm3, sm3

from .suites import HASH_LENGTH, IV_LENGTH, KEY_LENGTH

_LABEL_PREFIX = b"tls13 "
ZERO_KEY = bytes(HASH_LENGTH)
EMPTY_TRANSCRIPT_HASH = sm3(b"")

#: A secret as the key schedule keeps it: HMAC-SM3 keyed once, expanded several times.
Secret = HKDFSM3Key


def keyed(secret: bytes | Secret) -> Secret:
    """`secret` as a `Secret` (a traffic secret is expanded for its keys and, in the handshake, for Finished)."""
    return secret if isinstance(secret, Secret) else Secret(secret)


@lru_cache(maxsize=512)
def _hkdf_label_prefix(label: bytes, length: int, context_length: int) -> bytes:
    """HkdfLabel up to the context: length || opaque label<7..255> (with "tls13 ") || context length.

    Labels are the engine's constants and context lengths 0..255, so the cache stays small.
    """
    full_label = _LABEL_PREFIX + label
    return length.to_bytes(2, "big") + bytes((len(full_label),)) + full_label + bytes((context_length,))


def hkdf_expand_label(secret: Secret, label: bytes, context: bytes, length: int) -> bytes:
    """HKDF-Expand-Label (RFC 8446 7.1): HkdfLabel = length || "tls13 " + label || context."""
    return secret.expand(_hkdf_label_prefix(label, length, len(context)) + context, length)


def derive_secret(secret: Secret, label: bytes, transcript_hash: bytes) -> bytes:
    """Derive-Secret(Secret, Label, Messages) with the transcript hash already computed."""
    return hkdf_expand_label(secret, label, transcript_hash, HASH_LENGTH)


def traffic_keys(traffic_secret: bytes | Secret) -> tuple[bytes, bytes]:
    """[sender]_write_key and [sender]_write_iv of one traffic secret (RFC 8446 7.3)."""
    secret = keyed(traffic_secret)
    return (
        hkdf_expand_label(secret, b"key", b"", KEY_LENGTH),
        hkdf_expand_label(secret, b"iv", b"", IV_LENGTH),
    )


def next_traffic_secret(traffic_secret: bytes | Secret) -> bytes:
    """application_traffic_secret_N+1 after a KeyUpdate (RFC 8446 7.2)."""
    return hkdf_expand_label(keyed(traffic_secret), b"traffic upd", b"", HASH_LENGTH)


def finished_key(base_key: bytes | Secret) -> bytes:
    """finished_key = HKDF-Expand-Label(BaseKey, "finished", "", Hash.length) (RFC 8446 4.4.4)."""
    return hkdf_expand_label(keyed(base_key), b"finished", b"", HASH_LENGTH)


def finished_verify_data(base_key: bytes | Secret, transcript_hash: bytes) -> bytes:
    """Finished.verify_data = HMAC(finished_key, Transcript-Hash) (RFC 8446 4.4.4)."""
    return hmac_sm3(finished_key(base_key), transcript_hash)


def resumption_psk(resumption_master_secret: Secret, ticket_nonce: bytes) -> bytes:
    """The PSK a NewSessionTicket stands for (RFC 8446 4.6.1)."""
    return hkdf_expand_label(resumption_master_secret, b"resumption", ticket_nonce, HASH_LENGTH)


#: Early Secret and its "derived" salt without a PSK: the same for every full handshake, so computed once.
_EARLY_SECRET_WITHOUT_PSK = Secret(hkdf_sm3_extract(ZERO_KEY, ZERO_KEY))
_HANDSHAKE_SALT_WITHOUT_PSK = derive_secret(_EARLY_SECRET_WITHOUT_PSK, b"derived", EMPTY_TRANSCRIPT_HASH)


class KeySchedule:
    """The secrets of one handshake, advanced stage by stage; dropped with the handshake."""

    __slots__ = ("_handshake_secret", "_has_psk", "_master_secret", "early_secret")

    def __init__(self, psk: bytes | None = None) -> None:
        self._has_psk = psk is not None
        self.early_secret = (
            _EARLY_SECRET_WITHOUT_PSK if psk is None else Secret(hkdf_sm3_extract(ZERO_KEY, psk))
        )
        self._handshake_secret: Secret | None = None
        self._master_secret: Secret | None = None

    def __repr__(self) -> str:
        return "KeySchedule()"

    def binder_key(self) -> bytes:
        """binder_key for resumption PSKs (label "res binder")."""
        return derive_secret(self.early_secret, b"res binder", EMPTY_TRANSCRIPT_HASH)

    def handshake_traffic_secrets(self, shared_secret: bytes, transcript_hash: bytes) -> tuple[bytes, bytes]:
        """(client, server) handshake traffic secrets from the (EC)DHE secret and H(ClientHello..ServerHello)."""
        if self._has_psk:
            salt = derive_secret(self.early_secret, b"derived", EMPTY_TRANSCRIPT_HASH)
        else:
            salt = _HANDSHAKE_SALT_WITHOUT_PSK
        self._handshake_secret = handshake_secret = Secret(hkdf_sm3_extract(salt, shared_secret))
        return (
            derive_secret(handshake_secret, b"c hs traffic", transcript_hash),
            derive_secret(handshake_secret, b"s hs traffic", transcript_hash),
        )

    def application_traffic_secrets(self, transcript_hash: bytes) -> tuple[bytes, bytes, bytes]:
        """(client, server, exporter) secrets from H(ClientHello..server Finished)."""
        assert self._handshake_secret is not None
        salt = derive_secret(self._handshake_secret, b"derived", EMPTY_TRANSCRIPT_HASH)
        self._master_secret = master_secret = Secret(hkdf_sm3_extract(salt, ZERO_KEY))
        return (
            derive_secret(master_secret, b"c ap traffic", transcript_hash),
            derive_secret(master_secret, b"s ap traffic", transcript_hash),
            derive_secret(master_secret, b"exp master", transcript_hash),
        )

    def resumption_master_secret(self, transcript_hash: bytes) -> Secret:
        """From H(ClientHello..client Finished); kept keyed, since each ticket expands it once."""
        assert self._master_secret is not None
        return Secret(derive_secret(self._master_secret, b"res master", transcript_hash))
