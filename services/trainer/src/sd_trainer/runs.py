"""Training runs started over the API: a child process locally, a `TrainingRun` resource in a cluster.

No gRPC here; server.py adapts it. `TrainingRuns` checks a request (dataset id, config overrides,
paging) and hands it to one `Launcher`:

- `SubprocessLauncher` (the embedded stack) runs `python -m sd_trainer.train` as a child process per
  run and keeps one JSON record per run under its state dir. One service process is the only writer
  of its records, a record is a few hundred bytes beside the run's own files, and the run's folder
  and record are all there is to inspect or delete — a database would add a schema and nothing else.
  Records survive a restart: runs the service stopped at shutdown, and runs whose process was gone
  when it came back, start again under the same run id and resume from their newest checkpoint (at
  most `max_resumes` times, then they are failed with the reason).
- `KubernetesLauncher` creates, reads, lists and patches `TrainingRun` resources
  (scalediffusion.io/v1alpha1); the operator runs them as Jobs and writes their status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Gauge

from sd_trainer.config import ConfigError, TrainConfig

log = structlog.get_logger()

GROUP, VERSION, PLURAL, KIND = "scalediffusion.io", "v1alpha1", "trainingruns", "TrainingRun"
DATASETS_PREFIX = "datasets/"
MAX_PAGE = 500
_DATASET_ID = re.compile(r"[0-9a-f]{64}")
# A run id is a Kubernetes object name with room for the Job suffix `-<retryCount>` (docs/training.md).
_RUN_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?")

RUNS_STARTED = Counter("sd_trainer_runs_started_total", "Training runs accepted by StartTrainingRun", ["launcher"])
RUNS_FINISHED = Counter("sd_trainer_runs_finished_total",
                        "Training runs that reached a final state on this replica, by state", ["state"])
RUNS_RUNNING = Gauge("sd_trainer_runs_running", "Training processes running under this replica")


class RunState(StrEnum):
    """The lifecycle of a run (the proto's RunState without its prefix)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})


class RunRequestInvalid(ValueError):
    """A field of a request is malformed; the message names it."""


class RunNotFound(LookupError):
    """No run has this id."""


class DatasetNotFound(LookupError):
    """The dataset version has no manifest in the store."""


class RunFinished(Exception):
    """The run already reached a final state, so it cannot be cancelled."""


class LauncherUnavailable(Exception):
    """The place runs live (the Kubernetes API) did not answer."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Run:
    """One training run as the API shows it, plus what its launcher needs to supervise it."""

    run_id: str
    dataset_id: str
    overrides: dict[str, Any]
    state: RunState = RunState.PENDING
    created_at: str = field(default_factory=_now)
    updated_at: str = ""
    started_at: str = ""
    finished_at: str = ""
    step: int = 0
    max_steps: int = 0
    train_loss: float = 0.0
    val_loss: float = 0.0
    checkpoint_uri: str = ""
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    # subprocess launcher only
    pid: int = 0
    pid_started: str = ""  # the process's start time in /proc (tells a reused pid from ours)
    exit_code: int | None = None
    cancel_requested: bool = False
    launches: int = 0
    resumes: int = 0

    def to_json(self) -> str:
        """The record as stored (one JSON object)."""
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Run:
        """A stored record; keys this version does not know are ignored."""
        doc = json.loads(text)
        known = {f.name for f in fields(cls)}
        run = cls(**{k: v for k, v in doc.items() if k in known})
        run.state = RunState(run.state)
        return run

    @property
    def sort_key(self) -> tuple[str, str]:
        """Newest first in listings: creation time, then id."""
        return (self.created_at, self.run_id)


def new_run_id(dataset_id: str) -> str:
    """`tr-<first 8 of the dataset>-<8 random hex>`: short, unique, a valid Kubernetes name."""
    return f"tr-{dataset_id[:8]}-{secrets.token_hex(4)}"


def check_dataset_id(dataset_id: str) -> str:
    """The id, or RunRequestInvalid naming dataset_id."""
    if not _DATASET_ID.fullmatch(dataset_id or ""):
        raise RunRequestInvalid(f"dataset_id {dataset_id!r} is not a dataset version id (64 lowercase hex digits)")
    return dataset_id


def check_run_id(run_id: str) -> str:
    """The id, or RunRequestInvalid naming run_id."""
    if not _RUN_ID.fullmatch(run_id or ""):
        raise RunRequestInvalid(f"run_id {run_id!r} is not a run id (lowercase letters, digits and '-', "
                                "at most 50 characters)")
    return run_id


def parse_overrides(config_json: str) -> tuple[dict[str, Any], TrainConfig]:
    """The overrides as a dict and the whole config they give; RunRequestInvalid naming config_json."""
    try:
        config = TrainConfig.from_overrides(config_json or None)
    except ConfigError as exc:
        raise RunRequestInvalid(f"config_json: {exc}") from None
    return (json.loads(config_json) if config_json else {}), config


def _encode_token(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_token(token: str) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        created_at, run_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if isinstance(created_at, str) and isinstance(run_id, str):
            return created_at, run_id
    except (ValueError, TypeError):
        pass
    raise RunRequestInvalid("page_token is not one this service issued")


def page(runs: Sequence[Run], page_size: int, page_token: str) -> tuple[list[Run], str]:
    """One page of runs, newest first, after the run the token names; and the next token ("" at the end)."""
    if page_size < 0:
        raise RunRequestInvalid(f"page_size must be >= 0, got {page_size}")
    limit = min(page_size or 50, MAX_PAGE)
    after = _decode_token(page_token)
    ordered = sorted(runs, key=lambda r: r.sort_key, reverse=True)
    if after is not None:
        ordered = [r for r in ordered if r.sort_key < after]
    chunk = ordered[:limit]
    return chunk, (_encode_token(chunk[-1].sort_key) if len(ordered) > limit else "")


class Launcher(Protocol):
    """Where runs live and how they are started and stopped."""

    name: str

    async def start(self, run: Run) -> Run: ...

    async def get(self, run_id: str) -> Run: ...

    async def list(self) -> list[Run]: ...

    async def cancel(self, run_id: str) -> Run: ...


class DatasetCheck(Protocol):
    async def __call__(self, dataset_id: str) -> bool: ...


def dataset_in_folder(root: Path) -> DatasetCheck:
    """A check that the version's manifest is in a folder laid out like the store."""
    async def exists(dataset_id: str) -> bool:
        return (Path(root) / DATASETS_PREFIX / dataset_id / "manifest.json").is_file()
    return exists


def dataset_in_store(store: Any) -> DatasetCheck:
    """A check that the version's manifest is in the object store."""
    async def exists(dataset_id: str) -> bool:
        return await store.head(f"{DATASETS_PREFIX}{dataset_id}/manifest.json") is not None
    return exists


class TrainingRuns:
    """What the trainer API does: check requests, then start, read, list and cancel runs."""

    def __init__(self, launcher: Launcher, dataset_exists: DatasetCheck) -> None:
        self.launcher = launcher
        self._dataset_exists = dataset_exists

    async def start(self, dataset_id: str, config_json: str) -> Run:
        """Starts (or queues) a run of the dataset version with these config overrides."""
        check_dataset_id(dataset_id)
        overrides, _config = parse_overrides(config_json)
        if not await self._dataset_exists(dataset_id):
            raise DatasetNotFound(f"dataset version {dataset_id} has no manifest in the store "
                                  f"({DATASETS_PREFIX}{dataset_id}/manifest.json); make one with sdctl dataset create")
        run = await self.launcher.start(Run(new_run_id(dataset_id), dataset_id, overrides))
        RUNS_STARTED.labels(self.launcher.name).inc()
        log.info("run started", run_id=run.run_id, dataset_id=dataset_id, launcher=self.launcher.name,
                 state=run.state.value)
        return run

    async def get(self, run_id: str) -> Run:
        """One run, with its progress as of now."""
        return await self.launcher.get(check_run_id(run_id))

    async def list(self, dataset_id: str, page_size: int, page_token: str) -> tuple[list[Run], str]:
        """A page of runs (of one dataset version when dataset_id is set), newest first."""
        if dataset_id:
            check_dataset_id(dataset_id)
        runs = [r for r in await self.launcher.list() if not dataset_id or r.dataset_id == dataset_id]
        return page(runs, page_size, page_token)

    async def cancel(self, run_id: str) -> Run:
        """Stops a pending or running run; RunFinished when it already ended."""
        run = await self.launcher.cancel(check_run_id(run_id))
        log.info("run cancel requested", run_id=run_id, state=run.state.value)
        return run


# --- the local launcher: one child process per run ------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not written yet, or being rewritten
    return doc if isinstance(doc, dict) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def apply_progress(run: Run, progress: dict[str, Any] | None, result: dict[str, Any] | None) -> None:
    """Copies step, losses, checkpoint and validation metrics from progress.json / result.json (as the
    training process writes them: `loss.total` per logging interval, `validation.loss` per validation)
    into the run."""
    for doc in (progress, result):
        if not doc:
            continue
        if isinstance(doc.get("step"), int) and not isinstance(doc.get("step"), bool):
            run.step = doc["step"]
        if isinstance(doc.get("max_steps"), int):
            run.max_steps = doc["max_steps"]
        loss = doc.get("loss") if isinstance(doc.get("loss"), dict) else {}
        validation = doc.get("validation") if isinstance(doc.get("validation"), dict) else {}
        metrics = doc.get("metrics") if isinstance(doc.get("metrics"), dict) else {}  # a TrainingRun's status
        for name, candidates in (("train_loss", (loss.get("total"), metrics.get("train_loss"))),
                                 ("val_loss", (validation.get("loss"), metrics.get("val_loss"), metrics.get("loss")))):
            for value in candidates:
                if (number := _number(value)) is not None:
                    setattr(run, name, number)
                    break
        if isinstance(doc.get("checkpoint_uri"), str):
            run.checkpoint_uri = doc["checkpoint_uri"]
        if validation or metrics:
            run.metrics = validation or metrics


def _failure(progress: dict[str, Any] | None, log_path: Path) -> str:
    """Why the process failed: the reason it wrote into progress.json, else the last line of its log."""
    if progress and progress.get("state") == "failed" and progress.get("message"):
        return f"{progress.get('reason') or 'error'}: {str(progress['message'])[:500]}"
    return _last_line(log_path) or f"see {log_path}"


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _process_started(pid: int) -> str:
    """The start time of a process (field 22 of /proc/<pid>/stat), "" when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _last_line(path: Path, limit: int = 300) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:limit] if lines else ""


def train_command(run: Run, out_dir: Path, dataset_root: Path | None) -> list[str]:
    """The training process's arguments after the program (docs/training.md)."""
    args = ["--run-id", run.run_id, "--dataset", run.dataset_id, "--config-json",
            json.dumps(run.overrides, separators=(",", ":")), "--out", str(out_dir)]
    return args + (["--dataset-root", str(dataset_root)] if dataset_root is not None else [])


class SubprocessLauncher:
    """Runs each training run as a child process and keeps its record in `<state_dir>/runs/<run>.json`."""

    name = "subprocess"

    def __init__(self, state_dir: Path, *, max_concurrent: int = 1, stop_grace_s: float = 10.0,
                 max_resumes: int = 3, dataset_root: Path | None = None,
                 program: Sequence[str] = (sys.executable, "-m", "sd_trainer.train"),
                 env: dict[str, str] | None = None, clock: Callable[[], str] = _now) -> None:
        self.state_dir = Path(state_dir)
        self.records_dir = self.state_dir / "runs"
        self.training_dir = self.state_dir / "training"
        self.max_concurrent = max_concurrent
        self.stop_grace_s = stop_grace_s
        self.max_resumes = max_resumes
        self.dataset_root = dataset_root
        self.program = list(program)
        self.env = env
        self._clock = clock
        self._runs: dict[str, Run] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: dict[str, asyncio.Task] = {}
        self._lock = asyncio.Lock()
        self._stopping = False

    def out_dir(self, run_id: str) -> Path:
        """The run's --out folder."""
        return self.training_dir / run_id

    def load(self) -> None:
        """Reads every record (before the API serves)."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                run = Run.from_json(path.read_text())
            except (OSError, ValueError, TypeError) as exc:
                log.error("unreadable run record left alone", path=str(path), error=str(exc))
                continue
            self._runs[run.run_id] = run

    def _save(self, run: Run) -> None:
        run.updated_at = self._clock()
        self.records_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.records_dir / f".{run.run_id}.json.tmp"
        tmp.write_text(run.to_json())
        os.replace(tmp, self.records_dir / f"{run.run_id}.json")  # a reader never sees half a record

    def _running(self) -> int:
        return sum(1 for r in self._runs.values() if r.state == RunState.RUNNING)

    async def open(self) -> None:
        """Settles runs left by the previous service process, then starts what is pending."""
        async with self._lock:
            for run in sorted(self._runs.values(), key=lambda r: r.sort_key):
                if run.state in FINAL:
                    continue
                await self._recover(run)
            await self._fill()
        RUNS_RUNNING.set(self._running())

    async def _recover(self, run: Run) -> None:
        bound = log.bind(run_id=run.run_id)
        if run.state == RunState.RUNNING and run.pid and _process_started(run.pid) == run.pid_started:
            # The previous service died without stopping it (SIGKILL): it is not our child, so we cannot
            # wait for its exit status. Stop it and resume it under this process's supervision.
            bound.warning("stopping a training process left by the previous trainer", pid=run.pid)
            await self._stop_orphan(run.pid, run.pid_started)
        out = self.out_dir(run.run_id)
        apply_progress(run, _read_json(out / "progress.json"), _read_json(out / "result.json"))
        if run.cancel_requested:
            self._final(run, RunState.CANCELLED, f"cancelled at step {run.step}")
        elif run.state == RunState.RUNNING and _read_json(out / "result.json") is not None:
            self._final(run, RunState.SUCCEEDED, "finished while the trainer was down")
        elif run.state == RunState.RUNNING:
            if run.resumes >= self.max_resumes:
                self._final(run, RunState.FAILED, f"the training process was gone after a trainer restart at "
                            f"step {run.step}, and it had been resumed {run.resumes} times already")
            else:
                run.resumes += 1
                run.state, run.pid, run.pid_started = RunState.PENDING, 0, ""
                run.message = f"the training process was gone after a trainer restart; resuming from step {run.step}"
                bound.warning("resuming a run whose process was gone", step=run.step, resumes=run.resumes)
                self._save(run)

    async def _stop_orphan(self, pid: int, started: str) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_grace_s
        while _process_started(pid) == started and loop.time() < deadline:
            await asyncio.sleep(0.1)
        if _process_started(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = loop.time() + 10  # its new parent (init) reaps it
            while _process_started(pid) == started and loop.time() < deadline:
                await asyncio.sleep(0.05)

    def _final(self, run: Run, state: RunState, message: str) -> None:
        run.state, run.message, run.finished_at = state, message, self._clock()
        run.pid, run.pid_started = 0, ""
        self._save(run)
        RUNS_FINISHED.labels(state.value).inc()
        log.info("run finished", run_id=run.run_id, state=state.value, step=run.step, message=message)

    async def _fill(self) -> None:
        """Starts pending runs, oldest first, while there is room (caller holds the lock)."""
        if self._stopping:
            return
        for run in sorted(self._runs.values(), key=lambda r: r.sort_key):
            if self._running() >= self.max_concurrent:
                break
            if run.state == RunState.PENDING and not run.cancel_requested:
                try:
                    await self._launch(run)
                except OSError as exc:  # the program is missing, the folder unwritable
                    self._final(run, RunState.FAILED, f"the training process could not start: {exc}")
        RUNS_RUNNING.set(self._running())

    async def _launch(self, run: Run) -> None:
        out = self.out_dir(run.run_id)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "train.log").open("ab") as logfile:
            proc = await asyncio.create_subprocess_exec(
                *self.program, *train_command(run, out, self.dataset_root), stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile, stderr=asyncio.subprocess.STDOUT, env=self.env,
                start_new_session=True)  # its own process group: a stop reaches torchrun's workers too
        run.state, run.pid, run.pid_started = RunState.RUNNING, proc.pid, _process_started(proc.pid)
        run.launches += 1
        run.started_at = run.started_at or self._clock()
        run.exit_code = None
        if run.launches > 1:
            run.message = f"resumed (launch {run.launches}); continues from its newest checkpoint"
        self._procs[run.run_id] = proc
        self._save(run)
        self._watchers[run.run_id] = asyncio.create_task(self._watch(run, proc))
        log.info("training process started", run_id=run.run_id, pid=proc.pid, launch=run.launches,
                 out=str(out))

    async def _watch(self, run: Run, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        async with self._lock:
            self._procs.pop(run.run_id, None)
            self._watchers.pop(run.run_id, None)
            out = self.out_dir(run.run_id)
            result, progress = _read_json(out / "result.json"), _read_json(out / "progress.json")
            apply_progress(run, progress, result)
            run.exit_code = code
            if run.cancel_requested:
                self._final(run, RunState.CANCELLED, f"cancelled at step {run.step}")
            elif self._stopping and result is None:
                run.state, run.pid, run.pid_started = RunState.PENDING, 0, ""
                run.message = (f"stopped by a trainer shutdown at step {run.step}; resumes from its newest "
                               "checkpoint when the trainer starts again")
                self._save(run)
                log.info("run interrupted by shutdown", run_id=run.run_id, step=run.step)
            elif code == 0 and result is not None:
                self._final(run, RunState.SUCCEEDED, f"finished at step {run.step}")
            elif code == 0:
                self._final(run, RunState.FAILED, "the training process exited 0 without writing result.json")
            elif code == 2:
                self._final(run, RunState.FAILED, "bad configuration or dataset (exit code 2; not retried): "
                            + _failure(progress, out / "train.log"))
            else:
                self._final(run, RunState.FAILED, f"the training process ended with {_describe_exit(code)}: "
                            + _failure(progress, out / "train.log"))
            await self._fill()
            RUNS_RUNNING.set(self._running())

    def _find(self, run_id: str) -> Run:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFound(f"no training run {run_id}")
        return run

    async def start(self, run: Run) -> Run:
        """Records the run and starts it when there is room (else it waits as PENDING)."""
        async with self._lock:
            while run.run_id in self._runs:
                run = replace(run, run_id=new_run_id(run.dataset_id))
            if self._running() >= self.max_concurrent:
                run.message = f"waiting: {self._running()} of {self.max_concurrent} run(s) are training"
            self._runs[run.run_id] = run
            self._save(run)
            await self._fill()
            return replace(run)

    async def get(self, run_id: str) -> Run:
        """The run; a running one with its progress.json read now."""
        run = self._find(run_id)
        if run.state == RunState.RUNNING:
            apply_progress(run, _read_json(self.out_dir(run_id) / "progress.json"), None)
        return replace(run)

    async def list(self) -> list[Run]:
        """Every run this service knows."""
        return [await self.get(run_id) for run_id in list(self._runs)]

    async def cancel(self, run_id: str) -> Run:
        """Pending: cancelled now. Running: SIGTERM, SIGKILL after the grace, then CANCELLED."""
        async with self._lock:
            run = self._find(run_id)
            if run.state in FINAL:
                raise RunFinished(f"run {run_id} already {run.state.value.lower()}; only pending or running "
                                  "runs can be cancelled")
            run.cancel_requested = True
            proc = self._procs.get(run_id)
            if proc is None:
                self._final(run, RunState.CANCELLED, "cancelled before it started")
                return replace(run)
            self._save(run)
            watcher = self._watchers.get(run_id)
        await self._terminate(proc)
        if watcher is not None:
            await asyncio.shield(watcher)
        return replace(self._runs[run_id])

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.stop_grace_s)
        except TimeoutError:
            log.warning("training process ignored SIGTERM; killing it", pid=proc.pid, grace_s=self.stop_grace_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def close(self) -> None:
        """Service shutdown: stops every training process (SIGTERM, then SIGKILL) and records it."""
        async with self._lock:
            self._stopping = True
            procs = list(self._procs.values())
            watchers = list(self._watchers.values())
        await asyncio.gather(*(self._terminate(p) for p in procs))
        await asyncio.gather(*watchers, return_exceptions=True)
        RUNS_RUNNING.set(0)


# --- the cluster launcher: TrainingRun resources -----------------------------------------------------

PHASES = {"Pending": RunState.PENDING, "Running": RunState.RUNNING, "Succeeded": RunState.SUCCEEDED,
          "Failed": RunState.FAILED, "Cancelled": RunState.CANCELLED}
CREATED_AT = f"{GROUP}/created-at"


def training_run_body(run: Run) -> dict[str, Any]:
    """The TrainingRun resource of a run (spec fields as docs/training.md and the operator's CRD)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": run.run_id, "annotations": {CREATED_AT: run.created_at},
                     "labels": {"app.kubernetes.io/managed-by": "sd-trainer"}},
        "spec": {"datasetVersion": run.dataset_id, "configOverrides": run.overrides, "cancel": False},
    }


