"""SM2 backend registry and selection.

Backends: ``openssl`` (cffi ABI binding to the system libcrypto 3.x that Python's ``ssl`` links;
preferred) and ``gmssl`` (pure-Python gmssl package; portable fallback).  The active backend is, in
order: the innermost :func:`use_backend` context, then :func:`set_backend`, then the environment variable
``SMGATE_CRYPTO_BACKEND``, then the first backend that loads.

No faster SM2 backend is wired in, on purpose (checked December 2026 for issue 14; one scalar
multiplication here is libcrypto's constant-time ladder, about 0.26 ms).  The PyPI wheels that bundle
GmSSL expose no raw point multiplication, so no ECDHE, and their scalar multiplications are not constant
time: ``gmssl-pyx`` 2.1.0 (GmSSL 3.2.0, keygen 0.11 ms) indexes the precomputed tables of
``sm2_z256_point_mul_generator``/``sm2_z256_point_mul`` by secret Booth digits and branches on them (the
source says "FIXME: remove if/else"), so signing nonces and ephemeral keys would leak through cache
timing; it also re-derives the public key per call (sign with an ID: 2.4 ms).  ``gmssl-fast`` 0.1.0
(GmSSL 3.1-era API through gmssl-rs; GmSSL 3.1's ``sm2_jacobian_point_mul`` adds on each set key bit) takes
0.85 ms per keygen and signs only with the default ID.  tongsuopy's libcrypto (BabaSSL 8.3.2, OpenSSL
1.1.1 API) runs the same generic ladder as the system libcrypto, no faster.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator

from tls.crypto.backends.base import SM2Backend
from tls.crypto.errors import UnsupportedAlgorithm

BACKEND_NAMES = ("openssl", "gmssl")
ENV_VAR = "SMGATE_CRYPTO_BACKEND"

_lock = threading.Lock()
_loaded: dict[str, SM2Backend] = {}
_failures: dict[str, str] = {}
_selected: str | None = None
_override: contextvars.ContextVar[SM2Backend | None] = contextvars.ContextVar(
    "smgate_sm2_backend", default=None
)


def _load_openssl() -> SM2Backend:
    from tls.crypto.backends.openssl import OpenSSLBackend

    return OpenSSLBackend()


def _load_gmssl() -> SM2Backend:
    from tls.crypto.backends.gmssl import GmSSLBackend

    return GmSSLBackend()


_FACTORIES: dict[str, Callable[[], SM2Backend]] = {"openssl": _load_openssl, "gmssl": _load_gmssl}


def get_backend(name: str) -> SM2Backend:
    """The named backend (loaded once); raises :class:`UnsupportedAlgorithm` if it cannot load."""
    backend = _loaded.get(name)  # loaded backends are never replaced: no lock on this path
    if backend is not None:
        return backend
    if name not in _FACTORIES:
        raise UnsupportedAlgorithm(f"unknown SM2 backend {name!r} (choose from {', '.join(BACKEND_NAMES)})")
    with _lock:
        backend = _loaded.get(name)
        if backend is not None:
            return backend
        if name in _failures:
            raise UnsupportedAlgorithm(f"SM2 backend {name!r} unavailable: {_failures[name]}")
        try:
            backend = _FACTORIES[name]()
        except Exception as exc:  # any load failure (missing library, no SM2) means "unavailable"
            _failures[name] = f"{type(exc).__name__}: {exc}"
            raise UnsupportedAlgorithm(f"SM2 backend {name!r} unavailable: {_failures[name]}") from exc
        _loaded[name] = backend
        return backend


def available_backends() -> list[str]:
    names = []
    for name in BACKEND_NAMES:
        try:
            get_backend(name)
        except UnsupportedAlgorithm:
            continue
        names.append(name)
    return names


def unavailable_reasons() -> dict[str, str]:
    available_backends()
    return dict(_failures)


def set_backend(name: str) -> None:
    """Make ``name`` the process-wide active backend (validated by loading it)."""
    global _selected
    get_backend(name)
    _selected = name


def _default_backend() -> SM2Backend:
    global _selected
    if _selected is not None:
        return get_backend(_selected)
    wanted = os.environ.get(ENV_VAR, "").strip().lower()
    if wanted:
        backend = get_backend(wanted)
        _selected = wanted
        return backend
    for name in BACKEND_NAMES:
        try:
            backend = get_backend(name)
        except UnsupportedAlgorithm:
            continue
        _selected = name
        return backend
    raise UnsupportedAlgorithm(
        "no SM2 backend available: " + "; ".join(f"{k}: {v}" for k, v in _failures.items())
    )


def current_backend() -> SM2Backend:
    override = _override.get()
    if override is not None:
        return override
    selected = _selected
    if selected is not None:  # every call after the first: one dictionary look-up
        backend = _loaded.get(selected)
        if backend is not None:
            return backend
    return _default_backend()


def backend_name() -> str:
    return current_backend().name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[SM2Backend]:
    """Run the block with ``name`` as the active backend (per thread / asyncio task)."""
    backend = get_backend(name)
    token = _override.set(backend)
    try:
        yield backend
    finally:
        _override.reset(token)
