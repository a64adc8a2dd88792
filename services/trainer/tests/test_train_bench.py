"""A short run of bench/trainer_steps_bench.py: the training step it times is the loop's own and learns."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from sd_trainer.config import ModelConfig

BENCH = Path(__file__).resolve().parents[3] / "bench" / "trainer_steps_bench.py"


def test_trainer_steps_bench_short():
    spec = importlib.util.spec_from_file_location("trainer_steps_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    tiny = ModelConfig(backbone="resnet18", base_width=8)
    first = bench.measure(tiny, 4, 64, steps=1, warmup=0, device=torch.device("cpu"))
    longer = bench.measure(tiny, 4, 64, steps=8, warmup=0, device=torch.device("cpu"))
    assert first["steps_per_s"] > 0
    assert abs(longer["images_per_s"] - 4 * longer["steps_per_s"]) < 1e-6
    # the same fixed batch, trained on for longer, fits better: the timed step really updates the network
    assert longer["loss"] < first["loss"]
    assert any(case[1].backbone == "resnet34" and case[1].base_width == 64 and case[3] == 256
               for case in bench.CPU_CASES)
