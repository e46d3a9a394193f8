"""Shared test fixtures and paths."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import settings

#: ``.ci/run`` selects "ci": the same examples on every run, so a clean checkout's verdict does not
#: depend on the draw (random exploration stays the default for developers, who see new cases).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("SMGATE_HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]
#: Read-only recordings and certificates shared by every developer and CI (sibling of the repo).
SHARED = REPO.parent / "shared"