def run_of(obj: dict[str, Any]) -> Run:
    """A run read back from its TrainingRun resource (status as the operator writes it)."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}) or {}, obj.get("status", {}) or {}
    overrides = spec.get("configOverrides") or {}
    run = Run(run_id=meta.get("name", ""), dataset_id=spec.get("datasetVersion", ""),
              overrides=overrides if isinstance(overrides, dict) else {},
              state=PHASES.get(status.get("phase", ""), RunState.PENDING),
              created_at=(meta.get("annotations") or {}).get(CREATED_AT) or meta.get("creationTimestamp") or "",
              started_at=status.get("startTime") or "", finished_at=status.get("completionTime") or "",
              cancel_requested=bool(spec.get("cancel")))
    if isinstance(status.get("step"), int):
        run.step = status["step"]
    run.checkpoint_uri = status.get("checkpointUri") or ""
    apply_progress(run, None, {"metrics": status.get("metrics") or {}})
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if isinstance(status.get("message"), str) and status["message"]:
        run.message = status["message"]
    elif conditions:
        last = max(conditions, key=lambda c: c.get("lastTransitionTime") or "")
        run.message = ": ".join(x for x in (last.get("reason"), last.get("message")) if x)
    if run.cancel_requested and run.state not in FINAL:
        run.message = "cancel requested; the operator stops its Job"
    return run


class KubernetesLauncher:
    """Runs as TrainingRun resources in one namespace, through the Kubernetes API."""

    name = "kubernetes"

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api  # kubernetes.client.CustomObjectsApi
        self.namespace = namespace

    async def _call(self, fn: Callable[..., Any], *args: Any, run_id: str = "", **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return await asyncio.to_thread(fn, GROUP, VERSION, self.namespace, PLURAL, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and run_id:
                raise RunNotFound(f"no training run {run_id} (no TrainingRun {run_id} in namespace "
                                  f"{self.namespace})") from None
            raise LauncherUnavailable(f"the Kubernetes API answered {exc.status} {exc.reason}"
                                      f"{': ' + exc.body[:300] if isinstance(exc.body, str) else ''}") from None
        except (HTTPError, OSError) as exc:
            raise LauncherUnavailable(f"the Kubernetes API is unreachable ({type(exc).__name__}: {exc})") from None

    async def start(self, run: Run) -> Run:
        """Creates the TrainingRun; the operator makes its Job."""
        created = await self._call(self.api.create_namespaced_custom_object, training_run_body(run))
        return run_of(created) if isinstance(created, dict) and created.get("spec") else replace(run)

    async def get(self, run_id: str) -> Run:
        """The run as its resource's status says."""
        return run_of(await self._call(self.api.get_namespaced_custom_object, run_id, run_id=run_id))

    async def list(self) -> list[Run]:
        """Every TrainingRun in the namespace (read in pages of the API's own)."""
        runs, token = [], None
        while True:
            kwargs = {"limit": 500, **({"_continue": token} if token else {})}
            doc = await self._call(self.api.list_namespaced_custom_object, **kwargs)
            runs += [run_of(o) for o in doc.get("items", [])]
            token = (doc.get("metadata") or {}).get("continue")
            if not token:
                break
        RUNS_RUNNING.set(sum(1 for r in runs if r.state == RunState.RUNNING))
        return runs

    async def cancel(self, run_id: str) -> Run:
        """Sets spec.cancel; the operator deletes the Job and sets phase Cancelled."""
        run = await self.get(run_id)
        if run.state in FINAL:
            raise RunFinished(f"run {run_id} already {run.state.value.lower()}; only pending or running "
                              "runs can be cancelled")
        patched = await self._call(self.api.patch_namespaced_custom_object, run_id, {"spec": {"cancel": True}},
                                   run_id=run_id)
        return run_of(patched) if isinstance(patched, dict) and patched.get("spec") else await self.get(run_id)

    async def close(self) -> None:
        """Nothing runs in this process: the Jobs outlive it."""


def kubernetes_api(api_url: str) -> Any:
    """A CustomObjectsApi: the given API server, else in-cluster credentials, else ~/.kube/config."""
    from kubernetes import client, config

    if api_url:
        cfg = client.Configuration()
        cfg.host = api_url.rstrip("/")
        return client.CustomObjectsApi(client.ApiClient(cfg))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise RuntimeError("SD_TRAINER_LAUNCHER=kubernetes needs the Kubernetes API: run in a pod with a "
                               "service account, give ~/.kube/config, or set SD_TRAINER_KUBE_API_URL "
                               f"({exc})") from None
    return client.CustomObjectsApi()
