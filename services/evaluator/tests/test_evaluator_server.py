"""The evaluator's gRPC API over the subprocess launcher: each evaluation a real `python -m
sd_evaluator.evaluate` process (with the corridor kind registered, corridor.py) — start, progress,
results side by side, cancel, the queue, restarts, and errors mapped to status codes."""

from __future__ import annotations

import asyncio
import json
import os

import corridor
import grpc
import pytest
from scale_diffusion.evaluator.v1 import evaluator_pb2 as pb

from evaluator_service import evaluator_service, process_env

AGENTS = ["model", "autopilot", "constant-throttle"]


@pytest.fixture
def ckpt(tmp_path, monkeypatch):
    corridor.install(monkeypatch)  # the service checks benchmark names against the same tables
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"throttle": 0.05, "camera": {"width": 24, "height": 12}}))
    return str(path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


async def test_bad_requests_name_the_field_and_record_nothing(tmp_path, ckpt):
    state = tmp_path / "evaluator"
    async with evaluator_service(state, tmp_path / "store") as ev:
        cases = [
            (pb.StartEvaluationRequest(checkpoint_uri=ckpt), grpc.StatusCode.INVALID_ARGUMENT, "benchmark is required"),
            (pb.StartEvaluationRequest(checkpoint_uri=ckpt, benchmark="nope"), grpc.StatusCode.INVALID_ARGUMENT,
             "corridor: corridor-2, corridor-3"),
            (pb.StartEvaluationRequest(checkpoint_uri=ckpt, benchmark="corridor-2", agents=["model"]),
             grpc.StatusCode.INVALID_ARGUMENT, "only beside its baselines"),
            (pb.StartEvaluationRequest(benchmark="corridor-2"), grpc.StatusCode.INVALID_ARGUMENT,
             "checkpoint_uri is required"),
            (pb.StartEvaluationRequest(checkpoint_uri=str(tmp_path / "gone.pt"), benchmark="corridor-2"),
             grpc.StatusCode.NOT_FOUND, "gone.pt is neither a file nor an object"),
            (pb.StartEvaluationRequest(checkpoint_uri="training/tr-x/checkpoints/step-1.pt", benchmark="corridor-2"),
             grpc.StatusCode.NOT_FOUND, "training/tr-x"),
        ]
        for request, code, text in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ev.stub.StartEvaluation(request)
            assert err.value.code() == code and text in err.value.details(), err.value.details()
        for call, request in ((ev.stub.GetEvaluation, pb.GetEvaluationRequest(evaluation_id="ev-nope")),
                              (ev.stub.CancelEvaluation, pb.CancelEvaluationRequest(evaluation_id="ev-nope"))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND and "ev-nope" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ev.stub.GetEvaluation(pb.GetEvaluationRequest(evaluation_id="../etc"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "evaluation_id" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ev.stub.ListEvaluations(pb.ListEvaluationsRequest(page_token="garbage"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in err.value.details()
        assert list((await ev.stub.ListEvaluations(pb.ListEvaluationsRequest())).evaluations) == []
    assert list((state / "records").iterdir()) == [] and not (state / "evaluations").exists()  # nothing ran


async def test_an_evaluation_runs_to_the_end_with_every_agents_scores(tmp_path, ckpt):
    state, store = tmp_path / "evaluator", tmp_path / "store"
    async with evaluator_service(state, store) as ev:
        started = (await ev.stub.StartEvaluation(pb.StartEvaluationRequest(checkpoint_uri=ckpt,
                                                                           benchmark="corridor-2"))).evaluation
        assert started.evaluation_id.startswith("ev-") and list(started.agents) == AGENTS
        assert started.state in (pb.EVALUATION_STATE_PENDING, pb.EVALUATION_STATE_RUNNING)
        done = await ev.wait(started.evaluation_id)
        assert done.state == pb.EVALUATION_STATE_SUCCEEDED, done.message
        out = state / "evaluations" / started.evaluation_id
        result = json.loads((out / "result.json").read_text())
        summaries = {s.agent: s for s in done.agents_summary}
        assert list(summaries) == AGENTS
        for agent in AGENTS:
            want = result["scores"]["agents"][agent]
            s = summaries[agent]
            assert (s.driving_score, s.route_completion, s.infraction_penalty, s.km_driven) == pytest.approx(
                (want["driving_score"], want["route_completion"], want["infraction_penalty"], want["km_driven"]))
            assert (s.state, s.routes_completed, s.routes_total) == ("done", 2, 2)
        assert summaries["constant-throttle"].driving_score == 70.0 and summaries["autopilot"].driving_score == 100.0
        # The top-level scores are the model's, never alone: its baselines are in agents_summary.
        assert done.driving_score == summaries["model"].driving_score and done.route_km == summaries["model"].km_driven
        assert done.progress == 1.0 and done.benchmark == "corridor-2" and done.routes == str(out / "routes.xml")
        assert done.report_uri == f"evaluations/{started.evaluation_id}/report.md"
        assert (store / "evaluations" / started.evaluation_id / "report.md").is_file()
        listed = (await ev.stub.ListEvaluations(pb.ListEvaluationsRequest())).evaluations
        assert [e.evaluation_id for e in listed] == [started.evaluation_id]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ev.stub.CancelEvaluation(pb.CancelEvaluationRequest(evaluation_id=started.evaluation_id))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "already succeeded" in err.value.details()


async def test_progress_while_it_runs_then_cancel_stops_the_process(tmp_path, ckpt):
    state, store = tmp_path / "evaluator", tmp_path / "store"
    async with evaluator_service(state, store, env=process_env(store, step_s=0.02)) as ev:
        e = (await ev.stub.StartEvaluation(pb.StartEvaluationRequest(checkpoint_uri=ckpt,
                                                                     benchmark="corridor-2"))).evaluation
        # Wait until the model has driven both routes and the autopilot is driving.
        deadline_polls = 0
        while True:
            running = await ev.get(e.evaluation_id)
            model = next((s for s in running.agents_summary if s.agent == "model"), None)
            if running.current_agent == "autopilot" and model is not None and model.state == "done":
                break
            assert running.state not in (pb.EVALUATION_STATE_SUCCEEDED, pb.EVALUATION_STATE_FAILED), running
            deadline_polls += 1
            assert deadline_polls < 6000
            await asyncio.sleep(0.02)
        assert running.state == pb.EVALUATION_STATE_RUNNING and 0 < running.progress < 1
        assert model.routes_completed == 2 and running.driving_score == model.driving_score > 0
        pid = ev.evaluations.launcher._evaluations[e.evaluation_id].pid
        assert alive(pid)
        cancelled = (await ev.stub.CancelEvaluation(pb.CancelEvaluationRequest(evaluation_id=e.evaluation_id))).evaluation
        assert cancelled.state == pb.EVALUATION_STATE_CANCELLED and "exit code 143" in cancelled.message
        assert not alive(pid)
        out = state / "evaluations" / e.evaluation_id
        assert json.loads((out / "progress.json").read_text())["state"] == "stopped"
        assert not (out / "result.json").exists()
    record = json.loads((state / "records" / f"{e.evaluation_id}.json").read_text())
    assert record["state"] == "CANCELLED" and record["cancel_requested"] is True


async def test_one_at_a_time_the_next_waits_and_a_pending_one_cancels_at_once(tmp_path, ckpt):
    state, store = tmp_path / "evaluator", tmp_path / "store"
    async with evaluator_service(state, store, env=process_env(store, step_s=0.002)) as ev:
        first = (await ev.stub.StartEvaluation(pb.StartEvaluationRequest(checkpoint_uri=ckpt,
                                                                         benchmark="corridor-2"))).evaluation
        second = (await ev.stub.StartEvaluation(pb.StartEvaluationRequest(
            benchmark="corridor-2", agents=["constant-throttle", "autopilot"]))).evaluation
        third = (await ev.stub.StartEvaluation(pb.StartEvaluationRequest(
            benchmark="corridor-2", agents=["constant-throttle"]))).evaluation
        assert second.state == pb.EVALUATION_STATE_PENDING and "waiting: 1 of 1" in second.message
        gone = (await ev.stub.CancelEvaluation(pb.CancelEvaluationRequest(evaluation_id=third.evaluation_id))).evaluation
        assert gone.state == pb.EVALUATION_STATE_CANCELLED and gone.message == "cancelled before it started"
        assert (await ev.wait(first.evaluation_id)).state == pb.EVALUATION_STATE_SUCCEEDED
        done = await ev.wait(second.evaluation_id)
        assert done.state == pb.EVALUATION_STATE_SUCCEEDED and [s.agent for s in done.agents_summary] == \
            ["autopilot", "constant-throttle"]
        assert done.driving_score == 0 and done.checkpoint_uri == ""  # no model: no headline score
        page1 = await ev.stub.ListEvaluations(pb.ListEvaluationsRequest(page_size=2))
        page2 = await ev.stub.ListEvaluations(pb.ListEvaluationsRequest(page_size=2, page_token=page1.next_page_token))
        ids = [e.evaluation_id for e in [*page1.evaluations, *page2.evaluations]]
        assert ids == [third.evaluation_id, second.evaluation_id, first.evaluation_id] and not page2.next_page_token
    assert not (state / "evaluations" / third.evaluation_id).exists()


async def test_a_process_that_fails_is_failed_with_its_reason(tmp_path, ckpt):
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"camera": {"width": 8, "height": 8}}))  # no throttle: the loader refuses it
    state, store = tmp_path / "evaluator", tmp_path / "store"
    async with evaluator_service(state, store) as ev:
        e = (await ev.stub.StartEvaluation(pb.StartEvaluationRequest(checkpoint_uri=str(broken),
                                                                     benchmark="corridor-2"))).evaluation
        done = await ev.wait(e.evaluation_id)
        assert done.state == pb.EVALUATION_STATE_FAILED
        assert "bad input (exit code 2; not retried)" in done.message and "no throttle" in done.message


async def test_an_evaluation_interrupted_by_a_shutdown_starts_again_and_finishes(tmp_path, ckpt):
    state, store = tmp_path / "evaluator", tmp_path / "store"
    async with evaluator_service(state, store, env=process_env(store, step_s=0.02)) as ev:
        e = (await ev.stub.StartEvaluation(pb.StartEvaluationRequest(checkpoint_uri=ckpt,
                                                                     benchmark="corridor-2"))).evaluation
        await ev.wait(e.evaluation_id, pb.EVALUATION_STATE_RUNNING)
    record = json.loads((state / "records" / f"{e.evaluation_id}.json").read_text())
    assert record["state"] == "PENDING" and "evaluator shutdown" in record["message"]
    async with evaluator_service(state, store) as ev:
        done = await ev.wait(e.evaluation_id)
        assert done.state == pb.EVALUATION_STATE_SUCCEEDED and [s.routes_completed for s in done.agents_summary] == \
            [2, 2, 2]
    assert json.loads((state / "records" / f"{e.evaluation_id}.json").read_text())["launches"] == 2


# --- SD_EVALUATOR_LAUNCHER=kubernetes against kmock, a Kubernetes API emulator on loopback (no API server can
# run here): evaluations are Evaluation resources the operator would run as Jobs beside a CARLA server.


@pytest.fixture
async def k8s():
    import kmock

    from sd_evaluator.runs import GROUP, PLURAL, VERSION

    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        emulator.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(kind="Evaluation", namespaced=True)
        yield emulator, str(server.url).rstrip("/")


def _plain(value):
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def objects(emulator) -> dict[str, dict]:
    """Every Evaluation the emulator holds, by namespace/name, as stored."""
    return {f"{ns}/{name}": _plain(emulator.objects[key].last) for key in list(emulator.objects)
            for (_res, ns, name) in [key]}


async def test_evaluations_are_evaluation_resources_read_back_with_the_operators_status(tmp_path, ckpt, k8s):
    from sd_evaluator.runs import GROUP, PLURAL, VERSION, kubernetes_api
    from tests.kube_api import validate_custom

    emulator, url = k8s
    store = tmp_path / "store"
    async with evaluator_service(tmp_path / "evaluator", store, launcher="kubernetes", namespace="ml",
                                 kube_api_url=url, carla_image="carlasim/carla:0.9.16") as ev:
        e = (await ev.stub.StartEvaluation(pb.StartEvaluationRequest(checkpoint_uri=ckpt,
                                                                     benchmark="corridor-2"))).evaluation
        assert e.state == pb.EVALUATION_STATE_PENDING
        body = objects(emulator)[f"ml/{e.evaluation_id}"]
        validate_custom(body)  # it fits the chart's CRD, which the operator reads
        assert body["spec"] == {"checkpointUri": ckpt, "benchmark": "corridor-2", "agents": AGENTS,
                                "carlaImage": "carlasim/carla:0.9.16", "cancel": False}
        assert not (tmp_path / "evaluator").exists()  # nothing runs in the service's own process

        # While it runs, progress comes from the progress.json the process mirrors to the store.
        progress = store / "evaluations" / e.evaluation_id / "progress.json"
        progress.parent.mkdir(parents=True)
        progress.write_text(json.dumps({"state": "running", "agent": "autopilot", "fraction_done": 0.5, "agents": AGENTS,
                                        "per_agent": {"model": {"state": "done", "routes_done": 2, "routes_total": 2,
                                                                "driving_score": 41.5, "km_driven": 0.08}}}))
        api = kubernetes_api(url)
        await asyncio.to_thread(api.patch_namespaced_custom_object_status, GROUP, VERSION, "ml", PLURAL,
                                e.evaluation_id, {"status": {"phase": "Running", "message": "job running"}})
        running = await ev.get(e.evaluation_id)
        assert (running.state, running.progress, running.current_agent) == (pb.EVALUATION_STATE_RUNNING, 0.5, "autopilot")
        assert running.driving_score == 41.5 and running.routes_completed == 2

        # The operator copies result.json's scores (from the termination log) into the status.
        scores = {"driving_score": 41.5, "agents": {
            "model": {"driving_score": 41.5, "route_completion": 60.0, "infraction_penalty": 0.7, "km_driven": 0.08},
            "autopilot": {"driving_score": 100.0, "route_completion": 100.0, "infraction_penalty": 1.0,
                          "km_driven": 0.1},
            "constant-throttle": {"driving_score": 70.0, "route_completion": 100.0, "infraction_penalty": 0.7,
                                  "km_driven": 0.1}}}
        await asyncio.to_thread(api.patch_namespaced_custom_object_status, GROUP, VERSION, "ml", PLURAL,
                                e.evaluation_id, {"status": {"phase": "Succeeded", "scores": scores,
                                                             "message": "Job done"}})
        done = await ev.get(e.evaluation_id)
        assert done.state == pb.EVALUATION_STATE_SUCCEEDED and done.progress == 1.0
        assert {s.agent: s.driving_score for s in done.agents_summary} == {
            "model": 41.5, "autopilot": 100.0, "constant-throttle": 70.0}
        assert done.report_uri == f"evaluations/{e.evaluation_id}/report.md"
        before = objects(emulator)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ev.stub.CancelEvaluation(pb.CancelEvaluationRequest(evaluation_id=e.evaluation_id))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert objects(emulator) == before  # a refused cancel patches nothing

        second = (await ev.stub.StartEvaluation(pb.StartEvaluationRequest(
            benchmark="corridor-2", agents=["autopilot", "constant-throttle"]))).evaluation
        cancelled = (await ev.stub.CancelEvaluation(pb.CancelEvaluationRequest(
            evaluation_id=second.evaluation_id))).evaluation
        assert objects(emulator)[f"ml/{second.evaluation_id}"]["spec"]["cancel"] is True
        assert "cancel requested" in cancelled.message
        listed = (await ev.stub.ListEvaluations(pb.ListEvaluationsRequest())).evaluations
        assert [x.evaluation_id for x in listed] == [second.evaluation_id, e.evaluation_id]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ev.get("ev-missing")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "namespace ml" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ev.stub.StartEvaluation(pb.StartEvaluationRequest(checkpoint_uri=ckpt, benchmark="nope"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(objects(emulator)) == 2  # the refused start created nothing


async def test_an_unreachable_kubernetes_api_is_unavailable(tmp_path, ckpt):
    from tests.ports import free_port

    async with evaluator_service(tmp_path / "evaluator", tmp_path / "store", launcher="kubernetes",
                                 kube_api_url=f"http://127.0.0.1:{free_port()}") as ev:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ev.stub.ListEvaluations(pb.ListEvaluationsRequest(), timeout=60)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "Kubernetes API" in err.value.details()
