"""The shared data folder beside the repository (`../shared` from its root), for the tests that read
the real NYC samples. Missing, such a test skips on a developer's machine and fails under CI=true,
where the folder is always laid beside the clone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NYC = SHARED / "data" / "nyc"
FOOTPRINTS = NYC / "building_footprints_east_village_north.geojson"
OSM_STREETS = NYC / "streets_osm_east_village_les.geojson"


def require(path: Path) -> Path:
    """``path`` if it exists; otherwise pytest.fail under CI=true and pytest.skip elsewhere."""
    if not path.exists():
        message = f"shared data missing: {path} (expected the shared folder at {SHARED}, beside the repository)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
