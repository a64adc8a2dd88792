"""`python -m sd_trainer.train`: trains CILRS on one dataset version (docs/training.md, "The training process").

    python -m sd_trainer.train --run-id RUN_ID --dataset DATASET_ID [--dataset-root DIR]
                               [--config-json JSON] [--out DIR]

The loop is plain PyTorch: Adam with a step decay every `lr_decay_every_steps`, gradient clipping,
bfloat16 (or float16 with a GradScaler) autocast on CUDA, a step-based schedule across epochs until
`max_steps`, open-loop validation, atomic checkpoints (checkpoints.py) mirrored to the object store
under `training/<run_id>/`, and resumption from `checkpoints/latest.json` that ends at the same step
as an uninterrupted run: the checkpoint keeps the step, the epoch, how many batches of that epoch
were consumed, and the RNG states, and each epoch's shuffle is a function of (seed, epoch) alone.

Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK set) it trains with DistributedDataParallel, NCCL on
CUDA and gloo on CPU; each rank reads its own shard (DistributedSampler) and rank 0 alone validates
and writes. Exit status: 0 succeeded, 2 bad configuration or dataset (not worth retrying), 143 stopped
by SIGTERM after a checkpoint, anything else may be retried.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from torch.nn.parallel import DistributedDataParallel

from sd_common.metrics import start_metrics_server
from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings
from sd_trainer import data
from sd_trainer.checkpoints import (
    LATEST,
    StoreMirror,
    load_latest,
    read_latest,
    save_checkpoint,
    write_atomically,
)
from sd_trainer.config import BRANCH_NAMES, CONTROL_NAMES, ConfigError, TrainConfig
from sd_trainer.losses import LossParts, branched_loss
from sd_trainer.model import CILRS
from sd_trainer.reporting import Reporter
from sd_trainer.resnet import PretrainedWeightsError

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_TERMINATED = 143
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class TrainingProcessSettings(BaseSettings):
    """Settings of one training process (`SD_TRAINER_*`), beside the trainer service's own."""

    model_config = SettingsConfigDict(env_prefix="SD_TRAINER_", extra="ignore", frozen=True)

    # Prometheus /metrics of this process; 0 picks a free port (written to progress.json), -1 disables.
    run_metrics_host: str = "127.0.0.1"
    run_metrics_port: int = Field(0, ge=-1, le=65535)
    # Kubernetes reads a container's termination message here; written when the file exists (a pod)
    # or when this setting is given explicitly.
    termination_log: Path = Path("/dev/termination-log")


class RunConfigMismatch(ConfigError):
    """The run id was started with another configuration; that run's files are left as they are."""


class TrainingStopped(Exception):
    """SIGTERM arrived; the loop saved a checkpoint at `step` and stopped."""

    def __init__(self, step: int):
        super().__init__(f"stopped by SIGTERM at step {step} after a checkpoint")
        self.step = step


@dataclass(frozen=True)
class Distributed:
    """This process's place under torchrun (rank 0 of 1 without it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them."""
        return cls(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        """Rank 0 validates and writes."""
        return self.rank == 0

    def barrier(self) -> None:
        """Waits for every rank (nothing without DDP)."""
        if self.world_size > 1:
            dist.barrier()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of docs/training.md."""
    p = argparse.ArgumentParser(prog="python -m sd_trainer.train", description=__doc__.splitlines()[0])
    p.add_argument("--run-id", required=True, help="the run's name; the same id resumes from its checkpoint")
    p.add_argument("--dataset", required=True, help="dataset version id (SHA-256 of its manifest)")
    p.add_argument("--dataset-root", type=Path, default=None,
                   help="a folder laid out like the object store; without it the version is read from the store")
    p.add_argument("--config-json", default="", help="TrainConfig overrides as a JSON object")
    p.add_argument("--out", type=Path, default=None, help="run folder (default .run/training/<run_id>)")
    return p.parse_args(argv)


def pick_device(cfg: TrainConfig, ddp: Distributed) -> torch.device:
    """CUDA when asked or available (one GPU per local rank), else the CPU."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config device 'cuda' was asked for, but no CUDA device is available")
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(ddp.local_rank)
        return torch.device("cuda", ddp.local_rank)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (all devices) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from (dropout, augmentation), for a checkpoint."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores rng_state()."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def open_version(args: argparse.Namespace, cfg: TrainConfig, out_dir: Path) -> data.LocalVersion:
    """The dataset version from --dataset-root, or fetched from the object store into the cache."""
    if args.dataset_root is not None:
        return data.open_local_version(args.dataset_root, args.dataset)
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out_dir / "data"
    root = data.fetch_version_sync(StoreSettings(), args.dataset, cache)
    return data.open_local_version(Path(root), args.dataset)


