"""`python -m sd_evaluator.evaluate`: drives a checkpoint and its baselines through one benchmark
(docs/evaluation.md, "Running an evaluation").

    python -m sd_evaluator.evaluate --checkpoint URI --benchmark NAME --out DIR [--evaluation-id ID]
                                    [--agents model,autopilot,constant-throttle]
                                    [--carla-host H --carla-port P] [--resume]

Every agent drives the same routes with the same camera (the checkpoint's), one after the other, through
the runner of the benchmark's kind (RUNNERS). The folder gets `<agent>/results.json` (the leaderboard's
schema) and `<agent>/report.*` per agent, `progress.json` after every route, the side-by-side
`report.json` / `report.md` / plot, and `result.json`; every file is mirrored to the object store under
`evaluations/<ID>/`. Exit status: 0 done, 2 bad input (named in progress.json and the termination log;
not worth retrying), 143 stopped by SIGTERM (or Ctrl-C) between two steps, anything else may be retried.

`--resume` goes on with a stopped evaluation in the same --out folder (city benchmarks): it must be the
same benchmark, checkpoint and agents (progress.json says), each agent keeps the routes it recorded and
drives the rest (city.runner.run_city).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from sd_common.objectstore import InvalidKey, ObjectNotFound, make_store
from sd_common.settings import StoreSettings
from sd_evaluator.agents import (
    AGENT_NAMES,
    AUTOPILOT,
    CONSTANT,
    MODEL,
    Agent,
    ConstantThrottleAgent,
    GameAutopilot,
    RouteProgress,
)
from sd_evaluator.benchmarks import CARLA, CITY, ResolvedBenchmark, UnknownBenchmark, resolve
from sd_evaluator.report import ComparisonError, build_comparison, build_report, write_comparison, write_report
from sd_evaluator.results import Results, ResumeMismatch, RouteRecord, read_results
from sd_evaluator.route_file import read_route_file
from sd_evaluator.runs import EvaluationRequestInvalid, check_evaluation_id, new_evaluation_id
from sd_evaluator.scoring import Protocol, global_statistics

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TERMINATED = 143
STORE_PREFIX = "evaluations/"
TERMINATION_LOG_BYTES = 4096


class EvaluationProcessSettings(BaseSettings):
    """Settings of one evaluation process (`SD_EVALUATOR_*`), beside the evaluator service's own."""

    model_config = SettingsConfigDict(env_prefix="SD_EVALUATOR_", extra="ignore", frozen=True)

    # Kubernetes reads a container's termination message here; written when the file exists (a pod)
    # or when this setting is given explicitly.
    termination_log: Path = Path("/dev/termination-log")
    # torch's intra-op threads for the model (0: torch's default, one per core). Where the city's
    # Chromium shares the cores, 1 leaves it one: spinning torch threads starve the renderer, which
    # made steps many times slower on a loaded 2-core machine (bench/RESULTS.md, "The whole loop").
    torch_threads: int = 0


class EvaluationInputError(ValueError):
    """The command line asks for something that cannot run: the message names the argument."""


class EvaluationStopped(Exception):
    """SIGTERM arrived; the runner stopped between two steps."""


@dataclass
class AgentRun:
    """What a runner gets beside the benchmark: the agent, its folder, the camera and how to report."""

    agent: Agent
    out_dir: Path
    camera: Any | None
    checkpoint: str
    carla_host: str
    carla_port: int
    progress: Callable[[RouteProgress], None]
    stop: threading.Event
    resume: bool = False

    @property
    def agent_config(self) -> dict[str, Any]:
        """What a leaderboard agent file reads (the checkpoint it loads, and its camera)."""
        if self.agent.name == MODEL:
            from sd_evaluator.carla.runner import model_agent_config

            return model_agent_config(self.checkpoint, self.camera)
        return {"agent": self.agent.name}


