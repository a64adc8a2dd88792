"""The life of a run, as a pure function of its spec, status, Job and pods (lifecycle.reconcile)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sd_operator.lifecycle import Policy, job_name, reconcile, rfc3339

from tests.kube_api import merge_patch, validate_custom

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
POLICY = Policy(retry_backoff_s=30, retry_backoff_max_s=600)
DATASET = "ab" * 32
SPEC = {"datasetVersion": DATASET, "backoffLimit": 2, "pendingTimeoutSeconds": 300}


def run(status=None, spec=None):
    return {"apiVersion": "scalediffusion.io/v1alpha1", "kind": "TrainingRun",
            "metadata": {"name": "r1", "namespace": "ml"}, "spec": spec or SPEC, "status": status or {}}


def job(attempt=0, conditions=(), created=T0, completion=None):
    status = {"conditions": [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions]}
    if completion:
        status["completionTime"] = rfc3339(completion)
    return {"metadata": {"name": job_name("r1", attempt), "creationTimestamp": rfc3339(created)}, "status": status}


def pod(phase, *, exit_code=None, message=None, waiting=None, unschedulable=None, attempt=0):
    st = {"phase": phase, "conditions": [], "containerStatuses": []}
    if exit_code is not None:
        st["containerStatuses"].append({"name": "trainer", "state": {"terminated": {
            "exitCode": exit_code, "message": message or ""}}})
    if waiting:
        st["containerStatuses"].append({"name": "trainer", "state": {"waiting": {
            "reason": waiting[0], "message": waiting[1]}}})
    if unschedulable:
        st["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": unschedulable})
    return {"metadata": {"labels": {"scalediffusion.io/attempt": str(attempt)}}, "status": st}


def step(status, job_=None, pods=(), *, now=T0, spec=None):
    out = reconcile("r1", spec or SPEC, status, job_, list(pods), now=now, policy=POLICY, container="trainer",
                    generation=3)
    # Every status the operator writes, applied as the API server would, fits the CRD.
    validate_custom(merge_patch(run(status, spec), {"status": out.status}))
    return out


def applied(status, out):
    return merge_patch({"s": status}, {"s": out.status})["s"]


def test_a_new_run_creates_attempt_zero_and_is_pending_with_created():
    out = step({})
    assert out.create_attempt == 0 and out.delete_job is None
    assert out.status["phase"] == "Pending" and out.status["jobName"] == "r1-0"
    assert out.status["retryCount"] == 0 and out.status["observedGeneration"] == 3
    created = next(c for c in out.status["conditions"] if c["type"] == "Created")
    assert created["status"] == "True" and created["reason"] == "JobCreated"


def test_running_twice_on_the_same_state_changes_nothing():
    s1 = applied({}, step({}))
    again = step(s1, now=T0 + timedelta(seconds=5))
    assert applied(s1, again) == s1  # no new time stamps, same conditions
    running = applied(s1, step(s1, job(), [pod("Running")], now=T0 + timedelta(seconds=20)))
    assert running["phase"] == "Running" and running["startTime"] == rfc3339(T0 + timedelta(seconds=20))
    later = step(running, job(), [pod("Running")], now=T0 + timedelta(seconds=90))
    assert applied(running, later) == running


def test_success_reads_checkpoint_step_and_metrics_from_the_termination_message():
    s = applied({}, step({}))
    s = applied(s, step(s, job(), [pod("Running")], now=T0 + timedelta(seconds=10)))
    msg = '{"step": 400, "checkpoint_uri": "s3://b/training/r1/checkpoints/step-000000400.pt", ' \
          '"validation": {"mae": {"steer": 0.1, "throttle": 0.2, "brake": 0.3}, "speed_mae_mps": 0.5}}'
    out = step(s, job(conditions=[("Complete", "", "")], completion=T0 + timedelta(seconds=60)),
               [pod("Succeeded", exit_code=0, message=msg)], now=T0 + timedelta(seconds=70))
    st = applied(s, out)
    assert out.finished == "Succeeded" and st["phase"] == "Succeeded"
    assert st["checkpointUri"].endswith("step-000000400.pt") and st["step"] == 400
    assert st["metrics"]["speed_mae_mps"] == 0.5 and st["valMae"] == 0.2
    assert st["completionTime"] == rfc3339(T0 + timedelta(seconds=60))
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"Created": "True", "Running": "False", "Succeeded": "True", "Failed": "False"}
    assert step(st, job(conditions=[("Complete", "", "")]), []).status == {}  # finished: nothing more


def test_a_failure_is_retried_with_backoff_up_to_the_limit_then_fails():
    s = applied({}, step({}))
    now = T0
    for attempt in range(3):
        failed = job(attempt, conditions=[("Failed", "BackoffLimitExceeded", "Job has reached the backoff limit")],
                     created=now)
        out = step(s, failed, [pod("Failed", exit_code=1, attempt=attempt)], now=now + timedelta(seconds=30))
        s = applied(s, out)
        if attempt < 2:
            assert s["phase"] == "Pending" and s["retryCount"] == attempt + 1
            assert s["jobName"] == f"r1-{attempt + 1}" and "exit code 1" in s["message"]
            due = now + timedelta(seconds=30 + 30 * 2**attempt)
            assert s["nextAttemptTime"] == rfc3339(due)
            # Before the backoff has passed nothing happens; after it, the next Job is created.
            assert step(s, None, now=due - timedelta(seconds=1)).create_attempt is None
            out = step(s, None, now=due)
            assert out.create_attempt == attempt + 1
            s = applied(s, out)
            assert "nextAttemptTime" not in s
            now = due
    assert s["phase"] == "Failed" and s["retryCount"] == 2
    failed = next(c for c in s["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "BackoffLimitExceeded"
    assert "3 attempt(s) failed" in failed["message"]


def test_exit_code_two_is_not_retried():
    s = applied({}, step({}))
    out = step(s, job(conditions=[("Failed", "PodFailurePolicy", "Container trainer exited with 2")]),
               [pod("Failed", exit_code=2)])
    st = applied(s, out)
    assert st["phase"] == "Failed" and st["retryCount"] == 0 and out.create_attempt is None
    assert next(c for c in st["conditions"] if c["type"] == "Failed")["reason"] == "InvalidInput"


def test_pending_past_the_timeout_fails_with_the_schedulers_reason_and_deletes_the_job():
    s = applied({}, step({}))
    stuck = [pod("Pending", unschedulable="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")]
    within = step(s, job(), stuck, now=T0 + timedelta(seconds=299))
    assert within.status["phase"] == "Pending" and within.delete_job is None
    running = next(c for c in within.status["conditions"] if c["type"] == "Running")
    assert running["reason"] == "Unschedulable" and "Insufficient nvidia.com/gpu" in running["message"]
    out = step(applied(s, within), job(), stuck, now=T0 + timedelta(seconds=301))
    st = applied(s, out)
    assert st["phase"] == "Failed" and out.delete_job == "r1-0" and out.create_attempt is None
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "Unschedulable" and "did not start within 300s" in failed["message"]


def test_an_image_that_cannot_be_pulled_is_named_at_the_timeout():
    s = applied({}, step({}))
    out = step(s, job(), [pod("Pending", waiting=("ImagePullBackOff", 'Back-off pulling image "x:1"'))],
               now=T0 + timedelta(seconds=400))
    failed = next(c for c in out.status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ImagePullBackOff" and "x:1" in failed["message"]


def test_cancel_deletes_the_job_and_ends_cancelled():
    s = applied({}, step({}))
    out = step(s, job(), [pod("Running")], spec={**SPEC, "cancel": True})
    st = applied(s, out)
    assert st["phase"] == "Cancelled" and out.delete_job == "r1-0" and out.finished == "Cancelled"
