"""Runs the leaderboard's own evaluator (leaderboard_evaluator.py) against a CARLA server as a child process.

`run_leaderboard` builds its command line and environment from settings (the leaderboard, scenario
runner and CARLA checkouts), writes the agent configuration, starts it, relays a `RouteProgress` for each
route record that appears in its result file (the leaderboard rewrites the file after every route), stops
it on request (SIGTERM to its process group, SIGKILL after a grace period; the records written so far
are kept), and finally reads the file and finalizes it with the project's scorer: a child that died
before every route had a record makes the entry `Crashed`, a stopped run `Invalid`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sd_evaluator.agents import AUTOPILOT, CONSTANT, MODEL, AgentError, RouteProgress
from sd_evaluator.camera_input import CameraSpec
from sd_evaluator.carla.benchmarks import LeaderboardBenchmark, resolve
from sd_evaluator.results import Results, ResultsFormatError, read_results, write_results
from sd_evaluator.scoring import finalize_results

AGENT_FILES: dict[str, Path] = {
    MODEL: Path(__file__).with_name("agent.py"),
    CONSTANT: Path(__file__).with_name("constant_agent.py"),
}
RESULTS_NAME = "results.json"
ROUTES_NAME = "routes.xml"
AGENT_CONFIG_NAME = "agent_config.json"
LOG_NAME = "leaderboard.log"
LIVE_NAME = "live_results.txt"


class LeaderboardSettings(BaseSettings):
    """Where the leaderboard's code is and how its evaluator is run (`SD_EVALUATOR_*`)."""

    model_config = SettingsConfigDict(env_prefix="SD_EVALUATOR_", extra="ignore", frozen=True)

    leaderboard_root: Path | None = None  # the folder holding leaderboard/leaderboard_evaluator.py and data/
    scenario_runner_root: Path | None = None  # scenario_runner's checkout (the `srunner` package)
    carla_root: Path | None = None  # a CARLA release; its PythonAPI/carla has the `agents` package
    python: str = sys.executable
    traffic_manager_port: int = Field(8000, ge=1, le=65535)
    client_timeout_s: float = Field(300.0, gt=0)  # the leaderboard's --timeout (CARLA client calls)
    poll_interval_s: float = Field(1.0, gt=0)
    stop_grace_s: float = Field(30.0, ge=0)


class LeaderboardRunError(RuntimeError):
    """The leaderboard could not be started (a missing checkout or evaluator script, an unknown agent)."""


def model_agent_config(checkpoint: str, camera: CameraSpec, *, device: str = "cpu",
                       gnss: str = "carla-0.9.16") -> dict[str, Any]:
    """The model agent's configuration (carla/agent.py): the checkpoint, its camera and the GNSS convention."""
    return {"checkpoint": str(checkpoint), "camera": camera.to_dict(), "device": device, "gnss": gnss}


def agent_file(agent_name: str) -> Path:
    """The leaderboard agent file of an agent name."""
    if agent_name == AUTOPILOT:
        raise AgentError("the game's autopilot exists only in the city; a CARLA run has no privileged baseline here")
    try:
        return AGENT_FILES[agent_name]
    except KeyError:
        raise AgentError(f"unknown agent {agent_name!r} for a CARLA run; known: {', '.join(AGENT_FILES)}") from None


def evaluator_script(settings: LeaderboardSettings) -> Path:
    """leaderboard_evaluator.py of the checkout."""
    if settings.leaderboard_root is None:
        raise LeaderboardRunError("SD_EVALUATOR_LEADERBOARD_ROOT is not set: a CARLA run needs the leaderboard checkout")
    script = Path(settings.leaderboard_root) / "leaderboard" / "leaderboard_evaluator.py"
    if not script.is_file():
        raise LeaderboardRunError(f"{script} is missing: SD_EVALUATOR_LEADERBOARD_ROOT must be the leaderboard checkout")
    return script


def build_command(settings: LeaderboardSettings, *, routes: Path, agent: Path, agent_config: Path,
                  results: Path, carla_host: str, carla_port: int, resume: bool = False,
                  debug_checkpoint: Path | None = None, extra_args: tuple[str, ...] = ()) -> list[str]:
    """The leaderboard_evaluator command line (SENSORS track, one repetition, no recording, no debug)."""
    command = [
        settings.python, str(evaluator_script(settings)),
        f"--routes={routes}", "--repetitions=1", "--track=SENSORS",
        f"--agent={agent}", f"--agent-config={agent_config}",
        f"--checkpoint={results}",
        f"--host={carla_host}", f"--port={int(carla_port)}",
        f"--traffic-manager-port={settings.traffic_manager_port}",
        f"--timeout={settings.client_timeout_s:g}", "--debug=0", "--record=",
    ]
    if debug_checkpoint is not None:
        command.append(f"--debug-checkpoint={debug_checkpoint}")
    # argparse's type=bool makes any non-empty value true: the flag is only given to resume.
    if resume:
        command.append("--resume=1")
    return command + list(extra_args)


