"""A stand-in for `python -m sd_trainer.train` in the launcher's process-handling tests: the same
command line and files (docs/training.md), with behaviour set by the test through SCRIPTED_TRAINING,
a JSON object: steps (unless the run's config sets max_steps), step_s (seconds per step), exit (final exit code), exit_at_step (end there with
that code), no_result (exit 0 without result.json), ignore_sigterm. The real training process is exercised by test_runs_training.py."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def main() -> int:
    p = argparse.ArgumentParser()
    for flag in ("--run-id", "--dataset", "--config-json", "--out", "--dataset-root"):
        p.add_argument(flag)
    a = p.parse_args()
    script = json.loads(os.environ.get("SCRIPTED_TRAINING", "{}"))
    steps = json.loads(a.config_json or "{}").get("max_steps", script.get("steps", 5))  # a run's own, if given
    step_s = script.get("step_s", 0.02)
    out = Path(a.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    with (out / "launches.jsonl").open("a") as f:  # lets a test count launches and see the arguments
        f.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:]}) + "\n")
    latest = out / "checkpoints" / "latest.json"
    step = json.loads(latest.read_text())["step"] if latest.exists() else 0
    stopping = []
    signal.signal(signal.SIGTERM, (lambda *_: None) if script.get("ignore_sigterm") else
                  (lambda *_: stopping.append(True)))
    print(f"training {a.run_id} from step {step}", flush=True)
    while step < steps:
        if stopping:
            print(f"SIGTERM at step {step}: checkpointed", flush=True)
            return 143
        time.sleep(step_s)
        step += 1
        _write(out / "progress.json", {"state": "running", "step": step, "max_steps": steps,
                                       "loss": {"total": 1.0 / step}})
        _write(latest, {"step": step, "key": f"checkpoints/step-{step:09d}.pt"})
        if script.get("exit_at_step") == step:
            print(f"dying at step {step}", flush=True)
            return script.get("exit", 1)
    if script.get("no_result"):
        return 0
    if script.get("exit", 0):
        print("dataset version has no training segments", file=sys.stderr, flush=True)
        return script["exit"]
    _write(out / "result.json", {"step": step, "checkpoint_uri": f"file://{out}/checkpoints/step-{step:09d}.pt",
                                 "validation": {"loss": 0.25}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