def _run_city(benchmark: Any, run: AgentRun) -> Results:
    from sd_evaluator.city.runner import run_city

    return run_city(benchmark, run.agent, run.out_dir, camera=run.camera, progress=run.progress, stop=run.stop,
                    resume=run.resume)


def _run_carla(benchmark: Any, run: AgentRun) -> Results:
    from sd_evaluator.carla.runner import run_leaderboard

    if run.resume:
        raise EvaluationInputError("--resume: only city benchmarks resume; run the CARLA benchmark again")
    return run_leaderboard(benchmark, run.agent.name, run.out_dir, agent_config=run.agent_config,
                           carla_host=run.carla_host, carla_port=run.carla_port, progress=run.progress,
                           stop=run.stop)


# The runner of each benchmark kind (benchmarks.SOURCES has the same keys); each writes
# out_dir/results.json and out_dir/routes.xml and returns the Results.
RUNNERS: dict[str, Callable[[Any, AgentRun], Results]] = {CITY: _run_city, CARLA: _run_carla}
# The baselines every model evaluation of a kind runs beside it: the game's autopilot exists only in the city.
BASELINES: dict[str, tuple[str, ...]] = {CITY: (AUTOPILOT, CONSTANT), CARLA: (CONSTANT,)}


def load_checkpoint_agent(checkpoint: str) -> Agent:
    """The trained model as an agent (sd_evaluator.policy)."""
    from sd_evaluator.policy import CheckpointAgent

    return CheckpointAgent.load(checkpoint, store_settings=StoreSettings())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of docs/evaluation.md."""
    p = argparse.ArgumentParser(prog="python -m sd_evaluator.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="", help="the checkpoint: a file, a store key or s3:// URI")
    p.add_argument("--benchmark", required=True, help="a benchmark name (city-20, bench2drive-220 …)")
    p.add_argument("--out", type=Path, default=None, help="the evaluation's folder (default .run/evaluations/<id>)")
    p.add_argument("--evaluation-id", default="", help="its name (default ev-<random>); the store prefix")
    p.add_argument("--agents", default="", help=f"comma-separated, of {', '.join(AGENT_NAMES)} "
                                                "(default: the model and every baseline of the benchmark)")
    p.add_argument("--carla-host", default="127.0.0.1")
    p.add_argument("--carla-port", type=int, default=2000)
    p.add_argument("--resume", action="store_true",
                   help="go on with the stopped evaluation in --out (same benchmark, checkpoint and agents)")
    return p.parse_args(argv)


def choose_agents(spec: str, kind: str) -> list[str]:
    """The agents to run, in report order; the model only with every baseline its benchmark kind has."""
    baselines = BASELINES.get(kind, (CONSTANT,))
    if not spec.strip():
        return [MODEL, *baselines]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in AGENT_NAMES]
    if unknown:
        raise EvaluationInputError(f"--agents: unknown agent(s) {', '.join(unknown)}; known: {', '.join(AGENT_NAMES)}")
    if len(set(names)) != len(names):
        raise EvaluationInputError(f"--agents: {spec!r} names an agent twice")
    if AUTOPILOT in names and AUTOPILOT not in baselines:
        raise EvaluationInputError(f"--agents: the game's autopilot drives only in the city, not on {kind} benchmarks")
    missing = [b for b in baselines if b not in names]
    if MODEL in names and missing:
        raise EvaluationInputError(f"--agents: the model is evaluated only beside its baselines; add "
                                   f"{', '.join(missing)}")
    return [n for n in AGENT_NAMES if n in names]


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def store_uri(settings: StoreSettings, key: str) -> str:
    """How other parts name an object: s3://bucket/key on S3, the bare key in the embedded store."""
    return f"s3://{settings.bucket}/{key}" if settings.backend == "s3" else key


