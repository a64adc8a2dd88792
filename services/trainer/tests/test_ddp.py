"""DistributedDataParallel under `torchrun --nproc-per-node 2` on CPU (gloo): two ranks, one writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from version_factory import make_version

# Real training processes: about a minute on an idle 2-core machine, several times that when it is shared.
pytestmark = pytest.mark.timeout(900)

CONFIG = {
    "model": {"backbone": "resnet18", "base_width": 8},
    "data": {"batch_size": 8, "num_workers": 0, "augment": {"enabled": False}},
    "max_steps": 6, "val_every_steps": 0, "checkpoint_every_steps": 4, "log_every_steps": 2, "seed": 1,
}


def test_torchrun_two_ranks_on_cpu(tmp_path: Path):
    version = make_version(tmp_path / "store", frames=12)
    out = tmp_path / "run"
    env = dict(os.environ, SD_STORE_ROOT=str(version.root), SD_TRAINER_RUN_METRICS_PORT="-1",
               SD_TRAINER_TERMINATION_LOG=str(tmp_path / "termination-log"), OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run([*torchrun, "-m", "sd_trainer.train", "--run-id", "ddp", "--dataset", version.dataset_id,
                           "--dataset-root", str(version.root), "--out", str(out), "--config-json",
                           json.dumps(CONFIG)], env=env, check=False, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert result["step"] == 6
    progress = json.loads((out / "progress.json").read_text())
    assert progress["world_size"] == 2 and progress["state"] == "succeeded"
    # 72 training frames, 8 per rank per step, 16 per step in all: 4 steps per epoch (one shard per rank)
    assert result["epoch"] == 1
    ckpt = torch.load(out / "checkpoints" / "step-000000006.pt", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["position"] == 2
    # rank 0 alone writes: one summary line on stdout, one TensorBoard file, one set of checkpoints
    assert len([line for line in proc.stdout.splitlines() if line.startswith("{")]) == 1
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step-000000004.pt",
                                                                         "step-000000006.pt"]
    assert (version.root / "training" / "ddp" / "result.json").is_file()
    # val_every_steps 0: before the first step, at the end of the epoch (step 4) and at the end; the
    # whole validation split each time, on rank 0
    vals = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [v["step"] for v in vals] == [0, 4, 6] and {v["frames"] for v in vals} == {24}
