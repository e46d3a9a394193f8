"""Fixtures for the certs tests: one generated SM2 chain per session (key generation is cheap, but not free)."""

from __future__ import annotations

import pytest

from tests.certs.helpers import Chain, make_chain


@pytest.fixture(scope="session")
def chain() -> Chain:
    return make_chain()
