"""The trainer API with SD_TRAINER_LAUNCHER=kubernetes against kmock, a Kubernetes API emulator serving
HTTP on loopback (no API server can run here): runs are TrainingRun resources the operator would run."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc
import kmock
import pytest
from scale_diffusion.trainer.v1 import trainer_pb2 as pb

from sd_trainer.runs import GROUP, PLURAL, VERSION, kubernetes_api
from trainer_service import trainer_service

RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"


@pytest.fixture
async def k8s():
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        emulator.resources[RESOURCE] = kmock.ResourceInfo(kind="TrainingRun", namespaced=True)
        yield emulator, str(server.url).rstrip("/")


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def objects(emulator) -> dict[str, dict]:
    """Every TrainingRun the emulator holds, by namespace/name, as stored."""
    return {f"{ns}/{name}": _plain(emulator.objects[key].last)
            for key in list(emulator.objects) for (_res, ns, name) in [key]}


async def test_runs_are_training_run_resources_read_back_with_the_operators_status(tmp_path, tiny_version, k8s):
    emulator, url = k8s
    async with trainer_service(tmp_path / "trainer", tiny_version.root, launcher="kubernetes",
                               namespace="ml", kube_api_url=url) as t:
        run = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(
            dataset_id=tiny_version.dataset_id, config_json='{"max_steps": 7, "model": {"base_width": 8}}'))).run
        assert run.state == pb.RUN_STATE_PENDING
        stored = objects(emulator)
        assert list(stored) == [f"ml/{run.run_id}"]
        body = stored[f"ml/{run.run_id}"]
        assert body["apiVersion"] == "scalediffusion.io/v1alpha1" and body["kind"] == "TrainingRun"
        assert body["metadata"]["name"] == run.run_id
        assert body["spec"] == {"datasetVersion": tiny_version.dataset_id, "cancel": False,
                                "configOverrides": {"max_steps": 7, "model": {"base_width": 8}}}
        assert not (tmp_path / "trainer").exists()  # nothing runs in the service's own process

        # The operator mirrors its Job into the status; the API reads it back.
        api = kubernetes_api(url)
        await asyncio.to_thread(api.patch_namespaced_custom_object_status, GROUP, VERSION, "ml", PLURAL, run.run_id,
                                {"status": {"phase": "Running", "step": 3, "conditions": [
                                    {"type": "Running", "status": "True", "reason": "JobRunning",
                                     "message": "job " + run.run_id + "-0 has 1 active pod",
                                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
        got = (await t.stub.GetTrainingRun(pb.GetTrainingRunRequest(run_id=run.run_id))).run
        assert (got.state, got.step) == (pb.RUN_STATE_RUNNING, 3) and "JobRunning: job" in got.message

        cancelled = (await t.stub.CancelTrainingRun(pb.CancelTrainingRunRequest(run_id=run.run_id))).run
        assert objects(emulator)[f"ml/{run.run_id}"]["spec"]["cancel"] is True
        assert "cancel requested" in cancelled.message

        await asyncio.to_thread(api.patch_namespaced_custom_object_status, GROUP, VERSION, "ml", PLURAL, run.run_id,
                                {"status": {"phase": "Succeeded", "step": 7, "checkpointUri": "s3://b/ck.pt",
                                            "message": "finished at step 7",
                                            "metrics": {"loss": 0.3, "mae": {"steer": 0.1}}}})
        done = (await t.stub.GetTrainingRun(pb.GetTrainingRunRequest(run_id=run.run_id))).run
        assert (done.state, done.step, done.checkpoint_uri) == (pb.RUN_STATE_SUCCEEDED, 7, "s3://b/ck.pt")
        assert done.val_loss == 0.3 and done.message == "finished at step 7"  # metrics: result.json's validation
        before = objects(emulator)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await t.stub.CancelTrainingRun(pb.CancelTrainingRunRequest(run_id=run.run_id))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert objects(emulator) == before  # a refused cancel patches nothing

        second = (await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(dataset_id=tiny_version.dataset_id))).run
        listed = await t.stub.ListTrainingRuns(pb.ListTrainingRunsRequest(page_size=1))
        rest = await t.stub.ListTrainingRuns(pb.ListTrainingRunsRequest(page_size=1, page_token=listed.next_page_token))
        assert [r.run_id for r in listed.runs] + [r.run_id for r in rest.runs] == [second.run_id, run.run_id]
        assert not rest.next_page_token

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await t.stub.GetTrainingRun(pb.GetTrainingRunRequest(run_id="tr-missing"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "namespace ml" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await t.stub.StartTrainingRun(pb.StartTrainingRunRequest(dataset_id="f" * 64))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(objects(emulator)) == 2  # the refused start created nothing


async def test_an_unreachable_kubernetes_api_is_unavailable(tmp_path, tiny_version):
    from tests.ports import free_port

    async with trainer_service(tmp_path / "trainer", tiny_version.root, launcher="kubernetes",
                               kube_api_url=f"http://127.0.0.1:{free_port()}") as t:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await t.stub.ListTrainingRuns(pb.ListTrainingRunsRequest(), timeout=60)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "Kubernetes API" in err.value.details()


def test_without_any_kubernetes_credentials_the_service_says_what_to_set(tmp_path, monkeypatch):
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="SD_TRAINER_KUBE_API_URL"):
        kubernetes_api("")
