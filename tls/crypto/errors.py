"""Exception hierarchy of the crypto provider (Contract 1).

Every failure inside :mod:`tls.crypto` surfaces as a :class:`CryptoError` subclass, so callers (the TLCP
engine, certs, audit) can map it to one alert or one error message.  Messages never contain key material.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every crypto-provider error."""


class InvalidKey(CryptoError):
    """Bad key encoding, point not on the curve, scalar out of range, wrong password, bad PEM/DER."""


class InvalidSignature(CryptoError):
    """Signature verification failed or the signature DER is malformed."""


class DecryptionError(CryptoError):
    """Tampered or malformed SM2 ciphertext, or an AEAD tag mismatch."""


class UnsupportedAlgorithm(CryptoError):
    """The requested algorithm, mode or backend is not available."""
