"""What a trained CILRS does where the car stands: its throttle and brake beside the recorded ones, by speed.

    .venv/bin/python bench/standing_check.py --checkpoint RUN/checkpoints/step-….pt \\
        --dataset-root DIR --dataset ID [--split train,val]

DIR is a folder laid out like the object store (a training run's `data/<id>` cache is one). Each frame of
the split goes through the network with its recorded speed and its command's branch (as the evaluator's
model agent does, without the closed loop); the table gives, per speed bin, the mean predicted and
recorded throttle and brake. A network that predicts no throttle where the car stands never pulls away
(the inertia problem; docs/training.md, "Sampling").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from sd_evaluator.policy import CheckpointAgent
from sd_trainer.data import open_local_version, split_dataset

BINS = ((0.0, 0.1), (0.1, 1.0), (1.0, 4.0), (4.0, float("inf")))


def rows(agent: CheckpointAgent, dataset) -> np.ndarray:
    """Per frame: speed, predicted throttle and brake, recorded throttle and brake."""
    out = []
    model = agent.model.eval()
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            pred = model(item["image"][None], item["speed_mps"].reshape(1).float()).branches[0, int(item["branch"])]
            _, thr, brk = item["controls"].tolist()
            out.append((float(item["speed_mps"]), float(pred[1]), float(pred[2]), thr, brk))
    return np.array(out)


def table(a: np.ndarray) -> list[str]:
    lines = ["| speed (m/s) | frames | predicted throttle | recorded throttle | predicted brake | recorded brake |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for lo, hi in BINS:
        m = (a[:, 0] >= lo) & (a[:, 0] < hi)
        if m.any():
            lines.append(f"| {lo:g}–{hi:g} | {int(m.sum())} | {a[m, 1].mean():.3f} | {a[m, 3].mean():.3f} | "
                         f"{a[m, 2].mean():.3f} | {a[m, 4].mean():.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset-root", type=Path, required=True)
    p.add_argument("--dataset", required=True, help="the version id")
    p.add_argument("--split", default="train,val")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves the other core to whatever else runs)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    agent = CheckpointAgent.load(a.checkpoint)
    version = open_local_version(a.dataset_root, a.dataset)
    for split in a.split.split(","):
        ds = split_dataset(version, split, height=agent.camera.input_height, width=agent.camera.input_width)
        print(f"\n{split} ({len(ds)} frames)\n")
        print("\n".join(table(rows(agent, ds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
