"""Evaluations started over the API: a child process locally, an `Evaluation` resource in a cluster.

No gRPC here; server.py adapts it. `Evaluations` checks a request (checkpoint, benchmark, agents,
paging) and hands it to one launcher:

- `SubprocessLauncher` (the embedded stack) runs `python -m sd_evaluator.evaluate` as a child process
  per evaluation, one at a time by default (each drives a browser or a simulator), and keeps one JSON
  record per evaluation under its state dir, as the trainer keeps its runs. An evaluation whose process
  was gone after a restart of the service starts again from its first route (a run is reproducible from
  its benchmark's seed), at most `max_restarts` times.
- `KubernetesLauncher` creates, reads, lists and patches `Evaluation` resources
  (scalediffusion.io/v1alpha1); the operator runs each as a Job beside a CARLA server and copies the
  evaluation's scores into its status. A running evaluation's progress is read from the
  progress.json the process mirrors to the store.
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

log = structlog.get_logger()

GROUP, VERSION, PLURAL, KIND = "scalediffusion.io", "v1alpha1", "evaluations", "Evaluation"
MAX_PAGE = 500
# A Kubernetes object name within the operator's limit for owners of Jobs `<name>-<attempt>`.
_EVALUATION_ID = re.compile(r"[a-z0-9]([-a-z0-9.]{0,50}[a-z0-9])?")
STORE_PREFIX = "evaluations/"

EVALUATIONS_STARTED = Counter("sd_evaluator_evaluations_started_total", "Evaluations accepted by StartEvaluation",
                              ["launcher"])
EVALUATIONS_FINISHED = Counter("sd_evaluator_evaluations_finished_total",
                               "Evaluations that reached a final state on this replica, by state", ["state"])
EVALUATIONS_RUNNING = Gauge("sd_evaluator_evaluations_running", "Evaluation processes running under this replica")


class EvaluationState(StrEnum):
    """The lifecycle of an evaluation (the proto's EvaluationState without its prefix)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL = frozenset({EvaluationState.SUCCEEDED, EvaluationState.FAILED, EvaluationState.CANCELLED})


class EvaluationRequestInvalid(ValueError):
    """A field of a request is malformed; the message names it."""


class EvaluationNotFound(LookupError):
    """No evaluation has this id."""


class CheckpointNotFound(LookupError):
    """The checkpoint to evaluate is neither a file here nor an object in the store."""


class EvaluationFinished(Exception):
    """The evaluation already reached a final state, so it cannot be cancelled."""


class LauncherUnavailable(Exception):
    """The place evaluations live (the Kubernetes API) did not answer."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class AgentScores:
    """One agent's scores in an evaluation: means over the run's routes (a route not driven counts 0)."""

    agent: str
    driving_score: float = 0.0
    route_completion: float = 0.0
    infraction_penalty: float = 0.0
    km_driven: float = 0.0
    routes_done: int = 0
    routes_total: int = 0
    infractions_per_km: float = 0.0
    bench2drive_driving_score: float = 0.0
    bench2drive_success_rate: float = 0.0
    state: str = "pending"


@dataclass
class Evaluation:
    """One evaluation as the API shows it, plus what its launcher needs to supervise it."""

    evaluation_id: str
    checkpoint_uri: str
    benchmark: str
    agents: list[str]
    state: EvaluationState = EvaluationState.PENDING
    created_at: str = field(default_factory=_now)
    updated_at: str = ""
    started_at: str = ""
    finished_at: str = ""
    fraction_done: float = 0.0
    current_agent: str = ""
    scores: list[AgentScores] = field(default_factory=list)
    route_file: str = ""
    report_uri: str = ""
    message: str = ""
    # subprocess launcher only
    pid: int = 0
    pid_started: str = ""  # the process's start time in /proc (tells a reused pid from ours)
    exit_code: int | None = None
    cancel_requested: bool = False
    launches: int = 0
    restarts: int = 0

    def to_json(self) -> str:
        """The record as stored (one JSON object)."""
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Evaluation:
        """A stored record; keys this version does not know are ignored."""
        doc = json.loads(text)
        known = {f.name for f in fields(cls)}
        evaluation = cls(**{k: v for k, v in doc.items() if k in known})
        evaluation.state = EvaluationState(evaluation.state)
        agent_keys = {f.name for f in fields(AgentScores)}
        evaluation.scores = [AgentScores(**{k: v for k, v in s.items() if k in agent_keys})
                             for s in evaluation.scores if isinstance(s, dict)]
        return evaluation

    @property
    def sort_key(self) -> tuple[str, str]:
        """Newest first in listings: creation time, then id."""
        return (self.created_at, self.evaluation_id)

    def agent_scores(self, agent: str) -> AgentScores | None:
        """The scores of one agent, if it has any yet."""
        return next((s for s in self.scores if s.agent == agent), None)


def new_evaluation_id() -> str:
    """`ev-<8 random hex>`: short, unique, a valid Kubernetes name."""
    return f"ev-{secrets.token_hex(4)}"


def check_evaluation_id(evaluation_id: str) -> str:
    """The id, or EvaluationRequestInvalid naming evaluation_id."""
    if not _EVALUATION_ID.fullmatch(evaluation_id or ""):
        raise EvaluationRequestInvalid(f"evaluation_id {evaluation_id!r} is not an evaluation id (lowercase "
                                       "letters, digits, '-' and '.', at most 52 characters)")
    return evaluation_id


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def apply_progress(evaluation: Evaluation, progress: dict[str, Any] | None, result: dict[str, Any] | None) -> None:
    """Copies the agent driving now, the fraction done, each agent's scores and the report from
    progress.json / result.json (as the evaluation process writes them) into the evaluation."""
    for doc in (progress, result):
        if not doc:
            continue
        if (fraction := _number(doc.get("fraction_done"))) is not None:
            evaluation.fraction_done = fraction
        if isinstance(doc.get("agent"), str):
            evaluation.current_agent = doc["agent"]
        if isinstance(doc.get("report_uri"), str) and doc["report_uri"]:
            evaluation.report_uri = doc["report_uri"]
        if isinstance(doc.get("route_file"), str):
            evaluation.route_file = doc["route_file"]
        per_agent = doc.get("per_agent") if isinstance(doc.get("per_agent"), dict) else {}
        scores = doc.get("scores") if isinstance(doc.get("scores"), dict) else {}
        final = scores.get("agents") if isinstance(scores.get("agents"), dict) else {}
        names = [a for a in (doc.get("agents") or []) if isinstance(a, str)] or list(per_agent) or list(final)
        if not names:
            continue
        merged = []
        for name in names:
            s = evaluation.agent_scores(name) or AgentScores(name)
            for source in (per_agent.get(name), final.get(name)):
                if not isinstance(source, dict):
                    continue
                for key, attr in (("driving_score", "driving_score"), ("route_completion", "route_completion"),
                                  ("infraction_penalty", "infraction_penalty"), ("km_driven", "km_driven"),
                                  ("infractions_per_km_total", "infractions_per_km"),
                                  ("bench2drive_driving_score", "bench2drive_driving_score"),
                                  ("bench2drive_success_rate", "bench2drive_success_rate")):
                    if (number := _number(source.get(key))) is not None:
                        setattr(s, attr, number)
                for key in ("routes_done", "routes_total"):
                    if isinstance(source.get(key), int) and not isinstance(source.get(key), bool):
                        setattr(s, key, source[key])
                if isinstance(source.get("state"), str):
                    s.state = source["state"]
            if isinstance(final.get(name), dict):
                s.state = "done"
            merged.append(s)
        evaluation.scores = merged


def _encode_token(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_token(token: str) -> tuple[str, str] | None:
    if not token:
        return None
    try:
        created_at, evaluation_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if isinstance(created_at, str) and isinstance(evaluation_id, str):
            return created_at, evaluation_id
    except (ValueError, TypeError):
        pass
    raise EvaluationRequestInvalid("page_token is not one this service issued")


def page(evaluations: Sequence[Evaluation], page_size: int, page_token: str) -> tuple[list[Evaluation], str]:
    """One page, newest first, after the evaluation the token names; and the next token ("" at the end)."""
    if page_size < 0:
        raise EvaluationRequestInvalid(f"page_size must be >= 0, got {page_size}")
    limit = min(page_size or 50, MAX_PAGE)
    after = _decode_token(page_token)
    ordered = sorted(evaluations, key=lambda e: e.sort_key, reverse=True)
    if after is not None:
        ordered = [e for e in ordered if e.sort_key < after]
    chunk = ordered[:limit]
    return chunk, (_encode_token(chunk[-1].sort_key) if len(ordered) > limit else "")


class Launcher(Protocol):
    """Where evaluations live and how they are started and stopped."""

    name: str

    async def start(self, evaluation: Evaluation) -> Evaluation: ...

    async def get(self, evaluation_id: str) -> Evaluation: ...

    async def list(self) -> list[Evaluation]: ...

    async def cancel(self, evaluation_id: str) -> Evaluation: ...


class CheckpointCheck(Protocol):
    async def __call__(self, checkpoint_uri: str) -> bool: ...


def checkpoint_in_store(store: Any, bucket: str = "") -> CheckpointCheck:
    """A check that the checkpoint is a file here, a key in the store, or s3://<the store's bucket>/key.
    A URI of another bucket cannot be checked from here and is accepted (the process reports it)."""
    async def exists(uri: str) -> bool:
        if uri.startswith("s3://"):
            found_bucket, _, key = uri.removeprefix("s3://").partition("/")
            if bucket and found_bucket != bucket:
                return True
            return bool(key) and await store.head(key) is not None
        if Path(uri).is_file():
            return True
        try:
            return await store.head(uri) is not None
        except Exception:  # noqa: BLE001 - not a valid key either (InvalidKey): it does not exist
            return False
    return exists


class Evaluations:
    """What the evaluator API does: check requests, then start, read, list and cancel evaluations."""

    def __init__(self, launcher: Launcher, checkpoint_exists: CheckpointCheck,
                 resolve_benchmark: Callable[[str], Any] | None = None) -> None:
        self.launcher = launcher
        self._checkpoint_exists = checkpoint_exists
        self._resolve = resolve_benchmark

    def _check(self, checkpoint_uri: str, benchmark: str, agents: Sequence[str]) -> list[str]:
        from sd_evaluator.agents import MODEL
        from sd_evaluator.benchmarks import UnknownBenchmark, resolve
        from sd_evaluator.evaluate import EvaluationInputError, choose_agents

        if not benchmark:
            raise EvaluationRequestInvalid("benchmark is required (a benchmark name such as city-20)")
        try:
            kind = (self._resolve or resolve)(benchmark).kind
            chosen = choose_agents(",".join(agents), kind)
        except (UnknownBenchmark, EvaluationInputError) as exc:
            raise EvaluationRequestInvalid(str(exc).replace("--agents", "agents")) from None
        if MODEL in chosen and not checkpoint_uri:
            raise EvaluationRequestInvalid("checkpoint_uri is required to evaluate the model")
        return chosen

    async def start(self, checkpoint_uri: str, benchmark: str, agents: Sequence[str] = ()) -> Evaluation:
        """Starts (or queues) an evaluation of the checkpoint and its baselines on the benchmark."""
        chosen = self._check(checkpoint_uri, benchmark, agents)
        if checkpoint_uri and not await self._checkpoint_exists(checkpoint_uri):
            raise CheckpointNotFound(f"checkpoint {checkpoint_uri} is neither a file nor an object in the store; "
                                     "use a training run's checkpoint_uri (sdctl train show RUN)")
        evaluation = await self.launcher.start(Evaluation(new_evaluation_id(), checkpoint_uri, benchmark, chosen))
        EVALUATIONS_STARTED.labels(self.launcher.name).inc()
        log.info("evaluation started", evaluation_id=evaluation.evaluation_id, benchmark=benchmark,
                 agents=chosen, launcher=self.launcher.name, state=evaluation.state.value)
        return evaluation

    async def get(self, evaluation_id: str) -> Evaluation:
        """One evaluation, with its progress as of now."""
        return await self.launcher.get(check_evaluation_id(evaluation_id))

    async def list(self, page_size: int, page_token: str) -> tuple[list[Evaluation], str]:
        """A page of evaluations, newest first."""
        return page(await self.launcher.list(), page_size, page_token)

    async def cancel(self, evaluation_id: str) -> Evaluation:
        """Stops a pending or running evaluation; EvaluationFinished when it already ended."""
        evaluation = await self.launcher.cancel(check_evaluation_id(evaluation_id))
        log.info("evaluation cancel requested", evaluation_id=evaluation_id, state=evaluation.state.value)
        return evaluation


# --- the local launcher: one child process per evaluation ----------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not written yet, or being rewritten
    return doc if isinstance(doc, dict) else None


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


def evaluate_command(evaluation: Evaluation, out_dir: Path, carla_host: str, carla_port: int) -> list[str]:
    """The evaluation process's arguments after the program (docs/evaluation.md)."""
    args = ["--evaluation-id", evaluation.evaluation_id, "--benchmark", evaluation.benchmark,
            "--agents", ",".join(evaluation.agents), "--out", str(out_dir),
            "--carla-host", carla_host, "--carla-port", str(carla_port)]
    return (["--checkpoint", evaluation.checkpoint_uri] if evaluation.checkpoint_uri else []) + args


class SubprocessLauncher:
    """Runs each evaluation as a child process and keeps its record in `<state_dir>/records/<id>.json`;
    its files are in `<state_dir>/evaluations/<id>/`."""

    name = "subprocess"

    def __init__(self, state_dir: Path, *, max_concurrent: int = 1, stop_grace_s: float = 10.0,
                 max_restarts: int = 1, carla_host: str = "127.0.0.1", carla_port: int = 2000,
                 program: Sequence[str] = (sys.executable, "-m", "sd_evaluator.evaluate"),
                 env: dict[str, str] | None = None, clock: Callable[[], str] = _now) -> None:
        self.state_dir = Path(state_dir)
        self.records_dir = self.state_dir / "records"
        self.evaluations_dir = self.state_dir / "evaluations"
        self.max_concurrent = max_concurrent
        self.stop_grace_s = stop_grace_s
        self.max_restarts = max_restarts
        self.carla_host, self.carla_port = carla_host, carla_port
        self.program = list(program)
        self.env = env
        self._clock = clock
        self._evaluations: dict[str, Evaluation] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: dict[str, asyncio.Task] = {}
        self._lock = asyncio.Lock()
        self._stopping = False

    def out_dir(self, evaluation_id: str) -> Path:
        """The evaluation's --out folder."""
        return self.evaluations_dir / evaluation_id

    def load(self) -> None:
        """Reads every record (before the API serves)."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                evaluation = Evaluation.from_json(path.read_text())
            except (OSError, ValueError, TypeError) as exc:
                log.error("unreadable evaluation record left alone", path=str(path), error=str(exc))
                continue
            self._evaluations[evaluation.evaluation_id] = evaluation

    def _save(self, evaluation: Evaluation) -> None:
        evaluation.updated_at = self._clock()
        self.records_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.records_dir / f".{evaluation.evaluation_id}.json.tmp"
        tmp.write_text(evaluation.to_json())
        os.replace(tmp, self.records_dir / f"{evaluation.evaluation_id}.json")  # a reader never sees half

    def _running(self) -> int:
        return sum(1 for e in self._evaluations.values() if e.state == EvaluationState.RUNNING)

    def _files(self, evaluation: Evaluation) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        out = self.out_dir(evaluation.evaluation_id)
        return _read_json(out / "progress.json"), _read_json(out / "result.json")

    async def open(self) -> None:
        """Settles evaluations left by the previous service process, then starts what is pending."""
        async with self._lock:
            for evaluation in sorted(self._evaluations.values(), key=lambda e: e.sort_key):
                if evaluation.state not in FINAL:
                    await self._recover(evaluation)
            await self._fill()
        EVALUATIONS_RUNNING.set(self._running())

    async def _recover(self, evaluation: Evaluation) -> None:
        if (evaluation.state == EvaluationState.RUNNING and evaluation.pid
                and _process_started(evaluation.pid) == evaluation.pid_started):
            # Left by a service that died without stopping it: not our child, so stop it and start over.
            log.warning("stopping an evaluation process left by the previous evaluator",
                        evaluation_id=evaluation.evaluation_id, pid=evaluation.pid)
            await self._stop_orphan(evaluation.pid, evaluation.pid_started)
        progress, result = self._files(evaluation)
        apply_progress(evaluation, progress, result)
        if evaluation.cancel_requested:
            self._final(evaluation, EvaluationState.CANCELLED, "cancelled")
        elif evaluation.state == EvaluationState.RUNNING and result is not None:
            self._final(evaluation, EvaluationState.SUCCEEDED, "finished while the evaluator was down")
        elif evaluation.state == EvaluationState.RUNNING:
            if evaluation.restarts >= self.max_restarts:
                self._final(evaluation, EvaluationState.FAILED, "the evaluation process was gone after an evaluator "
                            f"restart, and it had been restarted {evaluation.restarts} times already")
            else:
                evaluation.restarts += 1
                evaluation.state, evaluation.pid, evaluation.pid_started = EvaluationState.PENDING, 0, ""
                evaluation.message = ("the evaluation process was gone after an evaluator restart; it starts "
                                      "again from its first route")
                self._save(evaluation)

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

    def _final(self, evaluation: Evaluation, state: EvaluationState, message: str) -> None:
        evaluation.state, evaluation.message, evaluation.finished_at = state, message, self._clock()
        evaluation.pid, evaluation.pid_started = 0, ""
        if state != EvaluationState.RUNNING:
            evaluation.current_agent = ""
        self._save(evaluation)
        EVALUATIONS_FINISHED.labels(state.value).inc()
        log.info("evaluation finished", evaluation_id=evaluation.evaluation_id, state=state.value, message=message)

    async def _fill(self) -> None:
        """Starts pending evaluations, oldest first, while there is room (caller holds the lock)."""
        if self._stopping:
            return
        for evaluation in sorted(self._evaluations.values(), key=lambda e: e.sort_key):
            if self._running() >= self.max_concurrent:
                break
            if evaluation.state == EvaluationState.PENDING and not evaluation.cancel_requested:
                try:
                    await self._launch(evaluation)
                except OSError as exc:  # the program is missing, the folder unwritable
                    self._final(evaluation, EvaluationState.FAILED, f"the evaluation process could not start: {exc}")
        EVALUATIONS_RUNNING.set(self._running())

    async def _launch(self, evaluation: Evaluation) -> None:
        out = self.out_dir(evaluation.evaluation_id)
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("progress.json", "result.json"):  # a restart starts over: no scores of the last launch
            (out / stale).unlink(missing_ok=True)
        with (out / "evaluate.log").open("ab") as logfile:
            proc = await asyncio.create_subprocess_exec(
                *self.program, *evaluate_command(evaluation, out, self.carla_host, self.carla_port),
                stdin=asyncio.subprocess.DEVNULL, stdout=logfile, stderr=asyncio.subprocess.STDOUT, env=self.env,
                start_new_session=True)  # its own process group: a stop reaches the browser or leaderboard too
        evaluation.state, evaluation.pid = EvaluationState.RUNNING, proc.pid
        evaluation.pid_started = _process_started(proc.pid)
        evaluation.launches += 1
        evaluation.started_at = evaluation.started_at or self._clock()
        evaluation.exit_code = None
        evaluation.message = "" if evaluation.launches == 1 else f"started again (launch {evaluation.launches})"
        self._procs[evaluation.evaluation_id] = proc
        self._save(evaluation)
        self._watchers[evaluation.evaluation_id] = asyncio.create_task(self._watch(evaluation, proc))
        log.info("evaluation process started", evaluation_id=evaluation.evaluation_id, pid=proc.pid, out=str(out))

    async def _watch(self, evaluation: Evaluation, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        async with self._lock:
            self._procs.pop(evaluation.evaluation_id, None)
            self._watchers.pop(evaluation.evaluation_id, None)
            out = self.out_dir(evaluation.evaluation_id)
            progress, result = self._files(evaluation)
            apply_progress(evaluation, progress, result)
            evaluation.exit_code = code
            if evaluation.cancel_requested:
                self._final(evaluation, EvaluationState.CANCELLED, f"cancelled ({_describe_exit(code)}); "
                            f"partial results in {out}")
            elif self._stopping and result is None:
                evaluation.state, evaluation.pid, evaluation.pid_started = EvaluationState.PENDING, 0, ""
                evaluation.message = "stopped by an evaluator shutdown; starts again when the evaluator does"
                self._save(evaluation)
            elif code == 0 and result is not None:
                self._final(evaluation, EvaluationState.SUCCEEDED, f"finished; report {out / 'report.md'}")
            elif code == 0:
                self._final(evaluation, EvaluationState.FAILED, "the evaluation process exited 0 without result.json")
            elif code == 2:
                self._final(evaluation, EvaluationState.FAILED, "bad input (exit code 2; not retried): "
                            + _failure(progress, out / "evaluate.log"))
            else:
                self._final(evaluation, EvaluationState.FAILED, f"the evaluation process ended with "
                            f"{_describe_exit(code)}: " + _failure(progress, out / "evaluate.log"))
            await self._fill()
            EVALUATIONS_RUNNING.set(self._running())

    def _find(self, evaluation_id: str) -> Evaluation:
        evaluation = self._evaluations.get(evaluation_id)
        if evaluation is None:
            raise EvaluationNotFound(f"no evaluation {evaluation_id}")
        return evaluation

    async def start(self, evaluation: Evaluation) -> Evaluation:
        """Records the evaluation and starts it when there is room (else it waits as PENDING)."""
        async with self._lock:
            while evaluation.evaluation_id in self._evaluations:
                evaluation = replace(evaluation, evaluation_id=new_evaluation_id())
            if self._running() >= self.max_concurrent:
                evaluation.message = f"waiting: {self._running()} of {self.max_concurrent} evaluation(s) are running"
            self._evaluations[evaluation.evaluation_id] = evaluation
            self._save(evaluation)
            await self._fill()
            return replace(evaluation)

    async def get(self, evaluation_id: str) -> Evaluation:
        """The evaluation; a running one with its progress.json read now."""
        evaluation = self._find(evaluation_id)
        if evaluation.state == EvaluationState.RUNNING:
            apply_progress(evaluation, self._files(evaluation)[0], None)
        return replace(evaluation)

    async def list(self) -> list[Evaluation]:
        """Every evaluation this service knows."""
        return [await self.get(evaluation_id) for evaluation_id in list(self._evaluations)]

    async def cancel(self, evaluation_id: str) -> Evaluation:
        """Pending: cancelled now. Running: SIGTERM, SIGKILL after the grace, then CANCELLED."""
        async with self._lock:
            evaluation = self._find(evaluation_id)
            if evaluation.state in FINAL:
                raise EvaluationFinished(f"evaluation {evaluation_id} already {evaluation.state.value.lower()}; only "
                                         "pending or running evaluations can be cancelled")
            evaluation.cancel_requested = True
            proc = self._procs.get(evaluation_id)
            if proc is None:
                self._final(evaluation, EvaluationState.CANCELLED, "cancelled before it started")
                return replace(evaluation)
            self._save(evaluation)
            watcher = self._watchers.get(evaluation_id)
        await self._terminate(proc)
        if watcher is not None:
            await asyncio.shield(watcher)
        return replace(self._evaluations[evaluation_id])

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.stop_grace_s)
        except TimeoutError:
            log.warning("evaluation process ignored SIGTERM; killing it", pid=proc.pid, grace_s=self.stop_grace_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def close(self) -> None:
        """Service shutdown: stops every evaluation process (SIGTERM, then SIGKILL) and records it."""
        async with self._lock:
            self._stopping = True
            procs = list(self._procs.values())
            watchers = list(self._watchers.values())
        await asyncio.gather(*(self._terminate(p) for p in procs))
        await asyncio.gather(*watchers, return_exceptions=True)
        EVALUATIONS_RUNNING.set(0)


# --- the cluster launcher: Evaluation resources ---------------------------------------------------

PHASES = {"Pending": EvaluationState.PENDING, "Running": EvaluationState.RUNNING,
          "Succeeded": EvaluationState.SUCCEEDED, "Failed": EvaluationState.FAILED,
          "Cancelled": EvaluationState.CANCELLED}
CREATED_AT = f"{GROUP}/created-at"


def evaluation_body(evaluation: Evaluation, carla_image: str) -> dict[str, Any]:
    """The Evaluation resource (spec fields as docs/operator.md and the operator's CRD)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": evaluation.evaluation_id, "annotations": {CREATED_AT: evaluation.created_at},
                     "labels": {"app.kubernetes.io/managed-by": "sd-evaluator"}},
        "spec": {"checkpointUri": evaluation.checkpoint_uri, "benchmark": evaluation.benchmark,
                 "agents": list(evaluation.agents), "carlaImage": carla_image, "cancel": False},
    }


