"""CILRS training steps per second: the published ResNet-34 at 256x256 and a tiny network, in one process.

Each case runs the training loop's own step (`sd_trainer.train.optimizer_step`: forward, branched loss,
backward, clipping, Adam, LR schedule) on a fixed synthetic uint8 batch already on the device, so it
measures the network and optimizer, not the loader (the loader has its own benchmark). Warm-up steps
are not timed. On CUDA a GPU case adds the published batch of 120 with bfloat16 autocast.

Usage: `python bench/trainer_steps_bench.py [--steps 5] [--warmup 2] [--threads N] [--json]`
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from sd_trainer.config import ModelConfig, TrainConfig
from sd_trainer.model import CILRS
from sd_trainer.train import build_optimization, optimizer_step

# (name, model config, batch size, image side)
CPU_CASES = [
    ("CILRS ResNet-34 (published), 256x256", ModelConfig(), 8, 256),
    ("CILRS ResNet-34 (published), 256x256", ModelConfig(), 32, 256),
    ("tiny CILRS (ResNet-18, base_width 8), 64x64", ModelConfig(backbone="resnet18", base_width=8), 16, 64),
]
GPU_CASES = [("CILRS ResNet-34 (published), 256x256, bf16 autocast", ModelConfig(), 120, 256)]


def measure(model_cfg: ModelConfig, batch_size: int, side: int, steps: int, warmup: int,
            device: torch.device) -> dict:
    """Steps/s and images/s of `steps` timed training steps after `warmup` untimed ones."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TrainConfig(), model=model_cfg)
    model = CILRS(model_cfg).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler, scaler, autocast = build_optimization(model, cfg, device)
    image = torch.randint(0, 256, (batch_size, 3, side, side), dtype=torch.uint8, device=device)
    speed = torch.rand(batch_size, device=device) * 12
    branch = torch.randint(0, 4, (batch_size,), device=device)
    controls = torch.rand(batch_size, 3, device=device)

    def run(n: int) -> float:
        parts = None
        for _ in range(n):
            parts = optimizer_step(model, optimizer, scheduler, scaler, cfg, autocast, image, speed, branch,
                                   controls)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(parts.total.detach()) if parts is not None else float("nan")

    run(warmup)
    start = time.perf_counter()
    loss = run(steps)
    elapsed = time.perf_counter() - start
    return {"batch_size": batch_size, "image": f"{side}x{side}", "steps": steps, "seconds": elapsed,
            "steps_per_s": steps / elapsed, "images_per_s": steps * batch_size / elapsed,
            "parameters": sum(p.numel() for p in model.parameters()), "loss": loss, "device": str(device)}


def main() -> None:
    """Runs every case and prints a Markdown table (or JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    cpu = torch.device("cpu")
    for name, model_cfg, batch, side in CPU_CASES:
        rows.append({"case": name, **measure(model_cfg, batch, side, args.steps, args.warmup, cpu)})
    if torch.cuda.is_available():
        gpu = torch.device("cuda", 0)
        for name, model_cfg, batch, side in GPU_CASES:
            rows.append({"case": name, "gpu": torch.cuda.get_device_name(0),
                         **measure(model_cfg, batch, side, max(args.steps, 20), max(args.warmup, 5), gpu)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} timed steps, "
          f"{args.warmup} warm-up")
    print("| case | device | batch | steps/s | images/s | parameters |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['case']} | {r.get('gpu', r['device'])} | {r['batch_size']} | {r['steps_per_s']:.3f} | "
              f"{r['images_per_s']:.1f} | {r['parameters']:,} |")


if __name__ == "__main__":
    main()
