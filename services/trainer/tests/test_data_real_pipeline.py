"""A version made by the real pipeline (real processor under the real ingest), read as the trainer reads it.

services/ingest/tests/real_export.py processes three synthetic sessions with `python -m sd_processor` and
makes a version in an embedded store; here it is fetched from that store into a cache and every frame is
compared with what the processor wrote.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ingest" / "tests"))  # real_export beside its conftest

from real_export import build_real_export, decode_rgb, make_sessions  # noqa: E402
from sd_common.objectstore import make_store  # noqa: E402
from sd_common.settings import StoreSettings  # noqa: E402

from sd_trainer.config import ROAD_OPTION_TO_BRANCH  # noqa: E402
from sd_trainer.data import fetch_version_report, open_local_version, split_dataset  # noqa: E402


def test_a_real_version_reads_with_the_processors_labels_pictures_and_split(tmp_path):
    work = tmp_path / "real"
    work.mkdir()
    export = asyncio.run(build_real_export(work, make_sessions(work / "sessions")))

    async def fetch():
        async with make_store(StoreSettings(backend="local", root=export.store_root)) as store:
            return await fetch_version_report(store, export.dataset_id, tmp_path / "cache")

    report = asyncio.run(fetch())
    assert report.downloaded == report.objects > 400
    v = open_local_version(report.root, export.dataset_id)
    manifest = export.manifest
    assert (v.geometry.width, v.geometry.height) == (256, 256) == (manifest["output"]["width"],
                                                                   manifest["output"]["height"])
    # The split is the manifest's, by session; no session is on both sides.
    split_of = manifest["split"]["sessions"]
    assert v.sessions("train") == {s for s, p in split_of.items() if p == "train"} != set()
    assert v.sessions("val") == {s for s, p in split_of.items() if p == "val"} != set()
    assert v.sessions("train").isdisjoint(v.sessions("val"))
    checked = 0
    for split in ("train", "val"):
        ds = split_dataset(v, split)
        by_segment: dict[str, list[int]] = {}
        for i, f in enumerate(ds.frames):
            by_segment.setdefault(f.segment_id, []).append(i)
        segs = [s for s in manifest["segments"] if s["split"] == split]
        assert sorted(by_segment) == sorted(s["segment_id"] for s in segs)
        for seg in segs:
            folder = export.store_root / seg["uri"]  # what the processor wrote, not the cache
            measurements = json.loads((folder / "measurements.json").read_text())
            indices = by_segment[seg["segment_id"]]
            assert len(indices) == len(measurements) == seg["frames"]
            for k, (i, m) in enumerate(zip(indices, measurements, strict=True)):
                item = ds[i]
                assert item["controls"].tolist() == torch.tensor([m["steer"], m["throttle"], m["brake"]],
                                                                 dtype=torch.float32).tolist()
                assert item["speed_mps"].item() == torch.tensor(m["speed"], dtype=torch.float32).item()
                assert item["command"].item() == m["command"]
                assert item["branch"].item() == ROAD_OPTION_TO_BRANCH[m["command"]]
                assert ds.frames[i].session_id == seg["session_id"]
                picture = decode_rgb((folder / "rgb_front" / f"{k:05d}.jpg").read_bytes())
                assert torch.equal(item["image"], torch.from_numpy(picture.transpose(2, 0, 1).copy()))
                checked += 1
    assert checked == manifest["totals"]["frames"]
