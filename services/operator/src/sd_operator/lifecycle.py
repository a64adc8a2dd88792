"""The life of a resource that runs as Jobs (TrainingRun, Evaluation): what its Job and pods say, and the
status and next action that follow. Pure: no Kubernetes client, no kopf; the handlers act on the result.

One attempt is one Job named ``<owner>-<attempt>`` with backoffLimit 0. A failed attempt is retried by a
new Job after a backoff, up to ``spec.backoffLimit`` retries, except when the process said its input is
bad (exit code 2), the Job ran past its deadline, or its pods never started within
``spec.pendingTimeoutSeconds``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sd_operator.resources import ATTEMPT_LABEL, CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, TERMINAL

INVALID_INPUT_EXIT_CODE = 2  # docs/training.md: bad configuration or dataset, never retried
CONDITION_TYPES = ("Created", "Running", "Succeeded", "Failed")
# Waiting reasons of a container that mean the pod will not start by itself.
STUCK_WAITING_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                                   "CreateContainerConfigError", "CreateContainerError"})


def rfc3339(t: datetime) -> str:
    """A time as Kubernetes writes it: UTC, whole seconds, 'Z'."""
    return t.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time from the API (None stays None)."""
    if not value:
        return None
    return datetime.fromisoformat(value)  # Python 3.11 reads the trailing "Z"


def job_name(owner: str, attempt: int) -> str:
    """The deterministic name of an owner's Job for one attempt."""
    return f"{owner}-{attempt}"


def set_condition(conditions: list[dict[str, Any]], type_: str, status: bool, reason: str, message: str,
                  now: datetime) -> list[dict[str, Any]]:
    """The conditions with one set; lastTransitionTime moves only when the status changes."""
    out = [dict(c) for c in conditions if c.get("type") != type_]
    old = next((c for c in conditions if c.get("type") == type_), None)
    value = "True" if status else "False"
    since = old["lastTransitionTime"] if old and old.get("status") == value else rfc3339(now)
    out.append({"type": type_, "status": value, "reason": reason, "message": message[:1024],
                "lastTransitionTime": since})
    return sorted(out, key=lambda c: CONDITION_TYPES.index(c["type"]) if c["type"] in CONDITION_TYPES else 99)


@dataclass(frozen=True)
class Observation:
    """What one attempt's Job and pods say."""

    state: str  # "pending", "running", "succeeded", "failed"
    since: datetime | None = None  # when the Job was created
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    result: dict[str, Any] | None = None  # the termination message of the finished main container


def _container(pod: dict, name: str) -> dict:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((c for c in statuses if c.get("name") == name), {})


def _terminated(pod: dict, name: str) -> dict:
    c = _container(pod, name)
    return (c.get("state") or {}).get("terminated") or (c.get("lastState") or {}).get("terminated") or {}