def build_env(settings: LeaderboardSettings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: PYTHONPATH with the leaderboard, scenario runner and CARLA's PythonAPI first."""
    env = dict(os.environ if base is None else base)
    paths = []
    if settings.leaderboard_root is not None:
        env["LEADERBOARD_ROOT"] = str(settings.leaderboard_root)
        paths.append(str(settings.leaderboard_root))
    if settings.scenario_runner_root is not None:
        env["SCENARIO_RUNNER_ROOT"] = str(settings.scenario_runner_root)
        paths.append(str(settings.scenario_runner_root))
    if settings.carla_root is not None:
        env["CARLA_ROOT"] = str(settings.carla_root)
        paths.append(str(Path(settings.carla_root) / "PythonAPI" / "carla"))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _read_partial(path: Path) -> Results | None:
    """The result file as it is now, or None while it is missing or being rewritten."""
    try:
        return read_results(path)
    except (FileNotFoundError, ResultsFormatError, json.JSONDecodeError, ValueError):
        return None


def _stop_child(proc: subprocess.Popen, grace_s: float) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def run_leaderboard(benchmark: LeaderboardBenchmark | str, agent_name: str, out_dir: str | Path, *,
                    agent_config: dict[str, Any], carla_host: str, carla_port: int,
                    progress: Callable[[RouteProgress], None] | None = None,
                    stop: threading.Event | None = None, settings: LeaderboardSettings | None = None,
                    resume: bool = False) -> Results:
    """Runs `agent_name` on the benchmark's routes against the CARLA server at host:port; returns the results
    (also in out_dir/results.json, the leaderboard's schema; out_dir/routes.xml is the route file driven)."""
    settings = settings or LeaderboardSettings()
    bench = resolve(benchmark) if isinstance(benchmark, str) else benchmark
    routes = bench.read_routes(settings.leaderboard_root)
    agent = agent_file(agent_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(routes.path, out / ROUTES_NAME)
    config_path = out / AGENT_CONFIG_NAME
    config_path.write_text(json.dumps(agent_config, indent=1))
    results_path = out / RESULTS_NAME
    if not resume:
        results_path.unlink(missing_ok=True)
    command = build_command(settings, routes=out / ROUTES_NAME, agent=agent, agent_config=config_path,
                            results=results_path, carla_host=carla_host, carla_port=carla_port, resume=resume,
                            debug_checkpoint=out / LIVE_NAME)
    total = len(routes.routes)
    reported = 0
    stopped = False
    with open(out / LOG_NAME, "ab") as log:
        proc = subprocess.Popen(command, env=build_env(settings), cwd=str(settings.leaderboard_root),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            last_mtime = None
            while True:
                finished = proc.poll() is not None
                mtime = results_path.stat().st_mtime_ns if results_path.exists() else None
                if mtime != last_mtime or finished:
                    last_mtime = mtime
                    partial = _read_partial(results_path)
                    if partial is not None:
                        records = [r for r in partial.records if r.index >= 0]
                        for record in records[reported:]:
                            if progress is not None:
                                progress(RouteProgress(route_index=reported, routes_total=partial.total_routes or total,
                                                       route_id=record.route_id, agent=agent_name, record=record))
                            reported += 1
                if finished:
                    break
                if stop is not None and stop.wait(settings.poll_interval_s):
                    stopped = True
                    _stop_child(proc, settings.stop_grace_s)
                    break
                if stop is None:
                    time.sleep(settings.poll_interval_s)
        except BaseException:
            _stop_child(proc, settings.stop_grace_s)
            raise
    return _final_results(results_path, total, crashed=(proc.returncode != 0 and not stopped), stopped=stopped)


def _final_results(path: Path, total: int, *, crashed: bool, stopped: bool) -> Results:
    results = _read_partial(path)
    if results is None:
        results = Results(progress=[0, total])
    if results.total_routes is None:
        results.progress = [len(results.records), total]
    results.records = [r for r in results.records if r.index >= 0]
    # A run cut short may not have reached the agent's setup, where the leaderboard records the sensors.
    finalize_results(results, sensors_initialized=not (crashed or stopped) or bool(results.sensors), crashed=crashed)
    if crashed:
        results.set_entry_status("Crashed")
    write_results(results, path)
    return results
