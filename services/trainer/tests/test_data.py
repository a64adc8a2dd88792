"""Reading a dataset version: the manifest's split by session, labels as recorded, decoded pictures."""

import json

import numpy as np
import pytest
from version_factory import make_version

from sd_trainer.config import DataConfig
from sd_trainer.data import DatasetError, make_loader, open_local_version, split_dataset


def test_split_is_the_manifests_and_no_session_is_in_both(tiny_version):
    v = open_local_version(tiny_version.root, tiny_version.dataset_id)
    assert v.sessions("train") & v.sessions("val") == set()
    assert v.sessions("val") == {s for s, p in tiny_version.split.items() if p == "val"}
    assert v.sessions("train") == {s for s, p in tiny_version.split.items() if p == "train"}
    total = sum(s["frames"] for s in tiny_version.manifest["segments"])
    assert len(v.frames["train"]) + len(v.frames["val"]) == total
    assert (v.geometry.width, v.geometry.height) == (64, 64)
    assert v.geometry.intrinsics["fov_deg"] == pytest.approx(64.66)


def test_items_carry_the_recorded_labels_and_the_picture(tiny_version):
    v = open_local_version(tiny_version.root, tiny_version.dataset_id)
    ds = split_dataset(v, "train")
    seg = next(s for s in tiny_version.manifest["segments"] if s["split"] == "train")
    measurements = json.loads((tiny_version.root / seg["uri"] / "measurements.json").read_text())
    index = next(i for i, f in enumerate(ds.frames) if f.segment_id == seg["segment_id"]) + 3
    item, m = ds[index], measurements[3]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype.is_floating_point is False
    assert item["controls"].tolist() == pytest.approx([m["steer"], m["throttle"], m["brake"]], abs=1e-6)
    assert item["speed_mps"].item() == pytest.approx(m["speed"])
    assert item["command"].item() == m["command"]
    # The decoded picture shows its label: the brightest column is the steer bar's.
    rows = item["image"].numpy()[:, 12:48, :].mean(axis=(0, 1))
    assert abs(int(np.argmax(rows)) - round((m["steer"] + 1) / 2 * 63)) <= 1

def test_lane_changes_learn_on_the_follow_branch(tiny_version):
    v = open_local_version(tiny_version.root, tiny_version.dataset_id)
    branches = {(f.command, f.branch) for f in v.frames["train"] + v.frames["val"]}
    assert {(4, 0), (5, 0), (6, 0), (1, 1), (2, 2), (3, 3)} == branches


def test_changed_manifest_is_refused(tiny_version):
    path = tiny_version.root / "datasets" / tiny_version.dataset_id / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"val"', b'"train"', 1))
    with pytest.raises(DatasetError, match="was changed"):
        open_local_version(tiny_version.root, tiny_version.dataset_id)


def test_unknown_version_and_bad_measurements_are_named(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        open_local_version(tmp_path, "0" * 64)
    v = make_version(tmp_path / "v")
    seg = v.manifest["segments"][0]
    path = v.root / seg["uri"] / "measurements.json"
    entries = json.loads(path.read_text())
    entries[5]["command"] = -1
    path.write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match=f"segment {seg['segment_id']} frame 5: route command -1"):
        open_local_version(v.root, v.dataset_id)


def test_loader_batches_and_shards(tiny_version):
    v = open_local_version(tiny_version.root, tiny_version.dataset_id)
    ds = split_dataset(v, "train")
    cfg = DataConfig(batch_size=8, num_workers=0)
    batch = next(iter(make_loader(ds, cfg, train=True, seed=0)))
    assert batch["image"].shape == (8, 3, 64, 64) and batch["branch"].shape == (8,)
    shards = [{f.path for f in (ds.frames[i] for i in make_loader(ds, cfg, train=True, seed=0, rank=r,
                                                                   world_size=2).sampler)} for r in (0, 1)]
    assert shards[0].isdisjoint(shards[1])
