"""Fixtures of the cross-service tests that run the real processor long enough to interrupt it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def long_session_dir(tmp_path_factory) -> Path:
    """A real 24-second session: the processor needs seconds for it, so a test can act mid-session."""
    from sd_common.session_format.synth import SynthConfig, synth_session
    out = tmp_path_factory.mktemp("synth24")
    synth_session(out, SynthConfig(width=256, height=144, duration_s=24.0, seed=31))
    return out / "session"
