"""Fixtures for the crypto-provider tests: every SM2 backend that loads on this machine."""

from __future__ import annotations

import pytest

from tls.crypto import available_backends

BACKENDS = available_backends()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
