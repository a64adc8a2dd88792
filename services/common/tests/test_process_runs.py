"""sd_common.process_runs: the records, queue, cancel and restart of child-process jobs, page tokens and
the Kubernetes plumbing the trainer and the evaluator share. The jobs here are real child processes
(a short Python script) with a record type of this test's own."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge
from sd_common.process_runs import (
    LauncherWording,
    ProcessLauncher,
    ProcessRecord,
    ResourceLauncher,
    as_number,
    call_custom_objects,
    condition_message,
    custom_objects_api,
    decode_page_token,
    describe_exit,
    failure_reason,
    last_line,
    list_custom_objects,
    page_of,
    process_started,
)

# What the job does is its `mode`: ok (writes result.json), crash (exit 3 after a log line), bad (exit 2
# after writing the reason into progress.json), sleep (until stopped), stubborn (ignores SIGTERM).
JOB = r"""
import json, signal, sys, time
from pathlib import Path
mode, out = sys.argv[1], Path(sys.argv[2])
(out / "progress.json").write_text(json.dumps({"state": "running", "done": 0.5}))
if mode == "ok":
    (out / "result.json").write_text(json.dumps({"done": 1.0}))
elif mode == "crash":
    print("boom: the disk is full", flush=True)
    sys.exit(3)
elif mode == "bad":
    (out / "progress.json").write_text(json.dumps({"state": "failed", "reason": "bad_input",
                                                   "message": "no such route"}))
    sys.exit(2)
elif mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(60)
else:
    print("ready", flush=True)
    time.sleep(60)
