"""Shared test fixtures and paths."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Read-only recordings and certificates shared by every developer and CI (sibling of the repo).
SHARED = REPO.parent / "shared"
