"""The whole operator (kopf's watches, indices, handlers and timers, the Kubernetes client) run by
kopf.testing.KopfRunner against kmock, a Kubernetes API emulator on loopback.

kmock stores and serves objects and watch events; it has no controllers. The tests therefore write what
the Job controller, the scheduler and the kubelet would: pods with their phases and exit codes, Job
conditions, creation timestamps. Time for backoffs and pending timeouts is a settable clock, so a loaded
machine cannot turn a pass into a fail.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import kubernetes
import pytest
from kopf.testing import KopfRunner
from sd_operator import trainingrun
from sd_operator.context import OperatorContext
from sd_operator.kube import Kube
from sd_operator.lifecycle import rfc3339
from sd_operator.runtime import build_registry, kopf_settings
from sd_operator.settings import OperatorSettings

from tests.kube_api import ApiServer, merge_patch, validate_custom, validate_kubernetes

pytestmark = [pytest.mark.timeout(90), pytest.mark.kmock(cls=ApiServer)]

NS = "ml"
DATASET = "cd" * 32
RUNS = f"/apis/scalediffusion.io/v1alpha1/namespaces/{NS}/trainingruns"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
PODS = f"/api/v1/namespaces/{NS}/pods"
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """The operator's clock, moved by the test."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


def operator(url: str, clock: Clock, **overrides: Any) -> KopfRunner:
    """The operator's own registry and settings, logged in to kmock, with a fast timer."""
    settings = OperatorSettings(**{"reconcile_interval_s": 0.2, "retry_backoff_s": 30, "namespaces": NS,
                                   "trainer_config_map": "sd-trainer", **overrides})
    registry = build_registry(settings)
    cfg = kubernetes.client.Configuration(host=url, api_key={"authorization": "Bearer test"})

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:  # test only: kmock accepts any token
        return kopf.ConnectionInfo(server=url, scheme="Bearer", token="test")

    @kopf.on.startup(registry=registry)
    def context(memo: kopf.Memo, **_: Any) -> None:
        ctx = OperatorContext(settings, Kube(cfg), now=clock)
        memo.settings, memo.kube, memo.now, memo.policy = ctx.settings, ctx.kube, ctx.now, ctx.policy

    ks = kopf_settings()
    ks.scanning.disabled = True
    ks.watching.connect_timeout = 5
    ks.watching.server_timeout = 10
    return KopfRunner(["run", "--standalone", "--namespace", NS], registry=registry, settings=ks)