def make_augmenter(cfg: TrainConfig, seed: int) -> Any:
    """The photometric augmenter of training batches, or None when disabled."""
    if not cfg.data.augment.enabled:
        return None
    from sd_trainer.augment import Augmenter  # its own module; only needed when augmentation is on

    return Augmenter(cfg.data.augment, seed)


def image_size(cfg: TrainConfig, version: data.LocalVersion) -> tuple[int, int]:
    """(height, width) the network sees: the config's, or the version's output size when unset."""
    h, w = cfg.model.image_height, cfg.model.image_width
    if (h == 0) != (w == 0):
        raise ConfigError("model.image_height and model.image_width must both be set or both be 0")
    return (h, w) if h else (version.geometry.height, version.geometry.width)


def prepare_images(image: torch.Tensor, size: tuple[int, int], augmenter: Any, step: int = 0) -> torch.Tensor:
    """Augmented (training) on the device; resized there only if a batch is not already `size`.

    The loader's workers resize (sd_trainer.data), so the resize here is for batches made elsewhere
    (the benchmark's synthetic ones).

    The augmenter draws its randomness from (seed, step), so a resumed run augments step N as an
    uninterrupted one does.
    """
    if augmenter is not None:
        image = augmenter(image, step)
    if tuple(image.shape[-2:]) != size:
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image
        image = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return image


