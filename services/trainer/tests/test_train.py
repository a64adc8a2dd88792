"""`python -m sd_trainer.train` end to end on a tiny version (base_width 8, 64x64, CPU).

One uninterrupted run (module fixture) is the reference: its validation loss must fall, it must write
every file of docs/training.md and mirror them to the store; a second run of the same configuration is
SIGKILLed mid-way, restarted with the same run id, and must end at the same step with the same weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from version_factory import MOUNT, make_version

# Real training processes: about a minute on an idle 2-core machine, several times that when it is shared.
pytestmark = pytest.mark.timeout(900)

TINY = {
    "model": {"backbone": "resnet18", "base_width": 8},
    "data": {"batch_size": 16, "num_workers": 0, "augment": {"enabled": False}},
    "max_steps": 40, "val_every_steps": 20, "checkpoint_every_steps": 10, "log_every_steps": 5, "seed": 3,
}


def _env(store: Path, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SD_STORE_ROOT=str(store), SD_TRAINER_TERMINATION_LOG=str(tmp / "termination-log"),
               SD_TRAINER_RUN_METRICS_PORT="0", PYTHONUNBUFFERED="1")
    return env


def _command(run_id: str, version, out: Path, config: dict) -> list[str]:
    return [sys.executable, "-m", "sd_trainer.train", "--run-id", run_id, "--dataset", version.dataset_id,
            "--dataset-root", str(version.root), "--out", str(out), "--config-json", json.dumps(config)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny run: (version, run folder, store root, completed process, tmp folder)."""
    tmp = tmp_path_factory.mktemp("train")
    version = make_version(tmp / "store")
    out = tmp / "runs" / "ref"
    proc = subprocess.run(_command("ref", version, out, TINY), env=_env(version.root, tmp), check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return version, out, version.root, proc, tmp


def test_training_lowers_validation_loss(reference):
    _, out, _, _, _ = reference
    vals = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [v["step"] for v in vals] == [0, 20, 40]
    first, last = vals[0], vals[-1]
    assert last["loss"] < 0.75 * first["loss"], vals
    assert last["mae"]["throttle"] < first["mae"]["throttle"]
    assert last["speed_mae_mps"] < first["speed_mae_mps"]
    assert last["frames"] == 40  # the whole validation split (one of four sessions)
    assert set(last["mae_per_branch"]) <= {"follow", "left", "right", "straight"}
    assert sum(last["frames_per_branch"].values()) == 40


def test_run_writes_the_contract_files_and_mirrors_them(reference):
    _, out, store, proc, tmp = reference
    result = json.loads((out / "result.json").read_text())
    assert result["state"] == "succeeded" and result["step"] == 40
    assert result["checkpoint_uri"] == "training/ref/checkpoints/step-000000040.pt"
    assert json.loads((out / "checkpoints" / "latest.json").read_text()) == {
        "step": 40, "key": "checkpoints/step-000000040.pt"}
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == [
        f"step-{s:09d}.pt" for s in (10, 20, 30, 40)]
    progress = json.loads((out / "progress.json").read_text())
    assert progress["state"] == "succeeded" and progress["step"] == 40 and progress["max_steps"] == 40
    assert progress["image_size"] == [64, 64] and progress["images_per_s"] > 0 and progress["lr"] == 2e-4
    assert isinstance(progress["metrics_port"], int) and progress["metrics_port"] > 0
    assert json.loads((out / "config.json").read_text())["model"]["base_width"] == 8
    # every checkpoint names the dataset's camera: a 1280x720 recording whose 680x680 crop at (300, 20) spans
    # 64.66 degrees is a 100-degree camera; the mount is segments.json's; the network takes 64x64
    camera = torch.load(out / "checkpoints" / "step-000000010.pt", map_location="cpu", weights_only=False)["camera"]
    assert camera["recording"]["width"] == 1280 and camera["recording"]["height"] == 720
    assert abs(camera["recording"]["fov_deg"] - 100.0) < 0.05  # 64.66 is 64.68 rounded
    assert camera["mount"] == MOUNT and camera["crop"] == {"x": 300, "y": 20, "width": 680, "height": 680}
    assert camera["output"] == {"width": 64, "height": 64} and camera["input"] == {"width": 64, "height": 64}
    for png in ("curves/loss.png", "curves/mae.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the store holds the same files under training/<run_id>/
    mirrored = store / "training" / "ref"
    for name in ("config.json", "progress.json", "validation.jsonl", "result.json", "checkpoints/latest.json",
                 "checkpoints/step-000000040.pt", "curves/loss.png"):
        assert (mirrored / name).read_bytes() == (out / name).read_bytes(), name
    assert list((mirrored / "tensorboard").glob("events.out.tfevents.*"))
    # the termination log: result.json's content, at most 4 KiB
    term = (tmp / "termination-log").read_bytes()
    assert len(term) <= 4096 and json.loads(term)["checkpoint_uri"] == result["checkpoint_uri"]
    # no terminal: plain progress lines, no bar
    assert "step 40/40" in proc.stderr and "\r" not in proc.stderr
    # stdout's last line is a JSON summary
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 40


def test_tensorboard_log_reads_back(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out, _, _, _ = reference
    (event_file,) = (out / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(event_file))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss_total", "train/lr", "train/images_per_s", "val/loss", "val/mae_steer",
            "val/speed_mae_mps"} <= tags
    assert [e.step for e in acc.Scalars("val/loss")] == [0, 20, 40]
    assert [e.step for e in acc.Scalars("train/loss_total")] == list(range(5, 41, 5))
    vals = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [round(e.value, 5) for e in acc.Scalars("val/loss")] == [round(v["loss"], 5) for v in vals]


def test_sigkill_mid_run_resumes_to_the_same_step_and_weights(reference):
    version, ref_out, _, _, tmp = reference
    out = tmp / "runs" / "killed"
    command = _command("killed", version, out, TINY)
    env = _env(version.root, tmp)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 300
    while not latest.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads(latest.read_text())["step"]
    assert 10 <= killed_at < 40
    assert not (out / "result.json").exists()

    again = subprocess.run(command, env=env, check=False, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    progress = json.loads((out / "progress.json").read_text())
    assert progress["resumed_from_step"] == killed_at
    result = json.loads((out / "result.json").read_text())
    assert result["step"] == 40
    # validations before the kill are kept once, later ones redone: the same steps as uninterrupted
    assert [json.loads(x)["step"] for x in (out / "validation.jsonl").read_text().splitlines()] == [0, 20, 40]
    # the resumed run replays exactly what the uninterrupted one did (CPU, no loader workers, same seeds)
    ours = torch.load(out / "checkpoints" / "step-000000040.pt", weights_only=False)
    ref = torch.load(ref_out / "checkpoints" / "step-000000040.pt", weights_only=False)
    assert ours["epoch"] == ref["epoch"] and ours["position"] == ref["position"]
    for name, tensor in ref["model"].items():
        assert torch.equal(ours["model"][name], tensor), name


def test_sigterm_checkpoints_and_a_new_folder_resumes_from_the_store(reference):
    version, ref_out, store, _, tmp = reference
    out = tmp / "runs" / "term-pod-1"
    command = _command("term", version, out, TINY)
    env = _env(version.root, tmp)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = out / "progress.json"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if progress.is_file() and json.loads(progress.read_text()).get("step", 0) >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    stopped = json.loads(progress.read_text())
    assert stopped["state"] == "stopped" and stopped["reason"] == "Terminated"
    at = json.loads((store / "training" / "term" / "checkpoints" / "latest.json").read_text())["step"]
    assert 5 <= at < 40 and (store / "training" / "term" / f"checkpoints/step-{at:09d}.pt").is_file()

    # a new pod has an empty folder: it resumes from the store's checkpoint, not from step 0
    fresh = tmp / "runs" / "term-pod-2"
    again = subprocess.run(_command("term", version, fresh, TINY), env=env, check=False, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((fresh / "progress.json").read_text())["resumed_from_step"] == at
    assert json.loads((fresh / "result.json").read_text())["step"] == 40
    ours = torch.load(fresh / "checkpoints" / "step-000000040.pt", weights_only=False)["model"]
    ref = torch.load(ref_out / "checkpoints" / "step-000000040.pt", weights_only=False)["model"]
    assert all(torch.equal(ours[k], v) for k, v in ref.items())


def test_bad_configuration_and_missing_dataset_exit_2_and_say_why(tmp_path):
    from sd_trainer.train import main

    version = make_version(tmp_path / "store", sessions=2, segments_per_session=1, frames=8, val_fraction=0.5)
    env_keys = {"SD_STORE_ROOT": str(tmp_path / "store"), "SD_TRAINER_RUN_METRICS_PORT": "-1"}
    old = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    try:
        out = tmp_path / "bad"
        code = main(["--run-id", "bad", "--dataset", version.dataset_id, "--dataset-root", str(version.root),
                     "--out", str(out), "--config-json", '{"optim": {"learning_rat": 1}}'])
        assert code == 2
        progress = json.loads((out / "progress.json").read_text())
        assert progress["state"] == "failed" and progress["reason"] == "ConfigError"
        assert "optim.learning_rat" in progress["message"]

        code = main(["--run-id", "nodata", "--dataset", "0" * 64, "--dataset-root", str(version.root),
                     "--out", str(tmp_path / "nodata"), "--config-json", json.dumps(TINY)])
        assert code == 2
        progress = json.loads((tmp_path / "nodata" / "progress.json").read_text())
        assert progress["reason"] == "DatasetError" and "not found" in progress["message"]

        # a training split smaller than one batch is named, not an empty loop
        code = main(["--run-id", "small", "--dataset", version.dataset_id, "--dataset-root", str(version.root),
                     "--out", str(tmp_path / "small"), "--config-json", json.dumps(TINY)])
        assert code == 2
        assert "fewer than one batch" in json.loads((tmp_path / "small" / "progress.json").read_text())["message"]

        # a run id already used with another configuration: refused, and that run's files stay as they were
        used = tmp_path / "used"
        used.mkdir()
        (used / "config.json").write_text(json.dumps({"max_steps": 1}))
        (used / "progress.json").write_text('{"state": "succeeded"}')
        code = main(["--run-id", "used", "--dataset", version.dataset_id, "--dataset-root", str(version.root),
                     "--out", str(used), "--config-json", json.dumps(TINY)])
        assert code == 2
        assert (used / "progress.json").read_text() == '{"state": "succeeded"}'
        assert json.loads((used / "config.json").read_text()) == {"max_steps": 1}

        assert main(["--run-id", "../escape", "--dataset", version.dataset_id]) == 2
        assert not (tmp_path / "escape").exists() and not Path(".run/training/../escape").exists()
        assert not (tmp_path / "store" / "training").exists()  # nothing was mirrored for failed starts
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_run_reads_its_version_from_the_store_augments_and_resizes_in_the_loader(tmp_path):
    """No --dataset-root: the version is fetched from the embedded store into the run's cache, the
    default augmentation is on, and the network asks for 48x48 pictures of the 64x64 version."""
    version = make_version(tmp_path / "store")
    out = tmp_path / "run"
    config = {**TINY, "max_steps": 4, "val_every_steps": 4, "checkpoint_every_steps": 4,
              "model": {**TINY["model"], "image_height": 48, "image_width": 48},
              "data": {"batch_size": 16, "num_workers": 1}}
    command = list(_command("fromstore", version, out, config))
    at = command.index("--dataset-root")
    del command[at:at + 2]
    proc = subprocess.run(command, env=_env(version.root, tmp_path), check=False, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cached = out / "data" / version.dataset_id
    assert (cached / "datasets" / version.dataset_id / "manifest.json").read_bytes() == \
        (version.root / "datasets" / version.dataset_id / "manifest.json").read_bytes()
    assert len(list(cached.rglob("*.jpg"))) == sum(s["frames"] for s in version.manifest["segments"])
    config_used = json.loads((out / "config.json").read_text())
    assert config_used["data"]["augment"]["enabled"] is True
    assert json.loads((out / "result.json").read_text())["step"] == 4
    state = torch.load(out / "checkpoints" / "step-000000004.pt", map_location="cpu", weights_only=False)
    assert state["config"]["model"]["image_height"] == 48
