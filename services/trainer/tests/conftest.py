"""Fixtures of the trainer's tests: small dataset versions in the ingest's layout (version_factory.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Appended, not put first: other test folders import their own `conftest` by name from sys.path.
sys.path.append(str(Path(__file__).parent))  # version_factory beside this file

from version_factory import Version, make_version  # noqa: E402


@pytest.fixture
def tiny_version(tmp_path: Path) -> Version:
    """Four sessions (one in validation), two 20-frame segments each, 64x64 pictures."""
    return make_version(tmp_path / "store")
