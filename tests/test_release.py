"""What a user sees before running anything: `smgate --version`, the LICENSE, the package metadata."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib

from tests.conftest import REPO


def test_version_flag_prints_the_installed_version():
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"smgate {importlib.metadata.version('smgate')}"


def test_license_is_the_full_apache_2_text():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    for section in (
        "1. Definitions.",
        "4. Redistribution.",
        "9. Accepting Warranty or Additional Liability.",
    ):
        assert section in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text


def test_pyproject_declares_the_license_as_an_spdx_expression():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    metadata = importlib.metadata.metadata("smgate")
    assert metadata["License-Expression"] == "Apache-2.0"
