"""Training loader throughput: JPEG decode + collate through sd_trainer.data.make_loader, per worker.

    .venv/bin/python bench/trainer_loader_bench.py [--frames 1200] [--batch 120] [--workers 0 1 2]
                                                   [--repeat 2] [--resize HxW]

A dataset version of 256x256 frames (the processor's default output) is written once with the trainer
tests' version_factory into a temporary folder. Each case iterates the training split through
make_loader for whole epochs and counts images/s from the first batch on (worker start-up excluded).
With 0 workers the decoding runs in the main process; "per worker" is then per process. The baseline,
in the same process and on the same files, is Pillow's decode (`Image.open(...).convert("RGB")` into
a NumPy array), one image after the other, without a loader. Best of --repeat runs per case.
`--resize HxW` adds the same cases with the model asking for another input size (resized in the workers).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services" / "trainer" / "tests"))  # version_factory


@dataclass(frozen=True)
class LoaderRun:
    """One pass of the loader: images, seconds from the first batch, and what it delivered."""

    images: int
    seconds: float
    image_sum: int  # sum of every pixel delivered (compared with a direct decode in the tests)
    labels: list[tuple[float, float, float, float, int]]  # (steer, throttle, brake, speed, command) per image

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def make_bench_version(root: Path, frames: int, size: int = 256):
    """A version of about `frames` frames of size x size (4 sessions, 2 segments each)."""
    from version_factory import make_version
    per_segment = max(1, frames // 8)
    return make_version(root, sessions=4, segments_per_session=2, frames=per_segment, height=size, width=size)


def run_loader(root: Path, dataset_id: str, *, workers: int, batch: int, epochs: int = 1, height: int = 0,
               width: int = 0, check: bool = False) -> LoaderRun:
    """Iterates the training split `epochs` times through make_loader; the first batch is not timed.

    With `check`, also sums the pixels and collects the labels delivered (outside a timed run: it costs).
    """
    from sd_trainer.config import DataConfig
    from sd_trainer.data import make_loader, open_local_version, split_dataset
    version = open_local_version(root, dataset_id)
    ds = split_dataset(version, "train", height=height, width=width)
    cfg = DataConfig(batch_size=batch, num_workers=workers)
    loader = make_loader(ds, cfg, train=True, seed=0)
    images, image_sum, labels = 0, 0, []
    started = None
    timed = 0
    for _ in range(epochs):
        for b in loader:
            n = b["image"].shape[0]
            if started is None:
                started = time.perf_counter()
            else:
                timed += n
            images += n
            if not check:
                continue
            image_sum += int(b["image"].sum(dtype=torch.int64))
            labels.extend(zip(*(b["controls"][:, j].tolist() for j in range(3)), b["speed_mps"].tolist(),
                              b["command"].tolist(), strict=True))
    seconds = time.perf_counter() - started if started is not None else 0.0
    del loader  # persistent workers end here
    return LoaderRun(timed, seconds, image_sum, labels)


def pil_baseline(paths: list[str]) -> tuple[int, float]:
    """Pillow decode of the same files in this process: (images, seconds)."""
    from PIL import Image
    started = time.perf_counter()
    for p in paths:
        with open(p, "rb") as fh, Image.open(io.BytesIO(fh.read())) as img:
            np.asarray(img.convert("RGB"))
    return len(paths), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=120)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--resize", default="", help="HxW: also measure with the model asking for this size")
    a = parser.parse_args()
    torch.set_num_threads(1)  # the main process only collates; decoding is the workers' work
    from sd_trainer.data import open_local_version, split_dataset
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        v = make_bench_version(Path(tmp) / "version", a.frames)
        ds = split_dataset(open_local_version(v.root, v.dataset_id), "train")
        print(f"version: {len(ds)} training frames of 256x256 written in {time.perf_counter() - t0:.1f} s", flush=True)
        paths = [f.path for f in ds.frames]
        rows = []
        n, s = min(pil_baseline(paths) for _ in range(a.repeat))
        base = n / s
        rows.append({"case": "PIL decode, no loader (baseline)", "workers": 1, "images_per_s": base})
        sizes = [(0, 0)]
        if a.resize:
            h, w = (int(x) for x in a.resize.lower().split("x"))
            sizes.append((h, w))
        for h, w in sizes:
            for workers in a.workers:
                best = max((run_loader(v.root, v.dataset_id, workers=workers, batch=a.batch, epochs=a.epochs,
                                       height=h, width=w) for _ in range(a.repeat)), key=lambda r: r.images_per_s)
                label = f"make_loader, {workers} worker{'' if workers == 1 else 's'}"
                label += f", resized to {w}x{h}" if h else ""
                rows.append({"case": label, "workers": max(1, workers), "images_per_s": best.images_per_s})
                print(json.dumps(rows[-1]), flush=True)
    print()
    print("| case | images/s | images/s per worker | vs PIL |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['case']} | {r['images_per_s']:.0f} | {r['images_per_s'] / r['workers']:.0f} | "
              f"{r['images_per_s'] / base:.2f} |")


if __name__ == "__main__":
    main()