def read_result(message: str | None) -> dict[str, Any] | None:
    """The JSON a finished container wrote to its termination log, or None when it is not JSON."""
    try:
        doc = json.loads(message or "")
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def summary_mae(metrics: dict[str, Any]) -> float | None:
    """One number for `kubectl get`: ``mae`` (or ``val_mae``) itself, or the mean of its per-control values."""
    value = metrics.get("mae", metrics.get("val_mae"))
    if isinstance(value, dict):
        numbers = [v for v in value.values() if isinstance(v, int | float) and not isinstance(v, bool)]
        value = sum(numbers) / len(numbers) if numbers else None
    return round(float(value), 6) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pending_reason(pods: list[dict], container: str) -> tuple[str, str]:
    """Why the pods have not started: unschedulable, image pull, config error … with Kubernetes' message."""
    if not pods:
        return "NoPod", "the Job has created no pod yet (quota, admission or a controller backlog)"
    for pod in pods:
        status = pod.get("status", {})
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return cond.get("reason") or "Unschedulable", cond.get("message", "")
        for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (c.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") and waiting["reason"] != "PodInitializing":
                return waiting["reason"], f"container {c.get('name')}: {waiting.get('message', waiting['reason'])}"
    return "ContainersStarting", "pods are scheduled; containers are starting"


def observe(job: dict, pods: list[dict], *, container: str, expected_pods: int = 1) -> Observation:
    """Reads the Job's conditions and its pods' states (pods of this attempt only)."""
    status = job.get("status") or {}
    since = parse_time(job.get("metadata", {}).get("creationTimestamp"))
    conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conds:
        results = [read_result(_terminated(p, container).get("message")) for p in pods]
        result = next((r for r in results if r), None)
        return Observation("succeeded", since, "Completed", conds["Complete"].get("message", ""), 0, result)
    failed = conds.get("Failed") or conds.get("FailureTarget")
    if failed:
        codes = [_terminated(p, container).get("exitCode") for p in pods]
        exit_code = next((c for c in codes if c not in (None, 0)), None)
        reason = failed.get("reason") or "Failed"
        message = failed.get("message", "")
        if exit_code is not None:
            message = f"exit code {exit_code}" + (f"; {message}" if message else "")
        return Observation("failed", since, reason, message, exit_code)
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    if len(running) >= expected_pods:
        return Observation("running", since, "PodsRunning", f"{len(running)} pod(s) running")
    reason, message = _pending_reason([p for p in pods if p.get("status", {}).get("phase") == "Pending"] or pods,
                                      container)
    return Observation("pending", since, reason, message)


@dataclass(frozen=True)
class Step:
    """What to write into the resource's status and what to do to the cluster."""

    status: dict[str, Any] = field(default_factory=dict)  # fields of status to set (merge patch)
    create_attempt: int | None = None  # create the Job of this attempt (idempotent)
    delete_job: str | None = None  # delete this Job (cancelled, or stuck pending)
    finished: str | None = None  # the terminal phase reached by this step, for metrics


@dataclass(frozen=True)
class Policy:
    """The operator-wide part of retrying."""

    retry_backoff_s: float = 30.0
    retry_backoff_max_s: float = 600.0

    def delay_s(self, failed_attempt: int) -> float:
        """Wait after the given attempt failed, before the next one."""
        return min(self.retry_backoff_s * 2**failed_attempt, self.retry_backoff_max_s)


def attempt_pods(pods: list[dict], attempt: int) -> list[dict]:
    """The pods of one attempt, among all of an owner's pods."""
    return [p for p in pods if p.get("metadata", {}).get("labels", {}).get(ATTEMPT_LABEL) == str(attempt)]


def reconcile(owner: str, spec: dict, status: dict, job: dict | None, pods: list[dict], *, now: datetime,
              policy: Policy, container: str, generation: int | None = None, expected_pods: int = 1) -> Step:
    """The next status and action of a resource, from its spec, its last status and its current Job.

    ``job`` is the Job of the current attempt (``status.retryCount``, 0 at first) or None when it does
    not exist; ``pods`` are that attempt's pods. Running it twice on the same inputs gives the same
    step; a step whose status equals the current one changes nothing.
    """
    phase = status.get("phase")
    if phase in TERMINAL:
        return Step()
    attempt = int(status.get("retryCount") or 0)
    name = job_name(owner, attempt)
    conditions = list(status.get("conditions") or [])
    base: dict[str, Any] = {"retryCount": attempt, "jobName": name}
    if generation is not None:
        base["observedGeneration"] = generation

    def finish(phase_: str, reason: str, message: str, *, succeeded: bool, extra: dict | None = None,
               delete: bool = False) -> Step:
        conds = set_condition(conditions, "Running", False, reason, message, now)
        conds = set_condition(conds, "Succeeded", succeeded, reason, message, now)
        conds = set_condition(conds, "Failed", not succeeded, reason, message, now)
        st = {**base, "phase": phase_, "conditions": conds, "completionTime": rfc3339(now),
              "message": message, "nextAttemptTime": None, **(extra or {})}
        return Step(st, delete_job=name if delete and job is not None else None, finished=phase_)

    if spec.get("cancel"):
        return finish(CANCELLED, "Cancelled", "spec.cancel is true: the Job was deleted", succeeded=False,
                      delete=True)

    if job is None:
        due = parse_time(status.get("nextAttemptTime"))
        if due is not None and now < due:
            return Step()  # waiting out the backoff; the status already says so
        conds = set_condition(conditions, "Created", True, "JobCreated", f"Job {name} created", now)
        if not any(c["type"] == "Running" for c in conds):
            conds = set_condition(conds, "Running", False, "JobCreated", "waiting for pods", now)
        return Step({**base, "phase": PENDING if phase != RUNNING else RUNNING, "conditions": conds,
                     "nextAttemptTime": None}, create_attempt=attempt)

    obs = observe(job, pods, container=container, expected_pods=expected_pods)
    if obs.state == "succeeded":
        extra: dict[str, Any] = {}
        result = obs.result or {}
        uri = result.get("checkpoint_uri") or result.get("checkpointUri")
        if uri:
            extra["checkpointUri"] = str(uri)
        metrics = result.get("validation") or result.get("metrics")
        if isinstance(metrics, dict):
            extra["metrics"] = metrics
            mae = summary_mae(metrics)
            if mae is not None:
                extra["valMae"] = mae
        step_count = result.get("step") or result.get("final_step")
        if isinstance(step_count, int):
            extra["step"] = step_count
        if isinstance(result.get("scores"), dict):
            extra["scores"] = result["scores"]
        done = parse_time((job.get("status") or {}).get("completionTime")) or now
        st = finish(SUCCEEDED, "Completed", f"Job {name} completed", succeeded=True, extra=extra).status
        return Step({**st, "completionTime": rfc3339(done),
                     "startTime": status.get("startTime") or rfc3339(obs.since or done)}, finished=SUCCEEDED)

    if obs.state == "failed":
        retries_allowed = int(spec.get("backoffLimit", 0))
        why = f"attempt {attempt} ({name}) failed: {obs.reason}" + (f", {obs.message}" if obs.message else "")
        if obs.exit_code == INVALID_INPUT_EXIT_CODE or obs.reason == "PodFailurePolicy":
            return finish(FAILED, "InvalidInput", why + " (bad configuration or dataset: not retried)",
                          succeeded=False)
        if obs.reason == "DeadlineExceeded":
            return finish(FAILED, "DeadlineExceeded", why + " (spec.activeDeadlineSeconds)", succeeded=False)
        if attempt < retries_allowed:
            due = now + timedelta(seconds=policy.delay_s(attempt))
            message = f"{why}; attempt {attempt + 1} of {retries_allowed + 1} starts at {rfc3339(due)}"
            conds = set_condition(conditions, "Running", False, "BackoffBeforeRetry", message, now)
            conds = set_condition(conds, "Failed", False, "Retrying", message, now)
            return Step({**base, "phase": PENDING, "conditions": conds, "retryCount": attempt + 1,
                         "jobName": job_name(owner, attempt + 1), "nextAttemptTime": rfc3339(due),
                         "message": message})
        return finish(FAILED, "BackoffLimitExceeded",
                      f"{why}; {retries_allowed + 1} attempt(s) failed (spec.backoffLimit {retries_allowed})",
                      succeeded=False)

    if obs.state == "running":
        conds = set_condition(conditions, "Running", True, obs.reason, obs.message, now)
        return Step({**base, "phase": RUNNING, "conditions": conds,
                     "startTime": status.get("startTime") or rfc3339(now), "message": obs.message})

    # Pending: scheduled or not, images pulling or not.
    timeout = spec.get("pendingTimeoutSeconds")
    since = obs.since or now
    if timeout and now - since > timedelta(seconds=int(timeout)):
        reason = obs.reason if obs.reason not in ("ContainersStarting", "NoPod") else "PendingTimeout"
        return finish(FAILED, reason, f"pods of {name} did not start within {timeout}s: {obs.message}",
                      succeeded=False, delete=True)
    stuck = obs.reason in STUCK_WAITING_REASONS or obs.reason == "Unschedulable"
    conds = set_condition(conditions, "Running", False, obs.reason, obs.message, now)
    return Step({**base, "phase": PENDING if phase != RUNNING or stuck else RUNNING, "conditions": conds,
                 "message": obs.message})
