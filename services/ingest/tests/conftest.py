"""Fixtures of the ingest's tests: real PostgreSQL and SQLite catalogs, a real local store, sessions."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # fake_processor.py beside this file

from sd_common.objectstore import ObjectStore



@pytest.fixture(scope="session")
def session_6s(tmp_path_factory) -> Path:
    """A small real session (256x144, 6 s: one whole 5 s segment), made once per run."""
    from sd_common.session_format.synth import SynthConfig, synth_session
    out = tmp_path_factory.mktemp("synth6")
    synth_session(out, SynthConfig(width=256, height=144, duration_s=6.0, seed=5))
    return out / "session"


@pytest.fixture(scope="session")
def session_broken(tmp_path_factory) -> Path:
    """A session whose hashes match but whose logs break the format (NaN throttle, bad commands)."""
    from sd_common.session_format.synth import SynthConfig, synth_session
    out = tmp_path_factory.mktemp("synth-bad")
    cfg = SynthConfig(width=256, height=144, duration_s=2.0, seed=9).with_corruption("nan_controls")
    cfg = cfg.with_corruption("bad_command")
    synth_session(out, cfg)
    return out / "session"


async def put_session(store: ObjectStore, session_dir: Path, session_id: str, player_id: str = "p-test", *,
                      files: list[str] | None = None, manifest: bool = True, prefix: str = "raw/") -> dict:
    """Writes a session's files into the store like the gateway's uploads do (manifest last).

    ``files`` limits which listed files are written; the manifest is rewritten with the ids.
    """
    doc = json.loads((session_dir / "manifest.json").read_text())
    doc["session_id"], doc["player_id"] = session_id, player_id
    for entry in doc["files"]:
        if files is None or entry["path"] in files:
            await store.put_bytes(f"{prefix}{session_id}/{entry['path']}", (session_dir / entry["path"]).read_bytes(),
                                  content_type=entry["content_type"])
    if manifest:
        await store.put_bytes(f"{prefix}{session_id}/manifest.json", json.dumps(doc).encode(),
                              content_type="application/json")
    return doc


def copy_session(src: Path, dst: Path) -> Path:
    """A private copy of a session folder."""
    shutil.copytree(src, dst)
    return dst
