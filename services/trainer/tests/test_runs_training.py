"""The trainer API and `sdctl train` with the real training process (`python -m sd_trainer.train`) on a
tiny dataset version: a run to SUCCEEDED with its checkpoint, a cancelled running run, a service
stopped by SIGTERM whose run resumes to the same step count, and the foreground command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from scale_diffusion.trainer.v1 import trainer_pb2 as pb
from scale_diffusion.trainer.v1 import trainer_pb2_grpc

from tests.ports import free_port
from trainer_service import FINAL, trainer_service

SDCTL = str(Path(sys.executable).parent / "sdctl")

# Each test starts real training processes (torch imports, checkpoints): slow on a shared 2-core machine.
pytestmark = pytest.mark.timeout(900)


def tiny(max_steps: int, **extra) -> str:
    """Overrides for a run that takes seconds on a CPU."""
    return json.dumps({"model": {"backbone": "resnet18", "base_width": 8}, "max_steps": max_steps,
                       "data": {"batch_size": 8, "num_workers": 0, "augment": {"enabled": False}},
                       "checkpoint_every_steps": 2,
                       "log_every_steps": 1, "val_every_steps": 0, **extra})


def child_env(tmp_path: Path) -> dict[str, str]:
    """The training process's store in the test's folder; no metrics port of its own."""
    return {**os.environ, "SD_STORE_BACKEND": "local", "SD_STORE_ROOT": str(tmp_path / "store"),
            "SD_TRAINER_RUN_METRICS_PORT": "-1"}


async def test_a_real_run_goes_to_succeeded_with_its_checkpoint(tmp_path, tiny_version):
    state = tmp_path / "trainer"
    async with trainer_service(state, tiny_version.root, env=child_env(tmp_path)) as t:
        run = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(
            dataset_id=tiny_version.dataset_id, config_json=tiny(4)))).run
        done = await t.wait(run.run_id, timeout_s=240)
        log = (state / "training" / run.run_id / "train.log").read_text()
        assert done.state == pb.RUN_STATE_SUCCEEDED, (done, log[-3000:])
        assert done.step == 4 and done.val_loss > 0 and done.train_loss > 0
        assert done.checkpoint_uri.endswith("step-000000004.pt"), done.checkpoint_uri
        out = state / "training" / run.run_id
        result = json.loads((out / "result.json").read_text())
        assert result["checkpoint_uri"] == done.checkpoint_uri and result["step"] == 4
        assert (out / "checkpoints" / "step-000000004.pt").is_file()


async def test_cancel_stops_a_real_running_training_after_its_checkpoint(tmp_path, tiny_version):
    state = tmp_path / "trainer"
    async with trainer_service(state, tiny_version.root, env=child_env(tmp_path), stop_grace_s=60) as t:
        run_id = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(
            dataset_id=tiny_version.dataset_id, config_json=tiny(100_000)))).run.run_id
        await t.wait_step(run_id, 1, timeout_s=240)
        pid = json.loads((state / "runs" / f"{run_id}.json").read_text())["pid"]
        cancelled = (await t.stub.CancelTrainingRun(pb.CancelTrainingRunRequest(run_id=run_id))).run
        assert cancelled.state == pb.RUN_STATE_CANCELLED and 1 <= cancelled.step < 100_000
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
        record = json.loads((state / "runs" / f"{run_id}.json").read_text())
        assert record["exit_code"] == 143  # it stopped on SIGTERM after a checkpoint, not by SIGKILL
        latest = json.loads((state / "training" / run_id / "checkpoints" / "latest.json").read_text())
        assert latest["step"] >= 1


def _wait_serving(proc: subprocess.Popen, target: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as ch:
        while True:
            try:
                if health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.1)


def _service(tmp_path: Path, tiny_version, port: int) -> subprocess.Popen:
    env = {**child_env(tmp_path), "SD_TRAINER_GRPC_PORT": str(port), "SD_TRAINER_METRICS_PORT": "0",
           "SD_TRAINER_STATE_DIR": str(tmp_path / "trainer"), "SD_TRAINER_DATASET_ROOT": str(tiny_version.root),
           "SD_TRAINER_LOG_FORMAT": "json", "SD_TRAINER_STOP_GRACE_S": "60"}
    proc = subprocess.Popen([sys.executable, "-m", "sd_trainer"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_serving(proc, f"127.0.0.1:{port}")
    return proc


def _get(target: str, run_id: str) -> pb.TrainingRun:
    with grpc.insecure_channel(target) as ch:
        return trainer_pb2_grpc.TrainerServiceStub(ch).GetTrainingRun(
            pb.GetTrainingRunRequest(run_id=run_id), timeout=30).run


def test_sigterm_of_the_service_stops_its_run_cleanly_and_the_next_service_resumes_it(tmp_path, tiny_version):
    port = free_port()
    target = f"127.0.0.1:{port}"
    proc = _service(tmp_path, tiny_version, port)
    try:
        with grpc.insecure_channel(target) as ch:
            run_id = trainer_pb2_grpc.TrainerServiceStub(ch).StartTrainingRun(pb.StartTrainingRunRequest(
                dataset_id=tiny_version.dataset_id, config_json=tiny(12)), timeout=30).run.run_id
        deadline = time.monotonic() + 240
        while (run := _get(target, run_id)).step < 2:
            assert run.state not in FINAL and time.monotonic() < deadline, run
            time.sleep(0.1)
        child = json.loads((tmp_path / "trainer" / "runs" / f"{run_id}.json").read_text())["pid"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        assert not Path(f"/proc/{child}").exists()
        record = json.loads((tmp_path / "trainer" / "runs" / f"{run_id}.json").read_text())
        assert record["state"] == "PENDING" and record["exit_code"] == 143, record
        assert any(json.loads(line).get("event") == "run interrupted by shutdown"
                   and json.loads(line).get("run_id") == run_id for line in out.splitlines() if line.startswith("{"))
        stopped_at = record["step"]
        assert 2 <= stopped_at < 12
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc = _service(tmp_path, tiny_version, port)
    try:
        deadline = time.monotonic() + 240
        while (run := _get(target, run_id)).state not in FINAL:
            assert time.monotonic() < deadline, run
            time.sleep(0.2)
        assert run.state == pb.RUN_STATE_SUCCEEDED and run.step == 12 and run.checkpoint_uri, run
        record = json.loads((tmp_path / "trainer" / "runs" / f"{run_id}.json").read_text())
        assert record["launches"] == 2
        progress = json.loads((tmp_path / "trainer" / "training" / run_id / "progress.json").read_text())
        assert progress["resumed_from_step"] == stopped_at  # from the checkpoint SIGTERM saved, not from 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def run_in_terminal(argv: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """Runs a command with a pseudo-terminal as its stdin, stdout and stderr, as a person's shell would."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 24 rows, 120 columns
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_sdctl_train_trains_in_the_foreground_with_a_bar_and_says_where_the_results_are(tmp_path, tiny_version):
    out_dir = tmp_path / "fg"
    code, screen = run_in_terminal(
        [SDCTL, "train", "--dataset", tiny_version.dataset_id, "--dataset-root", str(tiny_version.root),
         "--config-json", tiny(3), "--out", str(out_dir), "--run-id", "fg-run"], child_env(tmp_path), 240)
    assert code == 0, screen[-3000:]
    assert "training run fg-run" in screen
    assert "3/3" in screen and "%|" in screen, screen[-3000:]  # the training process's tqdm bar, in the terminal
    assert "run fg-run finished at step 3" in screen and "step-000000003.pt" in screen
    assert f"curves       {out_dir / 'curves'}/*.png" in screen
    assert list((out_dir / "curves").glob("*.png"))
    assert list((out_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_sdctl_train_json_prints_only_its_summary_on_stdout(tmp_path, tiny_version):
    out_dir = tmp_path / "fg-json"
    run = subprocess.run([SDCTL, "train", "--dataset", tiny_version.dataset_id, "--dataset-root", str(tiny_version.root),
                          "--config-json", tiny(2), "--out", str(out_dir), "--run-id", "fg-json", "--json"],
                         env=child_env(tmp_path), capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)  # one document: the training process's own result line went to stderr
    assert summary["run_id"] == "fg-json" and summary["checkpoint_uri"].endswith("step-000000002.pt")
    assert '"step": 2' in run.stderr