def build_optimization(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> tuple[Any, ...]:
    """Adam, its step decay, the GradScaler (active for float16 only) and the autocast context factory."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.learning_rate, betas=cfg.optim.betas,
                                 weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.optim.lr_decay_every_steps,
                                                gamma=cfg.optim.lr_decay_factor)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.float16 if cfg.amp_dtype == "float16" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    def autocast() -> Any:
        return torch.autocast(device_type="cuda", dtype=amp_dtype) if use_amp else nullcontext()

    return optimizer, scheduler, scaler, autocast


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                   cfg: TrainConfig, autocast: Any, image: torch.Tensor, speed: torch.Tensor, branch: torch.Tensor,
                   controls: torch.Tensor) -> LossParts:
    """One training step: loss under autocast, backward (scaled for float16), clipping, Adam, LR schedule.

    A non-finite loss skips the update (the caller stops the run with the step named).
    """
    with autocast():
        out = model(image, speed)
        parts = branched_loss(out, branch, controls, speed, cfg.loss, cfg.model.speed_factor_mps)
    if not torch.isfinite(parts.total):
        return parts
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(parts.total).backward()
    if cfg.optim.grad_clip_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return parts


@torch.no_grad()
def validate(model: torch.nn.Module, loader: Any, cfg: TrainConfig, device: torch.device,
             size: tuple[int, int], autocast: Any, step: int, epoch: int) -> dict[str, Any]:
    """Open-loop validation: loss, MAE per control, per command branch, and speed MAE in m/s."""
    model.eval()
    frames = 0
    loss_sum = 0.0
    mae_sum = torch.zeros(3, dtype=torch.float64)
    branch_sum = torch.zeros(len(BRANCH_NAMES), 3, dtype=torch.float64)
    branch_count = torch.zeros(len(BRANCH_NAMES), dtype=torch.int64)
    speed_sum = 0.0
    for batch in loader:
        image = prepare_images(batch["image"].to(device, non_blocking=True), size, None)
        speed = batch["speed_mps"].to(device)
        branch = batch["branch"].to(device)
        controls = batch["controls"].to(device)
        with autocast():
            out = model(image, speed)
            parts = branched_loss(out, branch, controls, speed, cfg.loss, cfg.model.speed_factor_mps)
        n = image.shape[0]
        frames += n
        loss_sum += float(parts.total) * n
        err = (out.select(branch).float() - controls).abs().double().cpu()
        mae_sum += err.sum(dim=0)
        b = branch.cpu()
        branch_sum.index_add_(0, b, err)
        branch_count += torch.bincount(b, minlength=len(BRANCH_NAMES))
        speed_sum += float((out.speed_mps.float() - speed).abs().sum())
    model.train()
    if frames == 0:
        raise data.DatasetError("the validation split has no frames")
    per_branch = {name: {c: float(branch_sum[i, j] / branch_count[i]) for j, c in enumerate(CONTROL_NAMES)}
                  for i, name in enumerate(BRANCH_NAMES) if branch_count[i] > 0}
    return {"step": step, "epoch": epoch, "frames": frames, "loss": loss_sum / frames,
            "mae": {c: float(mae_sum[j] / frames) for j, c in enumerate(CONTROL_NAMES)},
            "mae_per_branch": per_branch,
            "frames_per_branch": {name: int(branch_count[i]) for i, name in enumerate(BRANCH_NAMES)},
            "speed_mae_mps": speed_sum / frames}


def stop_requested(stop: dict[str, bool], ddp: Distributed) -> bool:
    """Whether SIGTERM reached any rank (all ranks stop at the same step)."""
    if ddp.world_size == 1:
        return stop["requested"]
    flag = torch.tensor([1.0 if stop["requested"] else 0.0])
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def check_same_config(run_dir: Path, cfg: TrainConfig) -> None:
    """A run id names one configuration: restarting it with another one is an error, not a new run."""
    path = run_dir / "config.json"
    if path.is_file():
        before = json.loads(path.read_text())
        if before != cfg.to_dict():
            changed = sorted(k for k in set(before) | set(cfg.to_dict()) if before.get(k) != cfg.to_dict().get(k))
            raise RunConfigMismatch(f"run folder {run_dir} was started with another configuration (differs "
                                    f"in {changed}); use a new run id")


def store_uri(settings: StoreSettings, key: str) -> str:
    """How other parts name an object: s3://bucket/key on S3, the bare key in the embedded store."""
    return f"s3://{settings.bucket}/{key}" if settings.backend == "s3" else key


def train(args: argparse.Namespace, cfg: TrainConfig, ddp: Distributed, settings: TrainingProcessSettings,
          stop: dict[str, bool]) -> dict[str, Any]:
    """Runs (or resumes) the run to max_steps; returns result.json's content (rank 0) or {}."""
    run_dir = args.out or Path(".run/training") / args.run_id
    device = pick_device(cfg, ddp)
    if ddp.world_size > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if ddp.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        check_same_config(run_dir, cfg)
        write_atomically(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1).encode())
    store_settings = StoreSettings()
    mirror = StoreMirror(make_store(store_settings), args.run_id, run_dir) if ddp.local_rank == 0 else None
    try:
        return _train(args, cfg, ddp, settings, stop, run_dir, device, mirror, store_settings)
    finally:
        if mirror is not None:
            mirror.close()
        if ddp.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(args: argparse.Namespace, cfg: TrainConfig, ddp: Distributed, settings: TrainingProcessSettings,
           stop: dict[str, bool], run_dir: Path, device: torch.device, mirror: StoreMirror | None,
           store_settings: StoreSettings) -> dict[str, Any]:
    version = open_version(args, cfg, run_dir)
    size = image_size(cfg, version)
    seed_everything(cfg.seed)
    # The loader workers resize (only when the config asks for another size than the version's).
    train_set = data.split_dataset(version, "train", height=size[0], width=size[1])
    if len(train_set) < cfg.data.batch_size * ddp.world_size:
        raise data.DatasetError(f"the training split has {len(train_set)} frames, fewer than one batch of "
                                f"{cfg.data.batch_size} per rank on {ddp.world_size} rank(s)")
    train_loader = data.make_loader(train_set, cfg.data, train=True, seed=cfg.seed, rank=ddp.rank,
                                    world_size=ddp.world_size, device_type=device.type)
    val_loader = (data.make_loader(data.split_dataset(version, "val", height=size[0], width=size[1]), cfg.data, train=False, seed=cfg.seed,
                                   device_type=device.type) if ddp.is_main else None)
    model = CILRS(cfg.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler, scaler, autocast = build_optimization(model, cfg, device)

    # Resume: the newer of the local folder's and the store's latest checkpoint.
    if mirror is not None:
        local = read_latest(run_dir)
        mirror.download_latest(newer_than=local["step"] if local else -1)
    ddp.barrier()
    state = load_latest(run_dir)
    step, epoch, position = 0, 0, 0
    if state is not None:
        if state["config"] != cfg.to_dict():
            raise RunConfigMismatch(f"the checkpoint in {run_dir / LATEST} was made with another configuration")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        set_rng_state(state["rng"]) if ddp.is_main else seed_everything(cfg.seed + ddp.rank + 7919 * step)
    elif ddp.rank > 0:
        seed_everything(cfg.seed + ddp.rank)
    raw_model = model
    if ddp.world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    augmenter = make_augmenter(cfg, cfg.seed * 1000 + ddp.rank)

    reporter = None
    if ddp.is_main:
        metrics_port = None
        if settings.run_metrics_port >= 0:
            metrics_port = start_metrics_server(settings.run_metrics_host, settings.run_metrics_port)
        reporter = Reporter(run_dir, run_id=args.run_id, dataset_id=args.dataset, max_steps=cfg.max_steps)
        reporter.open(step, {"metrics_port": metrics_port, "world_size": ddp.world_size, "device": str(device),
                             "image_size": list(size), "train_frames": len(train_set),
                             "val_frames": len(val_loader.dataset), "resumed_from_step": step if state else None})
        if mirror is not None:
            mirror.upload("config.json", content_type="application/json")

    paused_s = 0.0  # time spent validating and checkpointing, left out of images/s

    def run_validation() -> dict[str, Any] | None:
        nonlocal paused_s
        started, result = time.perf_counter(), None
        if ddp.is_main:
            reporter.update(state="validating")
            result = validate(raw_model, val_loader, cfg, device, size, autocast, step, epoch)
            reporter.validation(result)
        ddp.barrier()
        paused_s += time.perf_counter() - started
        return result

    def checkpoint() -> str | None:
        nonlocal paused_s
        started, name = time.perf_counter(), None
        if ddp.is_main:
            name = save_checkpoint(run_dir, step, {
                "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step, "epoch": epoch,
                "position": position, "rng": rng_state(), "config": cfg.to_dict(), "run_id": args.run_id,
                "dataset_id": args.dataset, "world_size": ddp.world_size,
                # the dataset's camera and the network's input size, for the evaluator (docs/training.md)
                "camera": version.geometry.camera(*size)})
            reporter.flush()
            if mirror is not None:
                mirror.upload(name)
                mirror.upload(LATEST, content_type="application/json")
                for extra in ("progress.json", "validation.jsonl"):
                    if (run_dir / extra).is_file():
                        mirror.upload(extra, content_type="application/json")
                mirror.upload_tree("tensorboard")
        ddp.barrier()
        paused_s += time.perf_counter() - started
        return name

    # Every rank keeps these, so all take the same decisions (and meet at the same barriers).
    validated_step, checkpointed_step, last_val = -1, (state["step"] if state else -1), None
    if state is None:
        last_val, validated_step = run_validation(), 0  # the untrained network: the curve's first point
    sampler = train_loader.sampler
    window_start, window_images, window_losses = time.perf_counter(), 0, []
    paused_s = 0.0
    while step < cfg.max_steps:
        # Each epoch's order is a function of (seed, epoch) only, so a resumed run sees the same batches.
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        else:
            sampler.generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        batches = iter(train_loader)
        for _ in range(position):  # batches this epoch already trained on before the restart
            next(batches, None)
        for batch in batches:
            image = prepare_images(batch["image"].to(device, non_blocking=True), size, augmenter, step)
            speed = batch["speed_mps"].to(device, non_blocking=True)
            branch = batch["branch"].to(device, non_blocking=True)
            controls = batch["controls"].to(device, non_blocking=True)
            parts = optimizer_step(model, optimizer, scheduler, scaler, cfg, autocast, image, speed, branch,
                                   controls)
            if not torch.isfinite(parts.total):
                raise FloatingPointError(f"the training loss is not finite at step {step + 1}: "
                                         f"{parts.as_floats()}")
            step += 1
            position += 1
            window_images += image.shape[0] * ddp.world_size
            if reporter is not None:
                window_losses.append(parts.as_floats())
                reporter.steps_done(1)
                if step % cfg.log_every_steps == 0 or step == cfg.max_steps:
                    elapsed = time.perf_counter() - window_start - paused_s
                    mean = {k: sum(w[k] for w in window_losses) / len(window_losses) for k in window_losses[0]}
                    reporter.train_step(step, epoch, mean, scheduler.get_last_lr()[0],
                                        window_images / max(elapsed, 1e-9), window_images)
                    window_start, window_images, window_losses = time.perf_counter(), 0, []
                    paused_s = 0.0
            if cfg.val_every_steps and step % cfg.val_every_steps == 0:
                last_val, validated_step = run_validation(), step
            if step % cfg.checkpoint_every_steps == 0 and step < cfg.max_steps:
                checkpoint()
                checkpointed_step = step
            if stop_requested(stop, ddp):
                checkpoint()
                raise TrainingStopped(step)
            if step >= cfg.max_steps:
                break
        else:
            epoch += 1
            position = 0
            if not cfg.val_every_steps and step < cfg.max_steps:
                last_val, validated_step = run_validation(), step
            continue
        break

    if validated_step != step:
        last_val = run_validation()
    if checkpointed_step != step:
        checkpoint()
    if not ddp.is_main:
        return {}
    last_checkpoint = read_latest(run_dir)["key"]
    curves = reporter.write_curves()
    result = {"run_id": args.run_id, "dataset_id": args.dataset, "state": "succeeded", "step": step,
              "epoch": epoch, "checkpoint_uri": store_uri(store_settings, mirror.key(last_checkpoint)),
              "validation": last_val, "curves": curves}
    reporter.update(state="succeeded", step=step, result=result)
    reporter.close()
    write_termination = settings.termination_log.exists() or "SD_TRAINER_TERMINATION_LOG" in os.environ
    reporter.write_result(result, settings.termination_log if write_termination else None)
    mirror.upload_tree("tensorboard")
    mirror.upload_tree("curves")
    for name in ("progress.json", "validation.jsonl", "result.json"):
        mirror.upload(name, content_type="application/json")
    mirror.flush()
    return result


def _fail(run_dir: Path, run_id: str, reason: str, message: str, settings: TrainingProcessSettings,
          state: str = "failed") -> None:
    """progress.json and the termination log say why the run failed or stopped (rank 0)."""
    doc = {"run_id": run_id, "state": state, "reason": reason, "message": message[-2000:],
           "updated_at": time.time()}
    progress = run_dir / "progress.json"
    try:
        before = json.loads(progress.read_text()) if progress.is_file() else {}
        before.update(doc)
        write_atomically(progress, json.dumps(before, indent=1).encode())
        if settings.termination_log.exists() or "SD_TRAINER_TERMINATION_LOG" in os.environ:
            settings.termination_log.write_bytes(json.dumps(doc).encode()[:4096])
    except OSError:
        pass  # the folder itself may be the problem; the exit status still tells


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    settings = TrainingProcessSettings()
    ddp = Distributed.from_env()
    run_dir = args.out or Path(".run/training") / args.run_id
    stop = {"requested": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    try:
        return _main(args, settings, ddp, run_dir, stop)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace, settings: TrainingProcessSettings, ddp: Distributed, run_dir: Path,
          stop: dict[str, bool]) -> int:
    try:
        if not RUN_ID_PATTERN.match(args.run_id):
            raise ConfigError(f"run id {args.run_id!r} must be letters, digits, '.', '_' or '-' (at most 128)")
        cfg = TrainConfig.from_overrides(args.config_json)
        result = train(args, cfg, ddp, settings, stop)
    except (ConfigError, data.DatasetError, PretrainedWeightsError) as e:
        print(f"training run {args.run_id}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        if ddp.is_main and RUN_ID_PATTERN.match(args.run_id) and not isinstance(e, RunConfigMismatch):
            _fail(run_dir, args.run_id, type(e).__name__, str(e), settings)
        return EXIT_BAD_INPUT
    except TrainingStopped as e:
        print(f"training run {args.run_id}: {e}", file=sys.stderr, flush=True)
        if ddp.is_main:
            _fail(run_dir, args.run_id, "Terminated", str(e), settings, state="stopped")
        return EXIT_TERMINATED
    except Exception as e:  # noqa: BLE001 - the exit status must say "may be retried"
        traceback.print_exc()
        if ddp.is_main:
            _fail(run_dir, args.run_id, type(e).__name__, f"{e}", settings)
        return EXIT_FAILED
    if ddp.is_main:
        print(json.dumps({"run_id": result["run_id"], "step": result["step"],
                          "checkpoint_uri": result["checkpoint_uri"], "val_loss": result["validation"]["loss"]}),
              flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
