"""Reading a dataset version: the manifest's split by session, labels as recorded, decoded pictures."""

import json
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch
from version_factory import make_version

from sd_trainer.config import DataConfig
from sd_trainer.data import DatasetError, decode_jpeg, make_loader, open_local_version, split_dataset


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


def test_frames_are_resized_in_the_worker_only_when_the_model_asks(tiny_version):
    v = open_local_version(tiny_version.root, tiny_version.dataset_id)
    same = split_dataset(v, "train")
    assert not same.resizes and split_dataset(v, "train", height=64, width=64).resizes is False
    with open(same.frames[0].path, "rb") as fh:
        assert torch.equal(same[0]["image"], torch.from_numpy(decode_jpeg(fh.read()).transpose(2, 0, 1).copy()))
    seg = next(s for s in tiny_version.manifest["segments"] if s["split"] == "train")
    measurements = json.loads((tiny_version.root / seg["uri"] / "measurements.json").read_text())
    for height, width in ((32, 32), (24, 40), (96, 96)):
        ds = split_dataset(v, "train", height=height, width=width)
        assert ds.resizes
        for k in (2, 9):
            index = next(i for i, f in enumerate(ds.frames) if f.segment_id == seg["segment_id"]) + k
            image = ds[index]["image"]
            assert image.shape == (3, height, width) and image.dtype == torch.uint8
            # The picture is scaled, not cropped: the steer bar sits at the same relative position.
            cols = image.float()[:, height // 5:height * 3 // 4, :].mean(dim=(0, 1))
            bar_x = round((measurements[k]["steer"] + 1) / 2 * 63)  # the bar spans bar_x - 2 .. bar_x + 2
            expected = (bar_x + 0.5) * width / 64 - 0.5
            assert abs(int(cols.argmax()) - expected) <= 2 * width / 64 + 0.5
    scaled = v.geometry.scaled_to(32, 32)
    assert scaled.intrinsics["fx"] == pytest.approx(v.geometry.intrinsics["fx"] / 2)
    assert scaled.intrinsics["fov_deg"] == pytest.approx(v.geometry.intrinsics["fov_deg"])
    with pytest.raises(DatasetError, match="not a picture size"):
        split_dataset(v, "train", height=-1, width=8)


def test_a_frame_of_another_size_than_the_version_is_named(tmp_path):
    v = make_version(tmp_path / "v")
    version = open_local_version(v.root, v.dataset_id)
    ds = split_dataset(version, "train")
    Path(ds.frames[4].path).write_bytes(simplejpeg.encode_jpeg(np.zeros((32, 48, 3), np.uint8), colorspace="RGB"))
    with pytest.raises(DatasetError, match="is 48x32, the version's frames are 64x64"):
        ds[4]


def _loader_bench():
    import importlib.util
    import sys
    if "trainer_loader_bench" in sys.modules:
        return sys.modules["trainer_loader_bench"]
    path = Path(__file__).resolve().parents[3] / "bench" / "trainer_loader_bench.py"
    spec = importlib.util.spec_from_file_location("trainer_loader_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_bench_delivers_every_training_frame_once_per_epoch(tmp_path, workers):
    """The benchmark's own code path, tiny: what it times is whole, decoded, correctly labelled epochs."""
    bench = _loader_bench()
    v = bench.make_bench_version(tmp_path / "v", frames=48, size=64)
    ds = split_dataset(open_local_version(v.root, v.dataset_id), "train")
    assert len(ds) == 36
    run = bench.run_loader(v.root, v.dataset_id, workers=workers, batch=6, epochs=2, check=True)
    assert run.images == 2 * 36 - 6  # the first batch is not timed
    expected_labels = sorted((np.float32(f.steer).item(), np.float32(f.throttle).item(), np.float32(f.brake).item(),
                              np.float32(f.speed_mps).item(), f.command) for f in ds.frames)
    assert sorted(run.labels) == sorted(expected_labels * 2)
    pixels = 0
    for f in ds.frames:
        with open(f.path, "rb") as fh:
            pixels += int(decode_jpeg(fh.read()).sum(dtype=np.int64))
    assert run.image_sum == 2 * pixels
    n, seconds = bench.pil_baseline([f.path for f in ds.frames[:5]])
    assert n == 5 and seconds > 0


def _frame(speed: float, throttle: float, brake: float, i: int):
    from sd_trainer.data import FrameRecord

    return FrameRecord(path=f"f{i}.jpg", speed_mps=speed, command=4, branch=0, steer=0.0, throttle=throttle,
                       brake=brake, session_id="s", segment_id="g")


def test_standing_draws_split_evenly_between_pulling_away_and_holding():
    from sd_trainer.data import standing_weights

    # 10 moving frames, 8 standing and holding (at lights), 2 standing and pulling away
    frames = ([_frame(6.0, 0.2, 0.0, i) for i in range(10)] + [_frame(0.0, 0.0, 0.4, 10 + i) for i in range(8)]
              + [_frame(0.2, 0.52, 0.0, 18 + i) for i in range(2)])
    w = standing_weights(frames, 0.5)
    assert w[:10].tolist() == [1.0] * 10
    hold, pull = w[10:18], w[18:]
    assert float(hold.sum()) == pytest.approx(5.0) and float(pull.sum()) == pytest.approx(5.0)
    assert float(w.sum()) == pytest.approx(20.0)  # standing frames keep their share of the draws
    # with no frame of one kind nothing is reweighted; a frame just above the threshold is moving
    assert standing_weights(frames[:18], 0.5).tolist() == [1.0] * 18
    assert standing_weights([_frame(0.5, 0.0, 1.0, 0), _frame(0.1, 1.0, 0.0, 1), _frame(0.1, 0.0, 1.0, 2)],
                            0.5).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(DatasetError, match="standing_speed_mps must be positive"):
        standing_weights(frames, 0.0)


def test_standing_sampling_draws_by_weight_reproducibly_per_epoch_and_rank(tiny_version):
    from sd_trainer.data import WeightedEpochSampler, standing_weights

    v = open_local_version(tiny_version.root, tiny_version.dataset_id)
    ds = split_dataset(v, "train")
    cfg = DataConfig(batch_size=8, num_workers=0, sampling="standing")
    sampler = make_loader(ds, cfg, train=True, seed=3).sampler
    assert isinstance(sampler, WeightedEpochSampler) and len(sampler) == len(ds)
    assert torch.equal(sampler.weights, standing_weights(ds.frames, cfg.standing_speed_mps))
    first = list(sampler)
    assert list(sampler) == first  # a function of (seed, epoch, rank) only: a resumed run draws the same
    sampler.set_epoch(1)
    assert list(sampler) != first
    ranks = [list(make_loader(ds, cfg, train=True, seed=3, rank=r, world_size=2).sampler) for r in (0, 1)]
    assert len(ranks[0]) == len(ds) // 2 and ranks[0] != ranks[1]
    # validation is never reweighted
    assert not isinstance(make_loader(ds, cfg, train=False, seed=3).sampler, WeightedEpochSampler)

    # on a large draw, the rare standing kind comes up as often as the common one
    frames = [_frame(0.0, 0.0, 0.4, i) for i in range(90)] + [_frame(0.0, 0.6, 0.0, 90 + i) for i in range(10)]
    big = WeightedEpochSampler(standing_weights(frames, 0.5), seed=0)
    big.num_samples = 20_000
    pulls = sum(i >= 90 for i in big)
    assert 0.47 < pulls / 20_000 < 0.53


def test_unknown_sampling_is_a_config_error():
    from sd_trainer.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="sampling"):
        TrainConfig.from_overrides({"data": {"sampling": "inverse"}})
    assert TrainConfig.from_overrides({"data": {"sampling": "standing"}}).data.sampling == "standing"
