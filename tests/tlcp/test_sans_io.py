"""The core stays sans-I/O: no sockets, asyncio, clocks or OS randomness outside the configuration defaults."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

CORE = sorted(p for p in (REPO / "tls" / "tlcp").glob("*.py") if p.name != "aio.py")
FORBIDDEN = {"socket", "asyncio", "os", "time", "random", "selectors", "ssl", "threading", "logging"}
ALLOWED_PACKAGES = {
    "tls",
    "certs",
    "__future__",
    "collections",
    "contextlib",
    "dataclasses",
    "datetime",
    "enum",
}
ALLOWED_PACKAGES |= {"functools", "hmac", "struct", "typing", "secrets"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_import_nothing_that_does_io() -> None:
    assert len(CORE) >= 12
    for path in CORE:
        modules = imported_modules(path)
        assert not modules & FORBIDDEN, (path.name, modules & FORBIDDEN)
        assert modules <= ALLOWED_PACKAGES, (path.name, modules - ALLOWED_PACKAGES)


def test_only_the_configuration_defaults_touch_the_clock_and_os_randomness() -> None:
    for path in CORE:
        source = path.read_text()
        if path.name == "config.py":
            continue
        assert "secrets" not in imported_modules(path), path.name
        assert "datetime.now" not in source and ".utcnow" not in source, path.name
