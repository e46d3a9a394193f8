"""Fixtures for gateway tests: a test PKI, an echo upstream and a config writer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.gateway.pki import TestPKI, make_test_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def write_config(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def demo_pki(tmp_path_factory: pytest.TempPathFactory):
    """The certs package's demo PKI (SM2 pairs, RSA, ECDSA), made once per session."""
    from certs.demo import ensure_demo_pki

    return ensure_demo_pki(tmp_path_factory.mktemp("demo"))
