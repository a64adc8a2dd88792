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

import contextlib
import json
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
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

log = structlog.get_logger()

GROUP, VERSION, PLURAL, KIND = "scalediffusion.io", "v1alpha1", "evaluations", "Evaluation"
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
class Evaluation(ProcessRecord):
    """One evaluation as the API shows it, plus what its launcher needs to supervise it."""

    evaluation_id: str
    checkpoint_uri: str
    benchmark: str
    agents: list[str]
    state: EvaluationState = EvaluationState.PENDING
    created_at: str = field(default_factory=now_utc)
    updated_at: str = ""
    started_at: str = ""
    finished_at: str = ""
    fraction_done: float = 0.0
    current_agent: str = ""
    scores: list[AgentScores] = field(default_factory=list)
    route_file: str = ""
    report_uri: str = ""
    message: str = ""
    # subprocess launcher only (and ProcessRecord's pid, exit code, cancel flag and launches)
    restarts: int = 0

    def loaded(self) -> None:
        """The state back as an EvaluationState, the scores as AgentScores."""
        self.state = EvaluationState(self.state)
        agent_keys = {f.name for f in fields(AgentScores)}
        self.scores = [AgentScores(**{k: v for k, v in s.items() if k in agent_keys})
                       for s in self.scores if isinstance(s, dict)]

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


def apply_progress(evaluation: Evaluation, progress: dict[str, Any] | None, result: dict[str, Any] | None) -> None:
    """Copies the agent driving now, the fraction done, each agent's scores and the report from
    progress.json / result.json (as the evaluation process writes them) into the evaluation."""
    for doc in (progress, result):
        if not doc:
            continue
        if (fraction := as_number(doc.get("fraction_done"))) is not None:
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
                    if (number := as_number(source.get(key))) is not None:
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


def page(evaluations: Sequence[Evaluation], page_size: int, page_token: str) -> tuple[list[Evaluation], str]:
    """One page, newest first, after the evaluation the token names; and the next token ("" at the end)."""
    return page_of(evaluations, page_size, page_token, EvaluationRequestInvalid)


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


def evaluate_command(evaluation: Evaluation, out_dir: Path, carla_host: str, carla_port: int) -> list[str]:
    """The evaluation process's arguments after the program (docs/evaluation.md)."""
    args = ["--evaluation-id", evaluation.evaluation_id, "--benchmark", evaluation.benchmark,
            "--agents", ",".join(evaluation.agents), "--out", str(out_dir),
            "--carla-host", carla_host, "--carla-port", str(carla_port)]
    return (["--checkpoint", evaluation.checkpoint_uri] if evaluation.checkpoint_uri else []) + args


EVALUATION_WORDING = LauncherWording(
    waiting="waiting: {running} of {max_concurrent} evaluation(s) are running",
    not_started="the evaluation process could not start: {exc}",
    cancelled="cancelled ({exit}); partial results in {out}",
    interrupted="stopped by an evaluator shutdown; starts again when the evaluator does",
    succeeded="finished; report {out}/report.md",
    no_result="the evaluation process exited 0 without result.json",
    bad_input="bad input (exit code 2; not retried): {reason}",
    crashed="the evaluation process ended with {exit}: {reason}",
    recovered_cancelled="cancelled",
    finished_while_down="finished while the evaluator was down",
    gone_too_often=("the evaluation process was gone after an evaluator restart, and it had been restarted "
                    "{r.restarts} times already"),
    gone_restarting="the evaluation process was gone after an evaluator restart; it starts again from its first route",
    not_found="no evaluation {id}",
    already_final="evaluation {id} already {state}; only pending or running evaluations can be cancelled",
)


