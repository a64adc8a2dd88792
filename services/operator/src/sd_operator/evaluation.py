"""Evaluation: one checkpoint driven through a CARLA benchmark, run as Jobs ``<evaluation>-<attempt>``.

The checkpoint is ``spec.checkpointUri``, or the one ``spec.trainingRun`` produced: the Evaluation waits
(Pending, reason WaitingForTrainingRun) until that run has succeeded, and fails if the run failed. The
Job's contents (the evaluator's command and its scores) come with the evaluator; this module runs it the
same way TrainingRuns run (lifecycle.py).
"""

from __future__ import annotations

from typing import Any

import kopf

from sd_operator import indices, lifecycle
from sd_operator.context import FINISHED, JOBS_CREATED, OperatorContext
from sd_operator.jobs import EVALUATOR_CONTAINER, evaluation_job
from sd_operator.kube import ChildConflict
from sd_operator.resources import (
    CANCELLED,
    EVALUATIONS,
    FAILED,
    GROUP,
    MAX_OWNER_NAME,
    PENDING,
    SUCCEEDED,
    TERMINAL,
    VERSION,
)

KIND = "Evaluation"


def checkpoint_of(spec: dict, namespace: str, runs: kopf.Index | dict) -> tuple[str | None, str, str]:
    """(checkpoint URI or None, reason, message): the URI to evaluate, or why there is none yet."""
    if spec.get("checkpointUri"):
        return spec["checkpointUri"], "", ""
    run_name = spec.get("trainingRun", "")
    found = list(runs.get((namespace, run_name), []))
    if not found:
        return None, "WaitingForTrainingRun", f"TrainingRun {run_name} does not exist (yet)"
    run = found[0]
    if run.get("phase") == SUCCEEDED and run.get("checkpointUri"):
        return run["checkpointUri"], "", ""
    if run.get("phase") in (FAILED, CANCELLED) or (run.get("phase") == SUCCEEDED):
        return None, "TrainingRunFailed", (f"TrainingRun {run_name} is {run.get('phase')} without a checkpoint: "
                                           f"{run.get('message', '')}")
    return None, "WaitingForTrainingRun", f"TrainingRun {run_name} is {run.get('phase') or 'new'}"


async def reconcile(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, namespace: str, name: str,
                    patch: kopf.Patch, memo: OperatorContext, owned_jobs: kopf.Index, owned_pods: kopf.Index,
                    training_runs: kopf.Index, **_: Any) -> None:
    """Waits for the checkpoint, then runs and mirrors the evaluation Job (create handler and timer)."""
    spec_d, status_d = dict(spec), dict(status)
    if status_d.get("phase") in TERMINAL:
        return
    now = memo.now()
    conds = status_d.get("conditions") or []
    if len(name) > MAX_OWNER_NAME:
        problem = f"the name is {len(name)} characters; at most {MAX_OWNER_NAME}"
        patch.status.update({"phase": FAILED, "message": problem, "completionTime": lifecycle.rfc3339(now),
                             "conditions": lifecycle.set_condition(conds, "Failed", True, "InvalidSpec", problem, now)})
        FINISHED.labels(KIND, FAILED).inc()
        return
    uri = status_d.get("checkpointUri")
    if not uri:
        uri, reason, message = checkpoint_of(spec_d, namespace, training_runs)
        if uri is None:
            failed = reason == "TrainingRunFailed" or spec_d.get("cancel")
            phase = FAILED if failed else PENDING
            if spec_d.get("cancel"):
                phase, reason, message = CANCELLED, "Cancelled", "spec.cancel is true"
            new = {"phase": phase, "message": message,
                   "conditions": lifecycle.set_condition(conds, "Failed" if failed else "Created", bool(failed),
                                                         reason, message, now)}
            if failed:
                new["completionTime"] = lifecycle.rfc3339(now)
                FINISHED.labels(KIND, phase).inc()
            patch.status.update({k: v for k, v in new.items() if status_d.get(k) != v})
            return
        patch.status["checkpointUri"] = uri
    attempt = int(status_d.get("retryCount") or 0)
    want = lifecycle.job_name(name, attempt)
    job = next((j for j in indices.children(owned_jobs, namespace, KIND, name)
                if j["metadata"]["name"] == want), None)
    pods = lifecycle.attempt_pods(indices.children(owned_pods, namespace, KIND, name), attempt)
    step = lifecycle.reconcile(name, spec_d, status_d, job, pods, now=now, policy=memo.policy,
                               container=EVALUATOR_CONTAINER, generation=body["metadata"].get("generation"))
    if step.create_attempt is not None:
        child = evaluation_job(name, spec_d, uri, step.create_attempt, memo.settings)
        kopf.adopt(child, owner=body)
        try:
            _, created = await memo.kube.ensure(child)
        except ChildConflict as exc:
            raise kopf.TemporaryError(str(exc), delay=10) from exc
        if created:
            JOBS_CREATED.labels(KIND).inc()
    if step.delete_job:
        await memo.kube.delete_job(namespace, step.delete_job)
    patch.status.update({k: v for k, v in step.status.items() if status_d.get(k) != v})
    if step.finished:
        FINISHED.labels(KIND, step.finished).inc()


def _not_finished(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in TERMINAL


def register(registry: kopf.OperatorRegistry, interval_s: float) -> None:
    """Adds the Evaluation handlers to a registry."""
    kopf.timer(GROUP, VERSION, EVALUATIONS, registry=registry, id="reconcile", interval=interval_s,
               when=_not_finished)(reconcile)