class EvaluationMirror:
    """Copies the evaluation's files to `evaluations/<id>/` in the store, one at a time, from one thread
    with its own event loop (runners may call progress from inside theirs)."""

    def __init__(self, settings: StoreSettings, evaluation_id: str, out_dir: Path):
        self.settings = settings
        self.prefix = f"{STORE_PREFIX}{evaluation_id}/"
        self.out_dir = out_dir
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluation-mirror")
        self._loop = asyncio.new_event_loop()
        self._store = self._pool.submit(make_store, settings).result()

    def key(self, relative: str) -> str:
        """The store key of a folder-relative name."""
        return self.prefix + relative

    def upload(self, relative: str) -> None:
        """Copies the file as it is now and waits for the copy."""
        data = (self.out_dir / relative).read_bytes()
        kind = "application/json" if relative.endswith(".json") else (
            "image/png" if relative.endswith(".png") else "text/markdown" if relative.endswith(".md")
            else "application/octet-stream")
        coro = self._store.put_bytes(self.key(relative), data, content_type=kind)
        self._pool.submit(self._loop.run_until_complete, coro).result()

    def upload_all(self) -> list[str]:
        """Every file of the folder (progress.json and result.json last), in a stable order."""
        files = sorted(p.relative_to(self.out_dir).as_posix() for p in self.out_dir.rglob("*")
                       if p.is_file() and not p.name.startswith("."))
        last = [f for f in ("progress.json", "result.json") if f in files]
        ordered = [f for f in files if f not in last] + last
        for relative in ordered:
            self.upload(relative)
        return ordered

    def close(self) -> None:
        """Closes the store and stops the thread."""
        try:
            self._pool.submit(self._loop.run_until_complete, self._store.close()).result()
        finally:
            self._pool.shutdown(wait=True)
            self._loop.close()


def _summary(records: list[RouteRecord], routes_total: int) -> dict[str, Any]:
    stats = global_statistics(records, routes_total)
    means = stats.global_record.scores_mean
    return {"driving_score": means["score_composed"], "route_completion": means["score_route"],
            "infraction_penalty": means["score_penalty"], "km_driven": round(stats.km_driven, 3)}


@dataclass
class ProgressFile:
    """progress.json: the state, the agent driving now, routes done per agent and each agent's scores so
    far (a route not yet driven counts 0, as in the final means)."""

    path: Path
    doc: dict[str, Any]
    mirror: EvaluationMirror | None = None
    records: dict[str, list[RouteRecord]] = field(default_factory=dict)

    def write(self, **changes: Any) -> None:
        """Updates and rewrites the file (and its copy in the store)."""
        self.doc.update(changes, updated_at=time.time())
        agents = self.doc["per_agent"]
        done = sum(a["routes_done"] for a in agents.values())
        planned = sum(a["routes_total"] or 0 for a in agents.values())
        self.doc["routes_done"] = done
        self.doc["fraction_done"] = round(done / planned, 6) if planned else 0.0
        _write_atomically(self.path, json.dumps(self.doc, indent=1).encode())
        if self.mirror is not None:
            self.mirror.upload(self.path.name)

    def route_done(self, p: RouteProgress) -> None:
        """One route of one agent finished (its record is None when the route crashed)."""
        entry = self.doc["per_agent"][p.agent]
        records = self.records.setdefault(p.agent, [])
        if isinstance(p.record, RouteRecord):
            records.append(p.record)
        entry.update(state="running", routes_done=p.route_index + 1, routes_total=p.routes_total,
                     **_summary(records, p.routes_total))
        for other in self.doc["per_agent"].values():  # every agent drives the same routes
            other["routes_total"] = other["routes_total"] or p.routes_total
        last = {"agent": p.agent, "route_index": p.route_index, "route_id": p.route_id,
                "driving_score": p.record.scores["score_composed"] if isinstance(p.record, RouteRecord) else None}
        self.write(state="running", agent=p.agent, last_route=last)
        # One line per route on stderr: what `sdctl evaluate` shows as it runs.
        if isinstance(p.record, RouteRecord):
            sc = p.record.scores
            route = (f"DS {sc['score_composed']:.2f} RC {sc['score_route']:.2f} IP {sc['score_penalty']:.3f} "
                     f"{p.record.status}")
        else:
            route = "no record (the route crashed)"
        print(f"{p.agent:<17} route {p.route_index + 1}/{p.routes_total} {p.route_id}: {route} | so far DS "
              f"{entry['driving_score']:.2f} over {p.routes_total} routes, {entry['km_driven']:.3f} km",
              file=sys.stderr, flush=True)