"""


class JobState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class JobNotFound(LookupError):
    pass


class JobFinished(Exception):
    pass


class JobInvalid(ValueError):
    pass


class Unavailable(Exception):
    pass


@dataclass
class Job(ProcessRecord):
    job_id: str
    mode: str
    state: JobState = JobState.PENDING
    created_at: str = ""
    updated_at: str = ""
    started_at: str = ""
    finished_at: str = ""
    done: float = 0.0
    message: str = ""
    retries: int = 0

    def loaded(self) -> None:
        self.state = JobState(self.state)

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.created_at, self.job_id)


WORDING = LauncherWording(
    waiting="waiting: {running} of {max_concurrent} busy", not_started="could not start: {exc}",
    cancelled="cancelled ({exit}) in {out}", interrupted="interrupted at {r.done}", succeeded="done at {r.done}",
    no_result="no result", bad_input="bad: {reason}", crashed="crashed with {exit}: {reason}",
    recovered_cancelled="cancelled while down", finished_while_down="finished while down",
    gone_too_often="gone after {r.retries} retries", gone_restarting="gone; retry", not_found="no job {id}",
    already_final="job {id} already {state}")

_registry = CollectorRegistry()
RUNNING = Gauge("test_jobs_running", "running", registry=_registry)
FINISHED = Counter("test_jobs_finished_total", "finished", ["state"], registry=_registry)


class JobLauncher(ProcessLauncher[Job]):
    record_type, states = Job, JobState
    id_field, restarts_field = "job_id", "retries"
    noun, process_noun, log_name = "job", "job", "job.log"
    wording = WORDING
    not_found_error, finished_error = JobNotFound, JobFinished
    running_gauge, finished_counter = RUNNING, FINISHED

    def __init__(self, root: Path, script: Path, *, max_retries: int = 1, **kwargs: Any) -> None:
        ticks = itertools.count()
        kwargs.setdefault("max_concurrent", 1)
        kwargs.setdefault("stop_grace_s", 5.0)
        super().__init__(root / "records", root / "jobs", program=[sys.executable, str(script)], env=None,
                         clock=lambda: f"t{next(ticks):06d}", **kwargs)
        self.max_retries = max_retries
        self.finals: list[str] = []

    @property
    def restart_limit(self) -> int:
        return self.max_retries

    def command(self, record: Job, out: Path) -> list[str]:
        return [record.mode, str(out)]

    def new_id(self, record: Job) -> str:
        return record.job_id + "x"

    def apply_progress(self, record: Job, progress: dict | None, result: dict | None) -> None:
        for doc in (progress, result):
            if doc and as_number(doc.get("done")) is not None:
                record.done = doc["done"]

    def on_final(self, record: Job) -> None:
        self.finals.append(record.job_id)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "job.py"
    path.write_text(JOB)
    return path


async def _until(predicate, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def _ready(launcher: JobLauncher, job_id: str) -> None:
    await _until(lambda: "ready" in (launcher.out_dir(job_id) / "job.log").read_text()
                 if (launcher.out_dir(job_id) / "job.log").exists() else False)


def _stored(launcher: JobLauncher, job_id: str) -> dict:
    return json.loads((launcher.records_dir / f"{job_id}.json").read_text())


async def test_a_job_that_writes_its_result_succeeds_and_its_record_is_kept(tmp_path: Path, script: Path) -> None:
    launcher = JobLauncher(tmp_path / "state", script)
    launcher.load()
    await launcher.open()
    job = await launcher.start(Job("a", "ok", created_at="c1"))
    assert job.state == JobState.RUNNING and job.pid > 0 and job.launches == 1
    await _until(lambda: launcher._records["a"].state == JobState.SUCCEEDED)
    done = await launcher.get("a")
    assert done.message == "done at 1.0" and done.exit_code == 0 and done.pid == 0 and done.done == 1.0
    assert launcher.finals == ["a"]
    stored = _stored(launcher, "a")
    assert stored["state"] == "SUCCEEDED" and stored["exit_code"] == 0 and stored["launches"] == 1
    again = JobLauncher(tmp_path / "state", script)
    again.load()
    reread = await again.get("a")
    assert reread == done and isinstance(reread.state, JobState)
    await launcher.close()


async def test_jobs_queue_one_at_a_time_and_a_taken_id_gets_a_new_one(tmp_path: Path, script: Path) -> None:
    launcher = JobLauncher(tmp_path / "state", script)
    first = await launcher.start(Job("a", "sleep", created_at="c1"))
    second = await launcher.start(Job("a", "ok", created_at="c2"))
    assert second.job_id == "ax" and second.state == JobState.PENDING
    assert second.message == "waiting: 1 of 1 busy"
    await _ready(launcher, first.job_id)
    cancelled = await launcher.cancel("a")
    assert cancelled.state == JobState.CANCELLED
    assert cancelled.message == f"cancelled (killed by SIGTERM) in {launcher.out_dir('a')}"
    assert cancelled.exit_code == -signal.SIGTERM
    await _until(lambda: launcher._records["ax"].state == JobState.SUCCEEDED)
    with pytest.raises(JobFinished, match="job a already cancelled"):
        await launcher.cancel("a")
    with pytest.raises(JobNotFound, match="no job zz"):
        await launcher.get("zz")
    await launcher.close()


async def test_a_pending_job_cancels_without_starting(tmp_path: Path, script: Path) -> None:
    launcher = JobLauncher(tmp_path / "state", script)
    await launcher.start(Job("a", "sleep", created_at="c1"))
    await launcher.start(Job("b", "ok", created_at="c2"))
    await _ready(launcher, "a")
    cancelled = await launcher.cancel("b")
    assert cancelled.state == JobState.CANCELLED and cancelled.message == "cancelled before it started"
    assert cancelled.launches == 0 and not launcher.out_dir("b").exists()
    await launcher.close()
    assert launcher._records["a"].state == JobState.PENDING and launcher._records["a"].message == "interrupted at 0.5"


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path, script: Path) -> None:
    launcher = JobLauncher(tmp_path / "state", script, stop_grace_s=0.5)
    job = await launcher.start(Job("a", "stubborn", created_at="c1"))
    await _ready(launcher, "a")
    cancelled = await launcher.cancel("a")
    assert cancelled.state == JobState.CANCELLED and "killed by SIGKILL" in cancelled.message
    assert process_started(job.pid) == ""


async def test_failures_say_why(tmp_path: Path, script: Path) -> None:
    launcher = JobLauncher(tmp_path / "state", script, max_concurrent=3)
    for job_id, mode in (("crash", "crash"), ("bad", "bad")):
        await launcher.start(Job(job_id, mode, created_at=job_id))
    await _until(lambda: all(r.state == JobState.FAILED for r in launcher._records.values()))
    assert launcher._records["crash"].message == "crashed with exit code 3: boom: the disk is full"
    assert launcher._records["bad"].message == "bad: bad_input: no such route"
    missing = JobLauncher(tmp_path / "other", tmp_path / "missing.py")
    missing.program = [str(tmp_path / "no-such-program")]
    failed = await missing.start(Job("m", "ok", created_at="c"))
    assert failed.state == JobState.FAILED and failed.message.startswith("could not start: ")


async def test_a_restart_settles_what_the_last_service_left(tmp_path: Path, script: Path) -> None:
    state = tmp_path / "state"
    first = JobLauncher(state, script)
    job = await first.start(Job("a", "sleep", created_at="c1"))
    await _ready(first, "a")
    gone = Job("g", "ok", created_at="c0", state=JobState.RUNNING, pid=999_999_999, pid_started="1", retries=0)
    spent = Job("s", "ok", created_at="c2", state=JobState.RUNNING, pid=999_999_998, pid_started="1", retries=1)
    for record in (gone, spent):
        first._save(record)
    (first.records_dir / "broken.json").write_text("{not json")
    for task in list(first._watchers.values()):  # a SIGKILLed service: no more supervision
        task.cancel()

    second = JobLauncher(state, script)
    second.load()
    assert set(second._records) == {"a", "g", "s"}
    await second.open()
    assert process_started(job.pid) == ""  # the orphan was stopped
    assert second._records["s"].state == JobState.FAILED and second._records["s"].message == "gone after 1 retries"
    await _until(lambda: second._records["g"].state == JobState.SUCCEEDED)
    assert second._records["g"].retries == 1 and second._records["g"].launches == 1
    assert second._records["a"].retries == 1
    await second.close()


def test_pages_walk_newest_first_and_bad_tokens_are_named() -> None:
    jobs = [Job(f"j{i}", "ok", created_at=f"c{i}") for i in range(5)]
    got, token = page_of(jobs, 2, "", JobInvalid)
    assert [j.job_id for j in got] == ["j4", "j3"] and token
    got, token = page_of(jobs, 2, token, JobInvalid)
    assert [j.job_id for j in got] == ["j2", "j1"]
    got, token = page_of(jobs, 2, token, JobInvalid)
    assert [j.job_id for j in got] == ["j0"] and token == ""
    assert decode_page_token("", JobInvalid) is None
    with pytest.raises(JobInvalid, match="page_token is not one this service issued"):
        page_of(jobs, 2, "not-a-token", JobInvalid)
    with pytest.raises(JobInvalid, match="page_size must be >= 0, got -1"):
        page_of(jobs, -1, "", JobInvalid)


def test_exit_descriptions_and_failure_reasons(tmp_path: Path) -> None:
    assert describe_exit(0) == "exit code 0" and describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"
    log_path = tmp_path / "x.log"
    assert failure_reason(None, log_path) == f"see {log_path}"
    log_path.write_bytes(b"first\r\nsecond line\n\n")
    assert last_line(log_path) == "second line" and last_line(log_path, limit=3) == "sec"
    assert failure_reason({"state": "running"}, log_path) == "second line"
    assert failure_reason({"state": "failed", "message": "m" * 600}, log_path) == "error: " + "m" * 500
    assert as_number(True) is None and as_number(2) == 2.0 and as_number("1") is None
    assert process_started(os.getpid()) != ""


def test_condition_message() -> None:
    conditions = [{"lastTransitionTime": "2", "reason": "JobFailed", "message": "OOM"},
                  {"lastTransitionTime": "1", "reason": "Created"}]
    assert condition_message({"conditions": conditions}, False, False) == "JobFailed: OOM"
    assert condition_message({"message": "said", "conditions": conditions}, False, True) == "said"
    assert condition_message({}, True, False) == "cancel requested; the operator stops its Job"
    assert condition_message({"message": "done"}, True, True) == "done"


async def test_kubernetes_calls_name_their_failures() -> None:
    from kubernetes.client.exceptions import ApiException

    def answer(status: int):
        def fn(*args: Any, **kwargs: Any) -> Any:
            raise ApiException(status=status, reason="Nope")
        return fn

    with pytest.raises(JobNotFound, match="gone"):
        await call_custom_objects(answer(404), "g", "v", "ns", "p", "x", unavailable=Unavailable,
                                  not_found=lambda: JobNotFound("gone"))
    with pytest.raises(Unavailable, match="the Kubernetes API answered 404 Nope"):
        await call_custom_objects(answer(404), "g", "v", "ns", "p", unavailable=Unavailable)
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("no")

    with pytest.raises(Unavailable, match=r"unreachable \(ConnectionRefusedError: no\)"):
        await call_custom_objects(refused, "g", "v", "ns", "p", unavailable=Unavailable)
    seen: list[dict] = []

    async def call(fn: Any, **kwargs: Any) -> dict:
        seen.append(kwargs)
        return fn(**kwargs)

    def list_fn(limit: int, _continue: str = "") -> dict:
        page = int(_continue or 0)
        return {"items": [{"n": page}], "metadata": {"continue": str(page + 1) if page < 2 else ""}}

    assert await list_custom_objects(call, list_fn) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert seen[0] == {"limit": 500} and seen[2] == {"limit": 500, "_continue": "2"}


# --- ResourceLauncher against kmock, a Kubernetes API emulator on loopback (no API server can run here)

GROUP, VERSION, PLURAL = "test.scalediffusion.io", "v1", "jobs"
PHASES = {"Pending": JobState.PENDING, "Running": JobState.RUNNING, "Succeeded": JobState.SUCCEEDED}


class JobResources(ResourceLauncher[Job]):
    group, version, plural, states = GROUP, VERSION, PLURAL, JobState
    missing = "no job {id} (none in {namespace})"
    already_final = WORDING.already_final
    not_found_error, finished_error, unavailable_error = JobNotFound, JobFinished, Unavailable
    running_gauge = RUNNING

    def body(self, record: Job) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Job", "metadata": {"name": record.job_id},
                "spec": {"mode": record.mode, "cancel": False}}

    def record_of(self, obj: dict[str, Any]) -> Job:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        job = Job(obj["metadata"]["name"], spec.get("mode", ""), cancel_requested=bool(spec.get("cancel")),
                  state=PHASES.get(status.get("phase", ""), JobState.PENDING))
        job.message = condition_message(status, job.cancel_requested, job.state == JobState.SUCCEEDED)
        return job


async def test_resource_launcher_creates_reads_lists_and_cancels() -> None:
    import kmock

    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        emulator.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(kind="Job", namespaced=True)
        api = custom_objects_api(str(server.url).rstrip("/"), "SD_TEST")
        launcher = JobResources(api, "ns")
        for job_id in ("a", "b"):
            started = await launcher.start(Job(job_id, "ok"))
            assert started.job_id == job_id and started.state == JobState.PENDING
        assert sorted(j.job_id for j in await launcher.list()) == ["a", "b"]
        cancelled = await launcher.cancel("a")
        assert cancelled.cancel_requested and cancelled.message == "cancel requested; the operator stops its Job"
        assert (await launcher.get("a")).cancel_requested and not (await launcher.get("b")).cancel_requested
        with pytest.raises(JobNotFound, match=r"no job zz \(none in ns\)"):
            await launcher.get("zz")
        await asyncio.to_thread(api.patch_namespaced_custom_object, GROUP, VERSION, "ns", PLURAL, "b",
                                {"status": {"phase": "Succeeded"}})
        with pytest.raises(JobFinished, match="job b already succeeded"):
            await launcher.cancel("b")
        assert not (await launcher.get("b")).cancel_requested  # nothing was patched
    with pytest.raises(Unavailable, match="unreachable"):
        await JobResources(api, "ns").get("a")