class SubprocessLauncher(ProcessLauncher[Evaluation]):
    """Runs each evaluation as a child process and keeps its record in `<state_dir>/records/<id>.json`;
    its files are in `<state_dir>/evaluations/<id>/` (the queue, cancel and restart mechanics are
    sd_common.process_runs')."""

    record_type = Evaluation
    states = EvaluationState
    id_field, restarts_field = "evaluation_id", "restarts"
    noun, process_noun, log_name = "evaluation", "evaluation", "evaluate.log"
    wording = EVALUATION_WORDING
    not_found_error, finished_error = EvaluationNotFound, EvaluationFinished
    running_gauge, finished_counter = EVALUATIONS_RUNNING, EVALUATIONS_FINISHED

    def __init__(self, state_dir: Path, *, max_concurrent: int = 1, stop_grace_s: float = 10.0,
                 max_restarts: int = 1, carla_host: str = "127.0.0.1", carla_port: int = 2000,
                 program: Sequence[str] = (sys.executable, "-m", "sd_evaluator.evaluate"),
                 env: dict[str, str] | None = None, clock: Callable[[], str] = now_utc) -> None:
        self.state_dir = Path(state_dir)
        self.evaluations_dir = self.state_dir / "evaluations"
        super().__init__(self.state_dir / "records", self.evaluations_dir, max_concurrent=max_concurrent,
                         stop_grace_s=stop_grace_s, program=program, env=env, clock=clock)
        self.max_restarts = max_restarts
        self.carla_host, self.carla_port = carla_host, carla_port

    @property
    def _evaluations(self) -> dict[str, Evaluation]:
        return self._records

    @property
    def restart_limit(self) -> int:
        """max_restarts."""
        return self.max_restarts

    def command(self, record: Evaluation, out: Path) -> list[str]:
        """evaluate_command's arguments."""
        return evaluate_command(record, out, self.carla_host, self.carla_port)

    def new_id(self, record: Evaluation) -> str:
        """Another evaluation id."""
        return new_evaluation_id()

    def apply_progress(self, record: Evaluation, progress: dict[str, Any] | None,
                       result: dict[str, Any] | None) -> None:
        """The module's apply_progress."""
        apply_progress(record, progress, result)

    def prepare_out(self, out: Path) -> None:
        """A restart starts over: no scores of the last launch."""
        for stale in ("progress.json", "result.json"):
            (out / stale).unlink(missing_ok=True)

    def on_launch(self, record: Evaluation) -> None:
        """The message says which launch this is."""
        record.message = "" if record.launches == 1 else f"started again (launch {record.launches})"

    def on_final(self, record: Evaluation) -> None:
        """No agent drives any more."""
        record.current_agent = ""


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
    evaluation.message = condition_message(status, evaluation.cancel_requested, evaluation.state in FINAL)
    return evaluation


class KubernetesLauncher(ResourceLauncher[Evaluation]):
    """Evaluations as Evaluation resources in one namespace, through the Kubernetes API (the calls are
    sd_common.process_runs.ResourceLauncher's)."""

    group, version, plural, states = GROUP, VERSION, PLURAL, EvaluationState
    missing = "no evaluation {id} (no Evaluation {id} in namespace {namespace})"
    already_final = EVALUATION_WORDING.already_final
    not_found_error, finished_error, unavailable_error = EvaluationNotFound, EvaluationFinished, LauncherUnavailable
    running_gauge = EVALUATIONS_RUNNING

    def __init__(self, api: Any, namespace: str, carla_image: str, *, store: Any = None,
                 store_uri: Callable[[str], str] = lambda key: key) -> None:
        super().__init__(api, namespace)
        self.carla_image = carla_image
        self.store = store  # where the evaluation process mirrors progress.json
        self.store_uri = store_uri

    def _report_uri(self, evaluation_id: str) -> str:
        return self.store_uri(f"{STORE_PREFIX}{evaluation_id}/report.md")

    def body(self, record: Evaluation) -> dict[str, Any]:
        """evaluation_body with the launcher's CARLA image."""
        return evaluation_body(record, self.carla_image)

    def record_of(self, obj: dict[str, Any]) -> Evaluation:
        """evaluation_of with the store's report URI."""
        return evaluation_of(obj, self._report_uri)

    async def with_progress(self, evaluation: Evaluation) -> Evaluation:
        """While it runs, the progress.json the process mirrors to the store (when there is a store)."""
        if self.store is None or evaluation.state != EvaluationState.RUNNING:
            return evaluation
        with contextlib.suppress(Exception):  # no progress.json yet, or the store is slow: the status stands
            raw = await self.store.get_bytes(f"{STORE_PREFIX}{evaluation.evaluation_id}/progress.json",
                                             max_bytes=1 << 20)
            apply_progress(evaluation, json.loads(raw), None)
        return evaluation


def kubernetes_api(api_url: str) -> Any:
    """A CustomObjectsApi: the given API server, else in-cluster credentials, else ~/.kube/config."""
    return custom_objects_api(api_url, "SD_EVALUATOR")
