"""The trainer's gRPC API over the subprocess launcher, with a scripted stand-in for the training process
(exit codes, signals, restarts). The real training process runs in test_runs_training.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from scale_diffusion.trainer.v1 import trainer_pb2 as pb

from trainer_service import trainer_service

SCRIPT = Path(__file__).with_name("scripted_training.py")
PROGRAM = (sys.executable, str(SCRIPT))


def scripted(**behaviour) -> dict:
    return {"program": PROGRAM, "env": {**os.environ, "SCRIPTED_TRAINING": json.dumps(behaviour)}}


def launches(state_dir: Path, run_id: str) -> list[dict]:
    path = state_dir / "training" / run_id / "launches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


async def test_bad_requests_name_the_field_and_record_nothing(tmp_path, tiny_version):
    state = tmp_path / "trainer"
    async with trainer_service(state, tiny_version.root, **scripted()) as t:
        cases = [
            (pb.StartTrainingRunRequest(dataset_id="nope"), grpc.StatusCode.INVALID_ARGUMENT, "dataset_id"),
            (pb.StartTrainingRunRequest(dataset_id=tiny_version.dataset_id, config_json='{"optim": {"lr": 1}}'),
             grpc.StatusCode.INVALID_ARGUMENT, "unknown config key 'optim.lr'"),
            (pb.StartTrainingRunRequest(dataset_id=tiny_version.dataset_id, config_json='{"max_steps": 1.5}'),
             grpc.StatusCode.INVALID_ARGUMENT, "'max_steps' must be an integer"),
            (pb.StartTrainingRunRequest(dataset_id="0" * 64), grpc.StatusCode.NOT_FOUND, "has no manifest"),
        ]
        for request, code, text in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await t.stub.StartTrainingRun(request)
            assert err.value.code() == code and text in err.value.details(), err.value.details()
        for call, request in ((t.stub.GetTrainingRun, pb.GetTrainingRunRequest(run_id="tr-nope")),
                              (t.stub.CancelTrainingRun, pb.CancelTrainingRunRequest(run_id="tr-nope"))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND and "tr-nope" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await t.stub.ListTrainingRuns(pb.ListTrainingRunsRequest(page_token="garbage"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in err.value.details()
        assert list((await t.stub.ListTrainingRuns(pb.ListTrainingRunsRequest())).runs) == []
    assert list((state / "runs").iterdir()) == [] and not (state / "training").exists()  # nothing recorded or run


async def test_a_run_goes_from_start_to_succeeded_with_its_progress_and_checkpoint(tmp_path, tiny_version):
    state = tmp_path / "trainer"
    async with trainer_service(state, tiny_version.root, **scripted(steps=4)) as t:
        started = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(
            dataset_id=tiny_version.dataset_id, config_json='{"max_steps": 4}'))).run
        assert started.state in (pb.RUN_STATE_PENDING, pb.RUN_STATE_RUNNING) and started.run_id.startswith("tr-")
        run = await t.wait(started.run_id)
        assert run.state == pb.RUN_STATE_SUCCEEDED, run
        assert run.step == 4 and run.train_loss == 0.25 and run.val_loss == 0.25
        assert run.checkpoint_uri.endswith("/checkpoints/step-000000004.pt")
        (launch,) = launches(state, run.run_id)
        argv = launch["argv"]
        assert argv[argv.index("--run-id") + 1] == run.run_id and argv[argv.index("--dataset") + 1] == tiny_version.dataset_id
        assert json.loads(argv[argv.index("--config-json") + 1]) == {"max_steps": 4}
        assert argv[argv.index("--out") + 1] == str(state / "training" / run.run_id)
        assert argv[argv.index("--dataset-root") + 1] == str(tiny_version.root)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{t.rt.metrics_port}/metrics", timeout=5).read().decode()
        assert 'sd_trainer_runs_started_total{launcher="subprocess"}' in metrics
        assert 'sd_trainer_runs_finished_total{state="SUCCEEDED"}' in metrics
        assert "sd_trainer_runs_running 0.0" in metrics


@pytest.mark.parametrize("behaviour, want", [
    ({"steps": 3, "exit": 2}, "bad configuration or dataset (exit code 2; not retried): dataset version has no "
                              "training segments"),
    ({"steps": 9, "exit_at_step": 2, "exit": 7}, "ended with exit code 7: dying at step 2"),
    ({"steps": 2, "no_result": True}, "exited 0 without writing result.json"),
])
async def test_a_failed_process_fails_the_run_with_the_reason(tmp_path, tiny_version, behaviour, want):
    async with trainer_service(tmp_path / "trainer", tiny_version.root, **scripted(**behaviour)) as t:
        run_id = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(
            dataset_id=tiny_version.dataset_id))).run.run_id
        run = await t.wait(run_id)
        assert run.state == pb.RUN_STATE_FAILED and want in run.message, run.message


async def test_cancel_stops_a_running_process_and_a_finished_run_cannot_be_cancelled(tmp_path, tiny_version):
    state = tmp_path / "trainer"
    async with trainer_service(state, tiny_version.root, **scripted(steps=100000, step_s=0.01)) as t:
        run_id = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(
            dataset_id=tiny_version.dataset_id))).run.run_id
        running = await t.wait(run_id, pb.RUN_STATE_RUNNING)
        await t.wait_step(run_id, 3)
        pid = launches(state, run_id)[0]["pid"]
        assert running.state == pb.RUN_STATE_RUNNING and alive(pid)
        cancelled = (await t.stub.CancelTrainingRun(pb.CancelTrainingRunRequest(run_id=run_id))).run
        assert cancelled.state == pb.RUN_STATE_CANCELLED and cancelled.step >= 3 and not alive(pid)
        assert "SIGTERM at step" in (state / "training" / run_id / "train.log").read_text()  # stopped cleanly
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await t.stub.CancelTrainingRun(pb.CancelTrainingRunRequest(run_id=run_id))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "already cancelled" in err.value.details()
        record = json.loads((state / "runs" / f"{run_id}.json").read_text())
        assert record["state"] == "CANCELLED" and record["cancel_requested"] is True


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, tiny_version):
    async with trainer_service(tmp_path / "trainer", tiny_version.root, stop_grace_s=0.5,
                               **scripted(steps=100000, step_s=0.01, ignore_sigterm=True)) as t:
        run_id = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(
            dataset_id=tiny_version.dataset_id))).run.run_id
        await t.wait(run_id, pb.RUN_STATE_RUNNING)
        await t.wait_step(run_id, 1)
        pid = launches(tmp_path / "trainer", run_id)[0]["pid"]
        cancelled = (await t.stub.CancelTrainingRun(pb.CancelTrainingRunRequest(run_id=run_id))).run
        assert cancelled.state == pb.RUN_STATE_CANCELLED and not alive(pid)
        record = json.loads((tmp_path / "trainer" / "runs" / f"{run_id}.json").read_text())
        assert record["exit_code"] == -signal.SIGKILL


async def test_runs_beyond_the_limit_wait_and_start_in_order_and_list_pages_by_dataset(tmp_path, tiny_version):
    from version_factory import make_version

    other = make_version(tiny_version.root, seed=1)  # a second version in the same store
    async with trainer_service(tmp_path / "trainer", tiny_version.root, max_concurrent_runs=1,
                               **scripted(steps=100000, step_s=0.01)) as t:
        ids = []
        for ds in (tiny_version.dataset_id, other.dataset_id, tiny_version.dataset_id):
            ids.append((await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(dataset_id=ds))).run.run_id)
        first = await t.wait(ids[0], pb.RUN_STATE_RUNNING)
        states = [(await t.stub.GetTrainingRun(pb.GetTrainingRunRequest(run_id=i))).run for i in ids[1:]]
        assert first.state == pb.RUN_STATE_RUNNING
        assert [r.state for r in states] == [pb.RUN_STATE_PENDING] * 2 and "waiting: 1 of 1" in states[0].message

        page1 = await t.stub.ListTrainingRuns(pb.ListTrainingRunsRequest(page_size=2))
        page2 = await t.stub.ListTrainingRuns(pb.ListTrainingRunsRequest(page_size=2,
                                                                         page_token=page1.next_page_token))
        assert [r.run_id for r in page1.runs] + [r.run_id for r in page2.runs] == ids[::-1]
        assert page1.next_page_token and not page2.next_page_token
        mine = await t.stub.ListTrainingRuns(pb.ListTrainingRunsRequest(dataset_id=tiny_version.dataset_id))
        assert [r.run_id for r in mine.runs] == [ids[2], ids[0]]

        # A pending run is cancelled at once; the queue moves on in order when the running one ends.
        assert (await t.stub.CancelTrainingRun(pb.CancelTrainingRunRequest(run_id=ids[1]))).run.state == \
            pb.RUN_STATE_CANCELLED
        await t.stub.CancelTrainingRun(pb.CancelTrainingRunRequest(run_id=ids[0]))
        assert (await t.wait(ids[2], pb.RUN_STATE_RUNNING)).state == pb.RUN_STATE_RUNNING
        assert launches(tmp_path / "trainer", ids[1]) == []  # never launched


async def test_shutdown_stops_running_processes_and_the_next_start_resumes_them(tmp_path, tiny_version):
    state = tmp_path / "trainer"
    async with trainer_service(state, tiny_version.root, **scripted(steps=60, step_s=0.02)) as t:
        run_id = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(
            dataset_id=tiny_version.dataset_id))).run.run_id
        await t.wait(run_id, pb.RUN_STATE_RUNNING)
        await t.wait_step(run_id, 3)
        await t.stop()  # what SIGTERM does to the service
    pid = launches(state, run_id)[0]["pid"]
    assert not alive(pid)
    record = json.loads((state / "runs" / f"{run_id}.json").read_text())
    assert record["state"] == "PENDING" and "stopped by a trainer shutdown" in record["message"]
    stopped_at = record["step"]
    assert 3 <= stopped_at < 60

    async with trainer_service(state, tiny_version.root, **scripted(steps=60, step_s=0.02)) as t:
        run = await t.wait(run_id)
        assert run.state == pb.RUN_STATE_SUCCEEDED and run.step == 60
        assert [r.run_id for r in (await t.stub.ListTrainingRuns(pb.ListTrainingRunsRequest())).runs] == [run_id]
    log = (state / "training" / run_id / "train.log").read_text()
    assert f"training {run_id} from step {stopped_at}" in log  # resumed, not restarted from 0
    assert len(launches(state, run_id)) == 2


async def test_a_run_left_by_a_killed_service_is_stopped_and_resumed_and_fails_after_too_many_resumes(
        tmp_path, tiny_version):
    state = tmp_path / "trainer"
    behaviour = scripted(steps=40, step_s=0.05)
    async with trainer_service(state, tiny_version.root, **behaviour) as t:
        run_id = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(
            dataset_id=tiny_version.dataset_id))).run.run_id
        await t.wait_step(run_id, 2)
        await t.abandon()
    orphan = launches(state, run_id)[0]["pid"]
    assert alive(orphan)  # still training, with nobody watching it

    # The next service stops the orphan (it cannot wait for a process that is not its child) and resumes.
    async with trainer_service(state, tiny_version.root, **behaviour) as t:
        run = await t.wait(run_id)
        assert not alive(orphan)
        assert run.state == pb.RUN_STATE_SUCCEEDED and run.step == 40
        assert len(launches(state, run_id)) == 2
        assert "SIGTERM at step" in (state / "training" / run_id / "train.log").read_text()

    # A run whose process vanished with the service (killed too) resumes up to max_resumes times, then fails.
    async with trainer_service(state, tiny_version.root, max_resumes=1, **scripted(steps=10**6, step_s=0.01)) as t:
        run_id = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(
            dataset_id=tiny_version.dataset_id))).run.run_id
        await t.wait_step(run_id, 1)
        await t.abandon()
    for attempt in (1, 2):
        os.killpg(launches(state, run_id)[-1]["pid"], signal.SIGKILL)
        async with trainer_service(state, tiny_version.root, max_resumes=1,
                                   **scripted(steps=10**6, step_s=0.01)) as t:
            run = (await t.stub.GetTrainingRun(pb.GetTrainingRunRequest(run_id=run_id))).run
            if attempt == 1:
                assert run.state == pb.RUN_STATE_RUNNING and "resum" in run.message, run
                await t.wait_step(run_id, run.step + 1)
                await t.abandon()
            else:
                assert run.state == pb.RUN_STATE_FAILED and "resumed 1 times already" in run.message, run
    assert len(launches(state, run_id)) == 2


async def test_a_program_that_cannot_start_fails_the_run_with_the_reason(tmp_path, tiny_version):
    async with trainer_service(tmp_path / "trainer", tiny_version.root,
                               program=(str(tmp_path / "no-such-python"),)) as t:
        run = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(dataset_id=tiny_version.dataset_id))).run
        assert run.state == pb.RUN_STATE_FAILED and "could not start" in run.message and "no-such-python" in run.message


def test_the_local_stack_keeps_the_trainers_runs_in_its_state_dir(tmp_path):
    from sd_common.cli.services import services_at
    from sd_common.cli.stack import stack_env

    spec = next(s for s in services_at(0) if s.name == "trainer")
    env = stack_env(tmp_path / ".run", 8080, spec, {}, diffusion_port=50054)
    assert env["SD_TRAINER_STATE_DIR"] == str(tmp_path / ".run" / "trainer")
    assert env["SD_STORE_ROOT"] == str(tmp_path / ".run" / "store")  # where ingest writes dataset versions
    assert "SD_TRAINER_LAUNCHER" not in env  # the default: child processes
