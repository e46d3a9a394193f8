"""Backend selection (auto, env var, set_backend, use_backend) and the ``selfcheck``/``describe`` CLI."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

import tls.crypto.backends as backends_module
from tests.conftest import REPO
from tests.crypto.conftest import BACKENDS
from tls.crypto import (
    SM2PrivateKey,
    UnsupportedAlgorithm,
    available_backends,
    backend_name,
    current_backend,
    set_backend,
    use_backend,
)
from tls.crypto.backends.base import SM2Backend
from tls.crypto.cli import describe, register


def _backend_in_subprocess(env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SMGATE_CRYPTO_BACKEND"}
    if env_value is not None:
        env["SMGATE_CRYPTO_BACKEND"] = env_value
    return subprocess.run(
        [sys.executable, "-c", "import tls.crypto as c; print(c.backend_name())"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_default_backend_is_first_available() -> None:
    result = _backend_in_subprocess(None)
    assert result.returncode == 0
    assert result.stdout.strip() == available_backends()[0]


@pytest.mark.parametrize("name", BACKENDS)
def test_env_var_selects_backend(name: str) -> None:
    result = _backend_in_subprocess(name)
    assert result.returncode == 0 and result.stdout.strip() == name


def test_env_var_with_unknown_backend_fails_loudly() -> None:
    result = _backend_in_subprocess("nss")
    assert result.returncode != 0 and "UnsupportedAlgorithm" in result.stderr


@pytest.mark.parametrize("name", BACKENDS)
def test_set_backend_is_process_wide(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends_module, "_selected", None)
    set_backend(name)
    assert backend_name() == name
    key = SM2PrivateKey.generate()
    key.public_key().verify(key.sign(b"m"), b"m")


def test_use_backend_nests_and_restores() -> None:
    outer = backend_name()
    for name in BACKENDS:
        with use_backend(name) as selected:
            assert backend_name() == name and selected is current_backend()
            for inner in BACKENDS:
                with use_backend(inner):
                    assert backend_name() == inner
            assert backend_name() == name
    assert backend_name() == outer


def test_describe_names_active_and_available_backends() -> None:
    text = describe()
    assert f"crypto backend: {backend_name()}" in text
    for name in BACKENDS:
        assert f"  {name}: " in text
    if "openssl" in BACKENDS:
        assert "OpenSSL 3." in text


def test_selfcheck_command_passes(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["selfcheck"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "selfcheck passed" in out and f"active backend: {backend_name()}" in out
    for name in BACKENDS:
        assert f"{name:<8}  SM2 key exchange KAT" in out


def test_unusable_libcrypto_raises_unsupported_algorithm() -> None:
    from tls.crypto.backends.openssl import OpenSSLBackend

    with pytest.raises(UnsupportedAlgorithm):
        OpenSSLBackend(library="/nonexistent/libcrypto.so.3")


def test_falls_back_to_gmssl_when_openssl_cannot_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> SM2Backend:
        raise OSError("libcrypto.so.3: cannot open shared object file")

    monkeypatch.setattr(backends_module, "_loaded", {})
    monkeypatch.setattr(backends_module, "_failures", {})
    monkeypatch.setattr(backends_module, "_selected", None)
    monkeypatch.setitem(backends_module._FACTORIES, "openssl", broken)
    monkeypatch.delenv("SMGATE_CRYPTO_BACKEND", raising=False)
    assert available_backends() == ["gmssl"]
    assert backend_name() == "gmssl"
    assert "openssl: unavailable (OSError: libcrypto.so.3: cannot open shared object file)" in describe()
    key = SM2PrivateKey.generate()
    key.public_key().verify(key.sign(b"m"), b"m")


def test_selfcheck_fails_with_exit_1_on_a_wrong_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tls.crypto.kat as kat

    monkeypatch.setattr(kat, "KX_KEY", bytes(16))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["selfcheck"])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "FAIL CryptoError: SM2 key exchange known answer mismatch" in out
    assert "selfcheck FAILED" in out
