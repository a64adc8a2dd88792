"""TrainingRun: one training of CILRS on a dataset version, run as Jobs ``<run>-<attempt>``.

``on_create`` creates the first attempt's Job at once; ``reconcile`` (a timer while the run is not
finished) mirrors the Job into the status, makes the next attempt after a failure, fails a run stuck
pending, and deletes the Job of a cancelled run. No finalizers: a run deleted while the operator is down
goes at once, and its Jobs, pods and Services follow by their owner references.
"""

from __future__ import annotations

from typing import Any

import kopf

from sd_operator import indices, lifecycle
from sd_operator.context import FINISHED, JOBS_CREATED, OperatorContext
from sd_operator.jobs import TRAINER_CONTAINER, rendezvous_service, training_job
from sd_operator.kube import ChildConflict
from sd_operator.resources import FAILED, GROUP, MAX_OWNER_NAME, TERMINAL, TRAINING_RUNS, VERSION

KIND = "TrainingRun"


def _nodes(spec: kopf.Spec | dict) -> int:
    return int((spec.get("resources") or {}).get("nodes", 1))


async def create_attempt(body: kopf.Body | dict, spec: dict, attempt: int, memo: OperatorContext) -> bool:
    """Creates (or adopts) the Job of one attempt and, for several nodes, its headless Service."""
    name = body["metadata"]["name"]
    children = [training_job(name, spec, attempt, memo.settings)]
    if _nodes(spec) > 1:
        children.insert(0, rendezvous_service(name, attempt, memo.settings))
    kopf.adopt(children, owner=body)
    created = False
    try:
        for child in children:
            _, new = await memo.kube.ensure(child)
            created = created or (new and child["kind"] == "Job")
    except ChildConflict as exc:
        # A Job of a deleted run of the same name is still being garbage-collected.
        raise kopf.TemporaryError(str(exc), delay=10) from exc
    if created:
        JOBS_CREATED.labels(KIND).inc()
    return created


def _invalid(name: str, spec: dict) -> str | None:
    if len(name) > MAX_OWNER_NAME:
        return f"the name is {len(name)} characters; at most {MAX_OWNER_NAME} leave room for Job and pod names"
    if not spec.get("datasetVersion"):
        return "spec.datasetVersion is empty"
    return None


async def on_create(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch,
                    memo: OperatorContext, **_: Any) -> None:
    """A new run: its first Job now, Pending with condition Created."""
    await _step(body, dict(spec), dict(status), None, [], patch, memo, first=True)


async def reconcile(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, namespace: str, name: str,
                    patch: kopf.Patch, memo: OperatorContext, owned_jobs: kopf.Index, owned_pods: kopf.Index,
                    **_: Any) -> None:
    """Compares the run with its current Job and acts (timer; also after the operator restarts)."""
    attempt = int(status.get("retryCount") or 0)
    want = lifecycle.job_name(name, attempt)
    job = next((j for j in indices.children(owned_jobs, namespace, KIND, name)
                if j["metadata"]["name"] == want), None)
    pods = lifecycle.attempt_pods(indices.children(owned_pods, namespace, KIND, name), attempt)
    await _step(body, dict(spec), dict(status), job, pods, patch, memo)


async def _step(body: kopf.Body, spec: dict, status: dict, job: dict | None, pods: list[dict],
                patch: kopf.Patch, memo: OperatorContext, first: bool = False) -> None:
    name = body["metadata"]["name"]
    if status.get("phase") in TERMINAL:
        return
    now = memo.now()
    problem = _invalid(name, spec)
    if problem:
        conds = lifecycle.set_condition(status.get("conditions") or [], "Failed", True, "InvalidSpec", problem, now)
        patch.status.update({"phase": FAILED, "conditions": conds, "message": problem,
                             "completionTime": lifecycle.rfc3339(now)})
        FINISHED.labels(KIND, FAILED).inc()
        return
    if first and job is None and status.get("jobName"):
        return  # a re-run of the create handler after the timer already took over
    step = lifecycle.reconcile(name, spec, status, job, pods, now=now, policy=memo.policy,
                               container=TRAINER_CONTAINER, generation=body["metadata"].get("generation"),
                               expected_pods=_nodes(spec))
    if step.create_attempt is not None:
        await create_attempt(body, spec, step.create_attempt, memo)
    if step.delete_job:
        await memo.kube.delete_job(body["metadata"]["namespace"], step.delete_job)
    changed = {k: v for k, v in step.status.items() if status.get(k) != v}
    if changed:
        patch.status.update(changed)
    if step.finished:
        FINISHED.labels(KIND, step.finished).inc()


def _not_finished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in TERMINAL


def register(registry: kopf.OperatorRegistry, interval_s: float) -> None:
    """Adds the TrainingRun handlers to a registry."""
    kopf.on.create(GROUP, VERSION, TRAINING_RUNS, registry=registry, id="create")(on_create)
    kopf.timer(GROUP, VERSION, TRAINING_RUNS, registry=registry, id="reconcile", interval=interval_s,
               when=_not_finished)(reconcile)
