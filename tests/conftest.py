"""Fixtures shared by the cross-service tests."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_session_dir(tmp_path_factory) -> Path:
    """A small, real recorded session made by the project's own generator."""
    from sd_common.session_format.synth import SynthConfig, synth_session
    out = tmp_path_factory.mktemp("synth-cross") 
    synth_session(out, SynthConfig(width=256, height=144, duration_s=2.0, seed=11))
    return out / "session"
