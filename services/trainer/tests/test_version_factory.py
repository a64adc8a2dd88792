"""The test versions are what the ingest would write: content-addressed, split by session."""

import hashlib
import json

from version_factory import make_version


def test_version_is_content_addressed_and_split_by_session(tiny_version):
    raw = (tiny_version.root / "datasets" / tiny_version.dataset_id / "manifest.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == tiny_version.dataset_id
    manifest = json.loads(raw)
    by_session = {}
    for seg in manifest["segments"]:
        by_session.setdefault(seg["session_id"], set()).add(seg["split"])
        assert (tiny_version.root / seg["uri"] / "measurements.json").is_file()
    assert all(len(parts) == 1 for parts in by_session.values())
    assert {p for parts in by_session.values() for p in parts} == {"train", "val"}


def test_same_arguments_same_version(tmp_path):
    assert make_version(tmp_path / "a").dataset_id == make_version(tmp_path / "b").dataset_id
    assert make_version(tmp_path / "c", seed=1).dataset_id != make_version(tmp_path / "d").dataset_id
