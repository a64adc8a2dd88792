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

import json
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import structlog
from prometheus_client import Counter, Gauge
from sd_common.process_runs import (
    LauncherWording,
    ProcessLauncher,
    ProcessRecord,
    ResourceLauncher,
    as_number,
    condition_message,
    custom_objects_api,
    now_utc,
    page_of,
)

from sd_trainer.config import ConfigError, TrainConfig

log = structlog.get_logger()

GROUP, VERSION, PLURAL, KIND = "scalediffusion.io", "v1alpha1", "trainingruns", "TrainingRun"
DATASETS_PREFIX = "datasets/"
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


@dataclass
class Run(ProcessRecord):
    """One training run as the API shows it, plus what its launcher needs to supervise it."""

    run_id: str
    dataset_id: str
    overrides: dict[str, Any]
    state: RunState = RunState.PENDING
    created_at: str = field(default_factory=now_utc)
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
    # subprocess launcher only (and ProcessRecord's pid, exit code, cancel flag and launches)
    resumes: int = 0

    def loaded(self) -> None:
        """The state back as a RunState."""
        self.state = RunState(self.state)

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


def page(runs: Sequence[Run], page_size: int, page_token: str) -> tuple[list[Run], str]:
    """One page of runs, newest first, after the run the token names; and the next token ("" at the end)."""
    return page_of(runs, page_size, page_token, RunRequestInvalid)


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
                if (number := as_number(value)) is not None:
                    setattr(run, name, number)
                    break
        if isinstance(doc.get("checkpoint_uri"), str):
            run.checkpoint_uri = doc["checkpoint_uri"]
        if validation or metrics:
            run.metrics = validation or metrics


def train_command(run: Run, out_dir: Path, dataset_root: Path | None) -> list[str]:
    """The training process's arguments after the program (docs/training.md)."""
    args = ["--run-id", run.run_id, "--dataset", run.dataset_id, "--config-json",
            json.dumps(run.overrides, separators=(",", ":")), "--out", str(out_dir)]
    return args + (["--dataset-root", str(dataset_root)] if dataset_root is not None else [])


TRAINING_WORDING = LauncherWording(
    waiting="waiting: {running} of {max_concurrent} run(s) are training",
    not_started="the training process could not start: {exc}",
    cancelled="cancelled at step {r.step}",
    interrupted=("stopped by a trainer shutdown at step {r.step}; resumes from its newest checkpoint when the "
                 "trainer starts again"),
    succeeded="finished at step {r.step}",
    no_result="the training process exited 0 without writing result.json",
    bad_input="bad configuration or dataset (exit code 2; not retried): {reason}",
    crashed="the training process ended with {exit}: {reason}",
    recovered_cancelled="cancelled at step {r.step}",
    finished_while_down="finished while the trainer was down",
    gone_too_often=("the training process was gone after a trainer restart at step {r.step}, and it had been "
                    "resumed {r.resumes} times already"),
    gone_restarting="the training process was gone after a trainer restart; resuming from step {r.step}",
    not_found="no training run {id}",
    already_final="run {id} already {state}; only pending or running runs can be cancelled",
)


class SubprocessLauncher(ProcessLauncher[Run]):
    """Runs each training run as a child process and keeps its record in `<state_dir>/runs/<run>.json`
    (the queue, cancel and restart mechanics are sd_common.process_runs')."""

    record_type = Run
    states = RunState
    id_field, restarts_field = "run_id", "resumes"
    noun, process_noun, log_name = "run", "training", "train.log"
    wording = TRAINING_WORDING
    not_found_error, finished_error = RunNotFound, RunFinished
    running_gauge, finished_counter = RUNS_RUNNING, RUNS_FINISHED

    def __init__(self, state_dir: Path, *, max_concurrent: int = 1, stop_grace_s: float = 10.0,
                 max_resumes: int = 3, dataset_root: Path | None = None,
                 program: Sequence[str] = (sys.executable, "-m", "sd_trainer.train"),
                 env: dict[str, str] | None = None, clock: Callable[[], str] = now_utc) -> None:
        self.state_dir = Path(state_dir)
        self.training_dir = self.state_dir / "training"
        super().__init__(self.state_dir / "runs", self.training_dir, max_concurrent=max_concurrent,
                         stop_grace_s=stop_grace_s, program=program, env=env, clock=clock)
        self.max_resumes = max_resumes
        self.dataset_root = dataset_root

    @property
    def _runs(self) -> dict[str, Run]:
        return self._records

    @property
    def restart_limit(self) -> int:
        """max_resumes."""
        return self.max_resumes

    def command(self, record: Run, out: Path) -> list[str]:
        """train_command's arguments."""
        return train_command(record, out, self.dataset_root)

    def new_id(self, record: Run) -> str:
        """Another id of the run's dataset."""
        return new_run_id(record.dataset_id)

    def apply_progress(self, record: Run, progress: dict[str, Any] | None, result: dict[str, Any] | None) -> None:
        """The module's apply_progress."""
        apply_progress(record, progress, result)

    def on_launch(self, record: Run) -> None:
        """A second launch says it resumes."""
        if record.launches > 1:
            record.message = f"resumed (launch {record.launches}); continues from its newest checkpoint"


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
    run.message = condition_message(status, run.cancel_requested, run.state in FINAL)
    return run


class KubernetesLauncher(ResourceLauncher[Run]):
    """Runs as TrainingRun resources in one namespace, through the Kubernetes API (the calls are
    sd_common.process_runs.ResourceLauncher's)."""

    group, version, plural, states = GROUP, VERSION, PLURAL, RunState
    missing = "no training run {id} (no TrainingRun {id} in namespace {namespace})"
    already_final = TRAINING_WORDING.already_final
    not_found_error, finished_error, unavailable_error = RunNotFound, RunFinished, LauncherUnavailable
    running_gauge = RUNS_RUNNING

    def body(self, record: Run) -> dict[str, Any]:
        """training_run_body."""
        return training_run_body(record)

    def record_of(self, obj: dict[str, Any]) -> Run:
        """run_of."""
        return run_of(obj)


def kubernetes_api(api_url: str) -> Any:
    """A CustomObjectsApi: the given API server, else in-cluster credentials, else ~/.kube/config."""
    return custom_objects_api(api_url, "SD_TRAINER")