def evaluation_of(obj: dict[str, Any], report_uri: Callable[[str], str] | None = None) -> Evaluation:
    """An evaluation read back from its Evaluation resource (status as the operator writes it)."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}) or {}, obj.get("status", {}) or {}
    agents = [a for a in spec.get("agents") or [] if isinstance(a, str)]
    evaluation = Evaluation(
        evaluation_id=meta.get("name", ""), checkpoint_uri=status.get("checkpointUri") or spec.get("checkpointUri") or "",
        benchmark=spec.get("benchmark", ""), agents=agents,
        state=PHASES.get(status.get("phase", ""), EvaluationState.PENDING),
        created_at=(meta.get("annotations") or {}).get(CREATED_AT) or meta.get("creationTimestamp") or "",
        started_at=status.get("startTime") or "", finished_at=status.get("completionTime") or "",
        cancel_requested=bool(spec.get("cancel")))
    scores = status.get("scores") if isinstance(status.get("scores"), dict) else {}
    if scores:
        apply_progress(evaluation, None, {"agents": agents, "scores": scores})
    if evaluation.state == EvaluationState.SUCCEEDED:
        evaluation.fraction_done = 1.0
        if report_uri is not None:
            evaluation.report_uri = report_uri(evaluation.evaluation_id)
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if isinstance(status.get("message"), str) and status["message"]:
        evaluation.message = status["message"]
    elif conditions:
        last = max(conditions, key=lambda c: c.get("lastTransitionTime") or "")
        evaluation.message = ": ".join(x for x in (last.get("reason"), last.get("message")) if x)
    if evaluation.cancel_requested and evaluation.state not in FINAL:
        evaluation.message = "cancel requested; the operator stops its Job"
    return evaluation


class KubernetesLauncher:
    """Evaluations as Evaluation resources in one namespace, through the Kubernetes API."""

    name = "kubernetes"

    def __init__(self, api: Any, namespace: str, carla_image: str, *, store: Any = None,
                 store_uri: Callable[[str], str] = lambda key: key) -> None:
        self.api = api  # kubernetes.client.CustomObjectsApi
        self.namespace = namespace
        self.carla_image = carla_image
        self.store = store  # where the evaluation process mirrors progress.json
        self.store_uri = store_uri

    def _report_uri(self, evaluation_id: str) -> str:
        return self.store_uri(f"{STORE_PREFIX}{evaluation_id}/report.md")

    async def _call(self, fn: Callable[..., Any], *args: Any, evaluation_id: str = "", **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return await asyncio.to_thread(fn, GROUP, VERSION, self.namespace, PLURAL, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and evaluation_id:
                raise EvaluationNotFound(f"no evaluation {evaluation_id} (no Evaluation {evaluation_id} in "
                                         f"namespace {self.namespace})") from None
            raise LauncherUnavailable(f"the Kubernetes API answered {exc.status} {exc.reason}"
                                      f"{': ' + exc.body[:300] if isinstance(exc.body, str) else ''}") from None
        except (HTTPError, OSError) as exc:
            raise LauncherUnavailable(f"the Kubernetes API is unreachable ({type(exc).__name__}: {exc})") from None

    async def _with_progress(self, evaluation: Evaluation) -> Evaluation:
        if self.store is None or evaluation.state != EvaluationState.RUNNING:
            return evaluation
        with contextlib.suppress(Exception):  # no progress.json yet, or the store is slow: the status stands
            raw = await self.store.get_bytes(f"{STORE_PREFIX}{evaluation.evaluation_id}/progress.json",
                                             max_bytes=1 << 20)
            apply_progress(evaluation, json.loads(raw), None)
        return evaluation

    async def start(self, evaluation: Evaluation) -> Evaluation:
        """Creates the Evaluation; the operator makes its Job."""
        created = await self._call(self.api.create_namespaced_custom_object,
                                   evaluation_body(evaluation, self.carla_image))
        return evaluation_of(created, self._report_uri) if isinstance(created, dict) and created.get("spec") \
            else replace(evaluation)

    async def get(self, evaluation_id: str) -> Evaluation:
        """The evaluation as its resource's status (and, while it runs, its mirrored progress) says."""
        obj = await self._call(self.api.get_namespaced_custom_object, evaluation_id, evaluation_id=evaluation_id)
        return await self._with_progress(evaluation_of(obj, self._report_uri))

    async def list(self) -> list[Evaluation]:
        """Every Evaluation in the namespace (read in pages of the API's own)."""
        evaluations, token = [], None
        while True:
            kwargs = {"limit": 500, **({"_continue": token} if token else {})}
            doc = await self._call(self.api.list_namespaced_custom_object, **kwargs)
            evaluations += [evaluation_of(o, self._report_uri) for o in doc.get("items", [])]
            token = (doc.get("metadata") or {}).get("continue")
            if not token:
                break
        EVALUATIONS_RUNNING.set(sum(1 for e in evaluations if e.state == EvaluationState.RUNNING))
        return evaluations

    async def cancel(self, evaluation_id: str) -> Evaluation:
        """Sets spec.cancel; the operator deletes the Job and sets phase Cancelled."""
        evaluation = await self.get(evaluation_id)
        if evaluation.state in FINAL:
            raise EvaluationFinished(f"evaluation {evaluation_id} already {evaluation.state.value.lower()}; only "
                                     "pending or running evaluations can be cancelled")
        patched = await self._call(self.api.patch_namespaced_custom_object, evaluation_id, {"spec": {"cancel": True}},
                                   evaluation_id=evaluation_id)
        return evaluation_of(patched, self._report_uri) if isinstance(patched, dict) and patched.get("spec") \
            else await self.get(evaluation_id)

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
            raise RuntimeError("SD_EVALUATOR_LAUNCHER=kubernetes needs the Kubernetes API: run in a pod with a "
                               "service account, give ~/.kube/config, or set SD_EVALUATOR_KUBE_API_URL "
                               f"({exc})") from None
    return client.CustomObjectsApi()
