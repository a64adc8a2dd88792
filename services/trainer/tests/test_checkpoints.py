"""Checkpoint files: atomic, latest.json last, mirrored to the store in order, fetched back when newer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings
from sd_trainer.checkpoints import (
    LATEST,
    StoreMirror,
    checkpoint_name,
    load_latest,
    read_latest,
    save_checkpoint,
)


def test_latest_names_a_complete_checkpoint_and_a_torn_write_is_ignored(tmp_path: Path):
    assert read_latest(tmp_path) is None and load_latest(tmp_path) is None
    save_checkpoint(tmp_path, 5, {"step": 5, "w": torch.arange(4)})
    # a write killed half-way leaves only a temporary file; latest.json still names step 5
    (tmp_path / "checkpoints" / ".step-000000010.pt.tmp-999").write_bytes(b"\x80\x02partial")
    assert read_latest(tmp_path) == {"step": 5, "key": checkpoint_name(5)}
    state = load_latest(tmp_path)
    assert state["step"] == 5 and torch.equal(state["w"], torch.arange(4))
    save_checkpoint(tmp_path, 10, {"step": 10})
    assert read_latest(tmp_path)["step"] == 10 and load_latest(tmp_path)["step"] == 10
    assert checkpoint_name(10) == "checkpoints/step-000000010.pt"


def test_mirror_uploads_under_the_run_prefix_and_downloads_only_a_newer_checkpoint(tmp_path: Path):
    store_root = tmp_path / "store"
    run_a = tmp_path / "a"
    save_checkpoint(run_a, 7, {"step": 7})
    mirror = StoreMirror(make_store(StoreSettings(root=store_root)), "run-1", run_a)
    mirror.upload(checkpoint_name(7))
    mirror.upload(LATEST, content_type="application/json")
    mirror.flush()
    assert (store_root / "training" / "run-1" / "checkpoints" / "step-000000007.pt").read_bytes() == \
        (run_a / checkpoint_name(7)).read_bytes()
    assert json.loads((store_root / "training/run-1/checkpoints/latest.json").read_text())["step"] == 7
    mirror.close()

    # a fresh folder (a new pod) gets the store's checkpoint; a folder that is already newer does not
    run_b = tmp_path / "b"
    fresh = StoreMirror(make_store(StoreSettings(root=store_root)), "run-1", run_b)
    assert fresh.download_latest(newer_than=-1) is True
    assert load_latest(run_b)["step"] == 7
    fresh.close()
    run_c = tmp_path / "c"
    save_checkpoint(run_c, 9, {"step": 9})
    newer = StoreMirror(make_store(StoreSettings(root=store_root)), "run-1", run_c)
    assert newer.download_latest(newer_than=9) is False
    assert read_latest(run_c)["step"] == 9
    newer.close()
    other = StoreMirror(make_store(StoreSettings(root=store_root)), "run-2", tmp_path / "d")
    assert other.download_latest() is False  # another run's checkpoints are never picked up
    other.close()