async def call(cluster, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    async with cluster.request(method, path, json=body,
                               headers={"Content-Type": "application/merge-patch+json"}
                               if method == "PATCH" else None) as resp:
        return resp.status, await resp.json()


async def eventually(probe, what: str, timeout_s: float = 20.0):
    """Polls ``probe`` (async, returns a value or None) until it gives a value."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run_body(name: str, **spec: Any) -> dict:
    return {"apiVersion": "scalediffusion.io/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1",
                         "creationTimestamp": rfc3339(T0)},
            "spec": {"datasetVersion": DATASET, "backoffLimit": 2, "pendingTimeoutSeconds": 600, **spec}}


async def run_status(cluster, name: str) -> dict:
    code, body = await call(cluster, "GET", f"{RUNS}/{name}")
    assert code == 200, body
    validate_custom(body)
    return body.get("status") or {}


async def jobs_of(cluster, run: str) -> list[dict]:
    _, body = await call(cluster, "GET", JOBS)
    return [j for j in body["items"] if j["metadata"]["labels"].get("scalediffusion.io/owner-name") == run]


async def job_appears(cluster, name: str, timeout_s: float = 20.0) -> dict:
    async def probe():
        code, body = await call(cluster, "GET", f"{JOBS}/{name}")
        return body if code == 200 else None
    job = await eventually(probe, f"Job {name}", timeout_s)
    # What the API server would add at creation (kmock stores bodies as sent).
    await call(cluster, "PATCH", f"{JOBS}/{name}", {"metadata": {"creationTimestamp": rfc3339(T0)}})
    return job


async def add_pod(cluster, job: dict, phase: str, container_state: dict | None = None,
                  conditions: list | None = None) -> str:
    """A pod as the Job controller creates it and the kubelet reports it."""
    labels = job["spec"]["template"]["metadata"]["labels"]
    name = f"{job['metadata']['name']}-abcde"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": NS, "labels": {**labels, "job-name": job["metadata"]["name"]}},
           "spec": job["spec"]["template"]["spec"],
           "status": {"phase": phase, "conditions": conditions or [],
                      "containerStatuses": [{"name": "trainer", "state": container_state}] if container_state else []}}
    code, _ = await call(cluster, "GET", f"{PODS}/{name}")
    if code == 200:
        await call(cluster, "PATCH", f"{PODS}/{name}/status", {"status": pod["status"]})
    else:
        code, body = await call(cluster, "POST", PODS, pod)
        assert code in (200, 201), body
    return name


async def finish_job(cluster, job: dict, *, ok: bool, exit_code: int = 0, message: str = "") -> None:
    await add_pod(cluster, job, "Succeeded" if ok else "Failed",
                  {"terminated": {"exitCode": exit_code, "message": message, "reason": "Completed" if ok else "Error"}})
    cond = ({"type": "Complete", "status": "True"} if ok else
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"})
    status = {"conditions": [cond], **({"completionTime": rfc3339(T0 + timedelta(minutes=5))} if ok else {})}
    await call(cluster, "PATCH", f"{JOBS}/{job['metadata']['name']}/status", {"status": status})


async def phase_is(cluster, name: str, phase: str) -> dict:
    async def probe():
        st = await run_status(cluster, name)
        return st if st.get("phase") == phase else None
    return await eventually(probe, f"{name} {phase}")


async def test_apply_creates_one_job_and_the_status_follows_it_to_success(cluster):
    clock = Clock()
    with operator(str(cluster.url).rstrip("/"), clock) as runner:
        code, _ = await call(cluster, "POST", RUNS, run_body("r1"))
        assert code in (200, 201)
        job = await job_appears(cluster, "r1-0")
        validate_kubernetes(job)
        assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-r1"
        st = await phase_is(cluster, "r1", "Pending")
        assert st["jobName"] == "r1-0" and st["retryCount"] == 0
        # Applied twice: the API refuses the second create; nothing new appears.
        code, _ = await call(cluster, "POST", RUNS, run_body("r1"))
        assert code == 409
        await add_pod(cluster, job, "Running", {"running": {}})
        st = await phase_is(cluster, "r1", "Running")
        assert st["startTime"] == rfc3339(T0)
        msg = ('{"step": 120, "checkpoint_uri": "s3://sd/training/r1/checkpoints/step-000000120.pt", '
               '"validation": {"mae": 0.125}}')
        await finish_job(cluster, job, ok=True, message=msg)
        st = await phase_is(cluster, "r1", "Succeeded")
        assert st["checkpointUri"].endswith("step-000000120.pt") and st["step"] == 120 and st["valMae"] == 0.125
        assert {c["type"]: c["status"] for c in st["conditions"]}["Succeeded"] == "True"
        await asyncio.sleep(0.6)  # a few more timer periods: still exactly one Job, status unchanged
        assert [j["metadata"]["name"] for j in await jobs_of(cluster, "r1")] == ["r1-0"]
        assert await run_status(cluster, "r1") == st
        _, body = await call(cluster, "GET", f"{RUNS}/r1")
        assert not body["metadata"].get("finalizers"), "no finalizer may block deletion"
    assert runner.exit_code == 0, runner.output


async def test_a_failure_is_retried_up_to_the_backoff_limit_then_the_run_fails(cluster):
    clock = Clock()
    with operator(str(cluster.url).rstrip("/"), clock, retry_backoff_s=0) as runner:
        await call(cluster, "POST", RUNS, run_body("r2", backoffLimit=1))
        job0 = await job_appears(cluster, "r2-0")
        await finish_job(cluster, job0, ok=False, exit_code=1)
        try:
            job1 = await job_appears(cluster, "r2-1", 5)
        except AssertionError:
            print("STATUS", await run_status(cluster, "r2"))
            raise
        st = await run_status(cluster, "r2")
        assert st["retryCount"] == 1 and st["jobName"] == "r2-1"
        await finish_job(cluster, job1, ok=False, exit_code=137)
        st = await phase_is(cluster, "r2", "Failed")
        failed = next(c for c in st["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "BackoffLimitExceeded" and "exit code 137" in failed["message"]
        await asyncio.sleep(0.6)
        assert sorted(j["metadata"]["name"] for j in await jobs_of(cluster, "r2")) == ["r2-0", "r2-1"]
    assert runner.exit_code == 0, runner.output


async def test_exit_code_two_fails_at_once_without_a_retry(cluster):
    with operator(str(cluster.url).rstrip("/"), Clock(), retry_backoff_s=0) as runner:
        await call(cluster, "POST", RUNS, run_body("r3"))
        job = await job_appears(cluster, "r3-0")
        await finish_job(cluster, job, ok=False, exit_code=2)
        st = await phase_is(cluster, "r3", "Failed")
        assert next(c for c in st["conditions"] if c["type"] == "Failed")["reason"] == "InvalidInput"
        await asyncio.sleep(0.6)
        assert [j["metadata"]["name"] for j in await jobs_of(cluster, "r3")] == ["r3-0"]
    assert runner.exit_code == 0, runner.output


async def test_pending_past_the_timeout_fails_with_the_reason_then_delete_is_not_stuck(cluster):
    clock = Clock()
    with operator(str(cluster.url).rstrip("/"), clock) as runner:
        await call(cluster, "POST", RUNS, run_body("r4", pendingTimeoutSeconds=120))
        job = await job_appears(cluster, "r4-0")
        await add_pod(cluster, job, "Pending", conditions=[{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}])

        async def says_unschedulable():
            st = await run_status(cluster, "r4")
            running = next((c for c in st.get("conditions", []) if c["type"] == "Running"), {})
            return st if running.get("reason") == "Unschedulable" else None
        st = await eventually(says_unschedulable, "the Unschedulable reason")
        assert st["phase"] == "Pending"
        clock.t = T0 + timedelta(seconds=121)
        st = await phase_is(cluster, "r4", "Failed")
        failed = next(c for c in st["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "Unschedulable" and "Insufficient nvidia.com/gpu" in failed["message"]

        async def job_gone():
            code, _ = await call(cluster, "GET", f"{JOBS}/r4-0")
            return code == 404
        await eventually(job_gone, "the stuck Job deleted")
        # Cancel a second run while it runs: its Job is deleted, the phase is Cancelled.
        await call(cluster, "POST", RUNS, run_body("r5"))
        job5 = await job_appears(cluster, "r5-0")
        await add_pod(cluster, job5, "Running", {"running": {}})
        await phase_is(cluster, "r5", "Running")
        await call(cluster, "PATCH", f"{RUNS}/r5", {"spec": {"cancel": True}})
        await phase_is(cluster, "r5", "Cancelled")
        await eventually(lambda: _gone(cluster, f"{JOBS}/r5-0"), "the cancelled Job deleted")
    assert runner.exit_code == 0, runner.output
    # With the operator stopped, deleting a run is not held by a finalizer: it is gone at once.
    code, _ = await call(cluster, "DELETE", f"{RUNS}/r4")
    assert code == 200
    assert await _gone(cluster, f"{RUNS}/r4")


async def _gone(cluster, path: str) -> bool:
    code, _ = await call(cluster, "GET", path)
    return code == 404


async def test_a_dataset_version_policy_creates_its_run_once_and_the_evaluation_waits_for_it(cluster):
    dv = {"apiVersion": "scalediffusion.io/v1alpha1", "kind": "DatasetVersion",
          "metadata": {"name": "ds-cdcdcdcdcdcd", "namespace": NS, "uid": "uid-dv", "generation": 1,
                       "resourceVersion": "1"},
          "spec": {"datasetId": DATASET, "policy": {
              "train": {"enabled": True, "backoffLimit": 0},
              "evaluate": {"enabled": True, "benchmark": "smoke", "carlaImage": "carlasim/carla:0.9.16"}}}}
    validate_custom(dv)
    with operator(str(cluster.url).rstrip("/"), Clock()) as runner:
        await call(cluster, "POST", f"/apis/scalediffusion.io/v1alpha1/namespaces/{NS}/datasetversions", dv)
        job = await job_appears(cluster, "ds-cdcdcdcdcdcd-train-0")
        evals = f"/apis/scalediffusion.io/v1alpha1/namespaces/{NS}/evaluations/ds-cdcdcdcdcdcd-eval"

        async def eval_waiting():
            code, body = await call(cluster, "GET", evals)
            return body if code == 200 and (body.get("status") or {}).get("phase") == "Pending" else None
        ev = await eventually(eval_waiting, "the Evaluation waiting")
        validate_custom(ev)
        assert ev["status"]["conditions"][0]["reason"] == "WaitingForTrainingRun"
        assert ev["metadata"]["ownerReferences"][0]["uid"] == "uid-dv"
        await finish_job(cluster, job, ok=True, message='{"checkpoint_uri": "s3://sd/c.pt"}')

        async def eval_job():
            code, body = await call(cluster, "GET", f"{JOBS}/ds-cdcdcdcdcdcd-eval-0")
            return body if code == 200 else None
        ejob = await eventually(eval_job, "the evaluation Job")
        validate_kubernetes(ejob)
        cmd = ejob["spec"]["template"]["spec"]["containers"][0]["command"]
        assert cmd[cmd.index("--checkpoint") + 1] == "s3://sd/c.pt"
        _, runs = await call(cluster, "GET", RUNS)
        assert [r["metadata"]["name"] for r in runs["items"]] == ["ds-cdcdcdcdcdcd-train"]
    assert runner.exit_code == 0, runner.output


def test_merge_patch_helper_removes_nulls():
    assert merge_patch({"a": 1, "b": {"c": 2}}, {"a": None, "b": {"d": 3}}) == {"b": {"c": 2, "d": 3}}


async def test_the_create_handler_run_twice_makes_one_job_and_a_namesake_of_another_owner_is_waited_for(cluster):
    """The handler called directly, twice, as kopf may call it (its progress write can be lost)."""
    url = str(cluster.url).rstrip("/")
    cfg = kubernetes.client.Configuration(host=url, api_key={"authorization": "Bearer test"})
    settings = OperatorSettings(namespaces=NS)
    ctx = OperatorContext(settings, Kube(cfg), now=Clock())
    body = kopf.Body(run_body("r6"))
    try:
        for _ in range(2):
            patch = kopf.Patch()
            await trainingrun.on_create(body=body, spec=body.spec, status=body.status, patch=patch, memo=ctx)
            assert patch["status"]["jobName"] == "r6-0" and patch["status"]["phase"] == "Pending"
        assert [j["metadata"]["name"] for j in await jobs_of(cluster, "r6")] == ["r6-0"]
        # A new run of the same name (another uid) while the old Job still exists: wait, do not adopt it.
        newer = kopf.Body({**run_body("r6"), "metadata": {**run_body("r6")["metadata"], "uid": "uid-r6-new"}})
        with pytest.raises(kopf.TemporaryError, match="belongs to another owner"):
            await trainingrun.on_create(body=newer, spec=newer.spec, status=newer.status, patch=kopf.Patch(),
                                        memo=ctx)
        (job,) = await jobs_of(cluster, "r6")
        assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-r6"
    finally:
        ctx.kube.close()