class RunnerOutputMissing(RuntimeError):
    """A runner returned without writing the files of the contract (results.json, routes.xml)."""


def _route_file_digest(path: Path) -> str:
    if not path.is_file():
        raise RunnerOutputMissing(f"the runner wrote no {path}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_resumable(path: Path, benchmark: str, checkpoint: str, agents: list[str]) -> None:
    """EvaluationInputError unless `path` is the progress of an evaluation of the same benchmark,
    checkpoint and agents (what --resume may go on with)."""
    if not path.is_file():
        raise EvaluationInputError(f"--resume: {path} does not exist; there is no evaluation to go on with")
    try:
        before = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EvaluationInputError(f"--resume: {path} is not JSON ({exc})") from None
    want = {"benchmark": benchmark, "checkpoint_uri": checkpoint, "agents": agents}
    got = {k: before.get(k) for k in want}
    if got != want:
        raise EvaluationInputError(f"--resume: {path} is an evaluation of {got}, not {want}")


def evaluate(args: argparse.Namespace, evaluation_id: str, out: Path, stop: threading.Event,
             load_model: Callable[[str], Agent], mirror: EvaluationMirror | None,
             store_settings: StoreSettings) -> dict[str, Any]:
    """Runs every agent on the benchmark and writes the reports; returns result.json's content."""
    bench: ResolvedBenchmark = resolve(args.benchmark)
    if bench.kind not in RUNNERS:
        raise EvaluationInputError(f"--benchmark {args.benchmark}: no runner for {bench.kind} benchmarks")
    agents = choose_agents(args.agents, bench.kind)
    if MODEL in agents and not args.checkpoint:
        raise EvaluationInputError("--checkpoint is required to evaluate the model")
    protocol = Protocol(getattr(bench.spec, "protocol", Protocol.LEADERBOARD_2_0))
    if args.resume:
        _check_resumable(out / "progress.json", bench.name, args.checkpoint, agents)
    progress = ProgressFile(out / "progress.json", {
        "evaluation_id": evaluation_id, "state": "starting", "benchmark": bench.name, "benchmark_kind": bench.kind,
        "checkpoint_uri": args.checkpoint, "agents": agents, "agent": "",
        "per_agent": {a: {"state": "pending", "routes_done": 0, "routes_total": None} for a in agents},
    }, mirror)
    progress.write()

    made: dict[str, Agent] = {AUTOPILOT: GameAutopilot(), CONSTANT: ConstantThrottleAgent()}
    camera = None
    if MODEL in agents:
        try:
            made[MODEL] = load_model(args.checkpoint)
        except (FileNotFoundError, ObjectNotFound, InvalidKey, ValueError, KeyError) as exc:
            # AgentError is a ValueError: a corrupt checkpoint, one without a camera, a bad URI
            raise EvaluationInputError(f"--checkpoint {args.checkpoint}: {type(exc).__name__}: {exc}") from exc
        camera = getattr(made[MODEL], "camera", None)

    results: dict[str, Results] = {}
    digests: dict[str, str] = {}
    for name in agents:
        if stop.is_set():
            raise EvaluationStopped(f"stopped by SIGTERM before {name} drove")
        agent_dir = out / name
        agent_dir.mkdir(parents=True, exist_ok=True)
        progress.doc["per_agent"][name]["state"] = "running"
        progress.write(state="running", agent=name)
        print(f"evaluation {evaluation_id}: {name} drives {bench.name}", file=sys.stderr, flush=True)
        run = AgentRun(made[name], agent_dir, camera, args.checkpoint, args.carla_host, args.carla_port,
                       progress.route_done, stop, resume=args.resume)
        RUNNERS[bench.kind](bench.spec, run)
        if stop.is_set():
            raise EvaluationStopped(f"stopped by SIGTERM while {name} drove; its partial results are in {agent_dir}")
        if not (agent_dir / "results.json").is_file():
            raise RunnerOutputMissing(f"the {bench.kind} runner wrote no {agent_dir / 'results.json'}")
        results[name] = read_results(agent_dir / "results.json")  # the file as written is what is reported
        digests[name] = _route_file_digest(agent_dir / "routes.xml")
        total = results[name].total_routes or len(results[name].records)
        progress.records[name] = list(results[name].records)
        progress.doc["per_agent"][name].update(state="done", routes_done=len(results[name].records),
                                               routes_total=total, **_summary(results[name].records, total))
        progress.write()
    if len(set(digests.values())) != 1:
        raise ComparisonError(f"the agents drove different route files (sha256 per agent: {digests})")

    progress.write(state="reporting", agent="")
    shutil.copyfile(out / agents[0] / "routes.xml", out / "routes.xml")
    route_file = read_route_file(out / "routes.xml")
    for name in agents:
        write_report(build_report(results[name], route_file, protocol, bench.expected_routes,
                                  f"{name}/results.json"), out / name)
    comparison = build_comparison(results, route_file, protocol, bench.expected_routes,
                                  BASELINES.get(bench.kind, (CONSTANT,)))
    comparison["evaluation_id"], comparison["benchmark"] = evaluation_id, bench.name
    comparison["checkpoint_uri"] = args.checkpoint
    write_comparison(comparison, out)

    per_agent = {a: {k: s[k] for k in ("driving_score", "route_completion", "infraction_penalty", "km_driven",
                                       "infractions_per_km_total", "bench2drive_driving_score",
                                       "bench2drive_success_rate", "bench2drive_efficiency_pct")}
                 for a, s in comparison["scores"].items()}
    scores: dict[str, Any] = {"agents": per_agent}
    if MODEL in per_agent:  # the headline a `kubectl get evaluations` column shows: the model's own
        scores.update({k: per_agent[MODEL][k] for k in ("driving_score", "route_completion",
                                                         "infraction_penalty", "km_driven")})
    report_key = f"{STORE_PREFIX}{evaluation_id}/report.md"
    result = {
        "evaluation_id": evaluation_id, "state": "succeeded", "benchmark": bench.name,
        "benchmark_kind": bench.kind, "checkpoint_uri": args.checkpoint, "agents": agents,
        "route_file": comparison["route_file"], "route_file_sha256": comparison["route_file_sha256"],
        "towns": comparison["towns"], "route_count": comparison["route_count"],
        "routes_in_run": comparison["routes_in_run"], "scores": scores,
        "report": str(out / "report.md"), "report_uri": store_uri(store_settings, report_key) if mirror else "",
    }
    progress.write(state="succeeded", scores=scores, report_uri=result["report_uri"])
    return result


def write_termination_log(path: Path, doc: dict[str, Any]) -> None:
    """The document as compact JSON, at most 4 KiB (per-agent detail dropped first, the JSON kept whole)."""
    data = json.dumps(doc, separators=(",", ":")).encode()
    if len(data) > TERMINATION_LOG_BYTES:
        slim = {k: doc.get(k) for k in ("evaluation_id", "state", "benchmark", "report_uri", "reason", "message")}
        scores = doc.get("scores") or {}
        slim["scores"] = {k: v for k, v in scores.items() if k != "agents"}
        data = json.dumps(slim, separators=(",", ":")).encode()
    path.write_bytes(data[:TERMINATION_LOG_BYTES])


def _fail(out: Path, evaluation_id: str, reason: str, message: str, settings: EvaluationProcessSettings,
          mirror: EvaluationMirror | None, state: str = "failed") -> None:
    """progress.json (and its store copy) and the termination log say why it failed or stopped."""
    doc = {"evaluation_id": evaluation_id, "state": state, "reason": reason, "message": message[-2000:],
           "updated_at": time.time()}
    try:
        path = out / "progress.json"
        before = json.loads(path.read_text()) if path.is_file() else {}
        before.update(doc)
        out.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, json.dumps(before, indent=1).encode())
        if mirror is not None:
            mirror.upload_all()
        if settings.termination_log.exists() or "SD_EVALUATOR_TERMINATION_LOG" in os.environ:
            write_termination_log(settings.termination_log, doc)
    except Exception as exc:  # noqa: BLE001 - the folder or the store may be the problem; the exit status still tells
        print(f"evaluation {evaluation_id}: could not record the failure: {exc}", file=sys.stderr)


