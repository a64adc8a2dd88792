"""The training process's reports: Prometheus metrics, a tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

from sd_common.metrics import start_metrics_server
from sd_trainer.reporting import Reporter, write_termination_log


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _validation(step: int, loss: float) -> dict:
    return {"step": step, "epoch": 0, "frames": 4, "loss": loss,
            "mae": {"steer": 0.1, "throttle": 0.2, "brake": 0.3},
            "mae_per_branch": {"left": {"steer": 0.1, "throttle": 0.2, "brake": 0.3}},
            "frames_per_branch": {"follow": 0, "left": 4, "right": 0, "straight": 0}, "speed_mae_mps": 1.5}


def test_prometheus_metrics_of_the_process(tmp_path: Path):
    port = start_metrics_server("127.0.0.1", 0)
    rep = Reporter(tmp_path, run_id="m", dataset_id="d", max_steps=10, stream=io.StringIO())
    rep.open(0)
    before = _scrape(port)
    rep.steps_done(3)
    rep.train_step(3, 0, {"total": 0.25, "controls": 0.2, "speed": 0.5}, 1e-4, 321.0, 48)
    rep.validation(_validation(3, 0.125))
    rep.close()
    after = _scrape(port)
    assert after["sd_trainer_run_steps_total"] - before.get("sd_trainer_run_steps_total", 0) == 3
    assert after["sd_trainer_run_images_total"] - before.get("sd_trainer_run_images_total", 0) == 48
    assert after['sd_trainer_run_loss{part="total"}'] == 0.25
    assert after["sd_trainer_run_images_per_second"] == 321.0
    assert after["sd_trainer_run_learning_rate"] == 1e-4
    assert after["sd_trainer_run_step"] == 3
    assert after["sd_trainer_run_validation_loss"] == 0.125
    assert after['sd_trainer_run_validation_mae{control="brake"}'] == 0.3
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["step"] == 3 and progress["validation"]["loss"] == 0.125


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("sd_trainer_run_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_a_bar_on_a_terminal_and_lines_otherwise(tmp_path: Path):
    term = _Terminal()
    rep = Reporter(tmp_path / "t", run_id="t", dataset_id="d", max_steps=4, stream=term)
    (tmp_path / "t").mkdir()
    rep.open(0)
    rep.steps_done(2)
    rep.train_step(2, 0, {"total": 0.5}, 2e-4, 10.0, 8)
    rep.validation(_validation(2, 0.4))
    rep.close()
    shown = term.getvalue()
    assert "\r" in shown and "2/4" in shown and "loss=0.5000" in shown  # tqdm redraws one line
    assert "validation step 2: loss 0.4000" in shown

    plain = io.StringIO()
    rep = Reporter(tmp_path / "p", run_id="p", dataset_id="d", max_steps=4, stream=plain)
    (tmp_path / "p").mkdir()
    rep.open(0)
    rep.steps_done(2)
    rep.train_step(2, 0, {"total": 0.5}, 2e-4, 10.0, 8)
    rep.close()
    assert "\r" not in plain.getvalue()
    assert "step 2/4 epoch 0 loss 0.5000" in plain.getvalue()


def test_curves_are_pngs_and_a_resume_keeps_earlier_history(tmp_path: Path):
    rep = Reporter(tmp_path, run_id="c", dataset_id="d", max_steps=10, stream=io.StringIO())
    rep.open(0)
    for step in (2, 4, 6):
        rep.train_step(step, 0, {"total": 1.0 / step}, 2e-4, 10.0, 8)
        rep.validation(_validation(step, 1.0 / step))
    rep.close()
    resumed = Reporter(tmp_path, run_id="c", dataset_id="d", max_steps=10, stream=io.StringIO())
    resumed.open(4)  # the checkpoint was at step 4: what came after it is redone
    assert [v["step"] for v in resumed.val_history] == [2, 4]
    assert [h["step"] for h in resumed.train_history] == [2, 4]
    assert len((tmp_path / "validation.jsonl").read_text().splitlines()) == 2
    assert len((tmp_path / "curves" / "train_history.jsonl").read_text().splitlines()) == 2
    names = resumed.write_curves()
    resumed.close()
    assert names == ["curves/loss.png", "curves/mae.png"]
    assert all((tmp_path / n).read_bytes()[:4] == b"\x89PNG" for n in names)


def test_termination_log_is_cut_to_4_kib(tmp_path: Path):
    big = {"step": 1, "checkpoint_uri": "training/x/checkpoints/step-000000001.pt",
           "validation": {"loss": 0.1, "mae_per_branch": {f"b{i}": {"steer": 0.123456789} for i in range(400)}}}
    path = tmp_path / "termination-log"
    write_termination_log(path, big)
    doc = json.loads(path.read_bytes())
    assert len(path.read_bytes()) <= 4096 and "mae_per_branch" not in doc["validation"]
    assert doc["checkpoint_uri"] == big["checkpoint_uri"]
