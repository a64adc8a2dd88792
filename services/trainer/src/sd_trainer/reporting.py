"""What a training process tells the outside while it runs: progress.json, TensorBoard, Prometheus,
a progress bar or plain lines, validation.jsonl, PNG curves at the end, result.json and the
termination log. Only rank 0 reports (train.py makes no reporter on other ranks).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from prometheus_client import Counter, Gauge

from sd_trainer.checkpoints import write_atomically

STEPS = Counter("sd_trainer_run_steps_total", "Optimizer steps taken by this training process")
IMAGES = Counter("sd_trainer_run_images_total", "Training images seen by this training process (all ranks)")
LOSS = Gauge("sd_trainer_run_loss", "Training loss of the latest logged steps", ["part"])
IMAGES_PER_S = Gauge("sd_trainer_run_images_per_second", "Training throughput over the latest logged steps")
LEARNING_RATE = Gauge("sd_trainer_run_learning_rate", "Current learning rate")
STEP = Gauge("sd_trainer_run_step", "Current optimizer step")
VAL_LOSS = Gauge("sd_trainer_run_validation_loss", "Loss of the latest open-loop validation")
VAL_MAE = Gauge("sd_trainer_run_validation_mae", "MAE of the latest open-loop validation", ["control"])

TERMINATION_LOG_BYTES = 4096


class Reporter:
    """Writes the run folder's reports and the process's metrics; one per training process (rank 0)."""

    def __init__(self, run_dir: Path, *, run_id: str, dataset_id: str, max_steps: int,
                 stream: TextIO | None = None, use_bar: bool | None = None):
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.dataset_id = dataset_id
        self.max_steps = max_steps
        self.stream = stream or sys.stderr
        self.use_bar = self.stream.isatty() if use_bar is None else use_bar
        self.progress: dict[str, Any] = {"run_id": run_id, "dataset_id": dataset_id, "state": "starting",
                                         "step": 0, "max_steps": max_steps, "epoch": 0}
        self.train_history: list[dict[str, Any]] = []
        self.val_history: list[dict[str, Any]] = []
        self._writer = None
        self._bar = None

    # --- lifecycle -------------------------------------------------------------------------------

    def open(self, start_step: int, extra: dict[str, Any] | None = None) -> None:
        """Opens the TensorBoard log and the progress bar; reads back validation.jsonl after a resume."""
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard; only the reporting rank

        self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=start_step or None)
        val_path = self.run_dir / "validation.jsonl"
        if val_path.is_file():
            # A resumed run keeps the validations up to its checkpoint; later ones are redone.
            self.val_history = [v for v in map(json.loads, val_path.read_text().splitlines())
                                if v["step"] <= start_step]
            val_path.write_text("".join(json.dumps(v) + "\n" for v in self.val_history))
        history = self.run_dir / "curves" / "train_history.jsonl"
        if history.is_file():
            self.train_history = [h for h in map(json.loads, history.read_text().splitlines())
                                  if h["step"] <= start_step]
            history.write_text("".join(json.dumps(h) + "\n" for h in self.train_history))
        if self.use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.max_steps, initial=start_step, file=self.stream, unit="step",
                             dynamic_ncols=True)
        self.update(state="running", step=start_step, **(extra or {}))

    def close(self) -> None:
        """Flushes and closes the TensorBoard log and the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # --- progress --------------------------------------------------------------------------------

    def update(self, **fields: Any) -> None:
        """Merges fields into progress.json and rewrites it atomically."""
        self.progress.update(fields)
        self.progress["updated_at"] = time.time()
        write_atomically(self.run_dir / "progress.json", json.dumps(self.progress, indent=1).encode())

    def train_step(self, step: int, epoch: int, losses: dict[str, float], lr: float, images_per_s: float,
                   images: int) -> None:
        """One logging interval of training: metrics, TensorBoard, progress, bar or a line."""
        STEP.set(step)
        LEARNING_RATE.set(lr)
        IMAGES_PER_S.set(images_per_s)
        IMAGES.inc(images)
        for part, value in losses.items():
            LOSS.labels(part).set(value)
        for part, value in losses.items():
            self._writer.add_scalar(f"train/loss_{part}", value, step)
        self._writer.add_scalar("train/lr", lr, step)
        self._writer.add_scalar("train/images_per_s", images_per_s, step)
        entry = {"step": step, "epoch": epoch, "loss": losses, "lr": lr, "images_per_s": images_per_s}
        self.train_history.append(entry)
        history = self.run_dir / "curves" / "train_history.jsonl"
        history.parent.mkdir(parents=True, exist_ok=True)
        with open(history, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
        self.update(state="running", step=step, epoch=epoch, loss=losses, lr=lr, images_per_s=images_per_s)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{losses['total']:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.0f}")
        else:
            print(f"step {step}/{self.max_steps} epoch {epoch} loss {losses['total']:.4f} lr {lr:.3g} "
                  f"images/s {images_per_s:.1f}", file=self.stream, flush=True)

    def steps_done(self, count: int) -> None:
        """Advances the step counter and the bar by `count` optimizer steps."""
        STEPS.inc(count)
        if self._bar is not None:
            self._bar.update(count)

    def validation(self, metrics: dict[str, Any]) -> None:
        """One open-loop validation: validation.jsonl, TensorBoard, metrics, progress."""
        self.val_history.append(metrics)
        with open(self.run_dir / "validation.jsonl", "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        step = metrics["step"]
        VAL_LOSS.set(metrics["loss"])
        self._writer.add_scalar("val/loss", metrics["loss"], step)
        self._writer.add_scalar("val/speed_mae_mps", metrics["speed_mae_mps"], step)
        for control, value in metrics["mae"].items():
            VAL_MAE.labels(control).set(value)
            self._writer.add_scalar(f"val/mae_{control}", value, step)
        for branch, per in metrics["mae_per_branch"].items():
            for control, value in per.items():
                self._writer.add_scalar(f"val/mae_{branch}_{control}", value, step)
        self._writer.flush()
        self.update(validation=metrics)
        line = (f"validation step {step}: loss {metrics['loss']:.4f} "
                + " ".join(f"mae_{k} {v:.4f}" for k, v in metrics["mae"].items())
                + f" speed_mae {metrics['speed_mae_mps']:.3f} m/s")
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def flush(self) -> None:
        """Makes the TensorBoard file complete on disk (before it is mirrored)."""
        if self._writer is not None:
            self._writer.flush()

    # --- the end ---------------------------------------------------------------------------------

    def write_curves(self) -> list[str]:
        """PNG curves of training and validation loss and of validation MAE; returns their relative names."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        names = []
        fig, ax = plt.subplots(figsize=(7, 4))
        if self.train_history:
            ax.plot([h["step"] for h in self.train_history], [h["loss"]["total"] for h in self.train_history],
                    label="train")
        if self.val_history:
            ax.plot([v["step"] for v in self.val_history], [v["loss"] for v in self.val_history], "o-",
                    label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{self.run_id}: loss")
        ax.legend()
        fig.tight_layout()
        names.append(self._save(fig, "curves/loss.png"))
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 4))
        if self.val_history:
            steps = [v["step"] for v in self.val_history]
            for control in self.val_history[-1]["mae"]:
                ax.plot(steps, [v["mae"][control] for v in self.val_history], "o-", label=control)
            ax.plot(steps, [v["speed_mae_mps"] / 12.0 for v in self.val_history], "o--", label="speed / 12 m/s")
        ax.set_xlabel("step")
        ax.set_ylabel("validation MAE")
        ax.set_title(f"{self.run_id}: validation MAE")
        ax.legend()
        fig.tight_layout()
        names.append(self._save(fig, "curves/mae.png"))
        plt.close(fig)
        return names

    def _save(self, fig: Any, relative: str) -> str:
        path = self.run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80)
        return relative

    def write_result(self, result: dict[str, Any], termination_log: Path | None) -> None:
        """result.json, and its content cut to 4 KiB in the termination log (where the operator reads it)."""
        data = json.dumps(result, indent=1).encode()
        write_atomically(self.run_dir / "result.json", data)
        if termination_log is not None:
            write_termination_log(termination_log, result)


def write_termination_log(path: Path, result: dict[str, Any]) -> None:
    """The result as compact JSON, dropping the per-branch detail first if it exceeds 4 KiB."""
    data = json.dumps(result, separators=(",", ":")).encode()
    slim = json.loads(data)
    for drop in ("mae_per_branch", "frames_per_branch"):  # least needed first; the JSON stays whole
        if len(data) <= TERMINATION_LOG_BYTES:
            break
        (slim.get("validation") or {}).pop(drop, None)
        data = json.dumps(slim, separators=(",", ":")).encode()
    if len(data) > TERMINATION_LOG_BYTES:
        data = json.dumps({k: slim.get(k) for k in ("run_id", "state", "step", "checkpoint_uri")},
                          separators=(",", ":")).encode()
    Path(path).write_bytes(data[:TERMINATION_LOG_BYTES])