# Not worth retrying: the same command fails the same way. A runner's own errors (and a result file it
# wrote wrongly) may be retried.
BAD_INPUT = (EvaluationInputError, UnknownBenchmark, ResumeMismatch)


def main(argv: list[str] | None = None, *, load_model: Callable[[str], Agent] = load_checkpoint_agent) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    settings = EvaluationProcessSettings()
    if settings.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.torch_threads)
    stop = threading.Event()
    # SIGTERM (a cancel, a Job's end) and Ctrl-C both stop between two steps, keeping what was driven.
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    previous_int = signal.signal(signal.SIGINT, lambda *_: stop.set())
    evaluation_id = args.evaluation_id or new_evaluation_id()
    try:
        check_evaluation_id(evaluation_id)
    except EvaluationRequestInvalid as exc:  # no folder is made for a name that is not one
        print(f"evaluation: {exc}", file=sys.stderr, flush=True)
        if settings.termination_log.exists() or "SD_EVALUATOR_TERMINATION_LOG" in os.environ:
            write_termination_log(settings.termination_log, {"state": "failed", "reason": type(exc).__name__,
                                                             "message": str(exc)})
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        return EXIT_BAD_INPUT
    out = args.out or Path(".run/evaluations") / evaluation_id
    mirror = None
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
            store_settings = StoreSettings()
            mirror = EvaluationMirror(store_settings, evaluation_id, out)
            result = evaluate(args, evaluation_id, out, stop, load_model, mirror, store_settings)
            _write_atomically(out / "result.json", json.dumps(result, indent=1).encode())
            mirror.upload_all()
        except EvaluationStopped as exc:
            print(f"evaluation {evaluation_id}: {exc}", file=sys.stderr, flush=True)
            _fail(out, evaluation_id, "Terminated", str(exc), settings, mirror, state="stopped")
            return EXIT_TERMINATED
        except BAD_INPUT as exc:
            print(f"evaluation {evaluation_id}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            _fail(out, evaluation_id, type(exc).__name__, str(exc), settings, mirror)
            return EXIT_BAD_INPUT
        except Exception as exc:  # noqa: BLE001 - the exit status must say "may be retried"
            traceback.print_exc()
            _fail(out, evaluation_id, type(exc).__name__, str(exc), settings, mirror)
            return EXIT_FAILED
        if settings.termination_log.exists() or "SD_EVALUATOR_TERMINATION_LOG" in os.environ:
            write_termination_log(settings.termination_log, result)
        model = result["scores"].get("driving_score")
        print(json.dumps({"evaluation_id": evaluation_id, "report": result["report"],
                          "driving_score": {a: s["driving_score"] for a, s in result["scores"]["agents"].items()},
                          **({"model_driving_score": model} if model is not None else {})}), flush=True)
        return EXIT_OK
    finally:
        if mirror is not None:
            mirror.close()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


if __name__ == "__main__":
    sys.exit(main())
