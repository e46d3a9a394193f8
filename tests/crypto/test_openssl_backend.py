"""openssl backend specifics: libcrypto error-queue hygiene (shared with Python's ssl module), EVP_PKEY
caching, concurrent use from threads, and point arithmetic edge cases on both backends."""

from __future__ import annotations

import threading

import pytest

from tests.crypto.conftest import BACKENDS
from tls.crypto import (
    CryptoError,
    DecryptionError,
    InvalidKey,
    InvalidSignature,
    SM2PrivateKey,
    SM2PublicKey,
    get_backend,
    use_backend,
)
from tls.crypto.backends.openssl import OpenSSLBackend, find_libcrypto

P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
needs_openssl = pytest.mark.skipif("openssl" not in BACKENDS, reason="openssl backend unavailable")


def _openssl() -> OpenSSLBackend:
    backend = get_backend("openssl")
    assert isinstance(backend, OpenSSLBackend)
    return backend


@needs_openssl
def test_libcrypto_is_the_one_python_ssl_links() -> None:
    assert "libcrypto.so" in find_libcrypto()
    assert _openssl().version.startswith("OpenSSL 3.")


@needs_openssl
def test_failures_leave_the_error_queue_empty() -> None:
    backend = _openssl()
    lib = backend._lib
    key = SM2PrivateKey.generate()
    public = key.public_key()
    signature = backend.sign(key, b"message")
    ciphertext = public.encrypt(b"x")
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x01])  # always differs from the original
    failures = (
        (InvalidSignature, lambda: backend.verify(public, signature, b"other")),
        (InvalidKey, lambda: backend.decode_point(b"\x04" + bytes(64))),
        (InvalidKey, lambda: backend.decode_point(b"\x02" + (2).to_bytes(32, "big"))),
        (DecryptionError, lambda: backend.decrypt(key, tampered)),
    )
    for error, call in failures:
        with pytest.raises(error):
            call()
        assert lib.ERR_get_error() == 0


@needs_openssl
def test_evp_pkey_is_cached_per_key_and_per_point() -> None:
    backend = _openssl()
    key = SM2PrivateKey.generate()
    backend.sign(key, b"m")
    cached = key._native["openssl"]
    backend.sign(key, b"m")
    assert key._native["openssl"] is cached
    public = key.public_key()
    backend.verify(public, backend.sign(key, b"m"), b"m")
    same_point = SM2PublicKey.from_bytes(public.to_bytes())
    backend.verify(same_point, backend.sign(key, b"m"), b"m")
    assert same_point._native["openssl"] is public._native["openssl"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_use_from_threads(backend: str) -> None:
    key = SM2PrivateKey.generate()
    rounds = 20 if backend == "openssl" else 2
    errors: list[BaseException] = []

    def work() -> None:
        try:
            impl = get_backend(backend)
            for i in range(rounds):
                message = f"thread message {i}".encode()
                impl.verify(key.public_key(), impl.sign(key, message), message)
                assert impl.decrypt(key, impl.encrypt(key.public_key(), message)) == message
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_point_sum_at_infinity_raises(backend: str) -> None:
    public = SM2PrivateKey.generate().public_key()
    negated = b"\x04" + public.to_bytes()[1:33] + (P - public.y).to_bytes(32, "big")
    impl = get_backend(backend)
    with pytest.raises(CryptoError):
        impl.point_add(public.to_bytes(), negated)
    assert impl.point_add(public.to_bytes(), public.to_bytes()) == impl.point_mul(2, public.to_bytes())


@pytest.mark.parametrize("backend", BACKENDS)
def test_point_add_mul_at_infinity_raises(backend: str) -> None:
    public = SM2PrivateKey.generate().public_key()
    negated = b"\x04" + public.to_bytes()[1:33] + (P - public.y).to_bytes(32, "big")
    impl = get_backend(backend)
    with pytest.raises(CryptoError):
        impl.point_add_mul(public.to_bytes(), 1, negated)
    assert impl.point_add_mul(public.to_bytes(), 1, public.to_bytes()) == impl.point_mul(2, public.to_bytes())
    assert impl.point_add_mul(public.to_bytes(), 2, public.to_bytes()) == impl.point_mul(3, public.to_bytes())


@pytest.mark.parametrize("backend", BACKENDS)
def test_scalar_multiple_of_order_raises(backend: str) -> None:
    n = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
    with use_backend(backend), pytest.raises(CryptoError):
        get_backend(backend).point_mul(n)
