"""The whole loop on this machine: autopilot demonstrations → dataset versions → CILRS → closed-loop scores.

    .venv/bin/python bench/loop_bench.py [--minutes 1,2,4] [--drive-s 60] [--size 320x180]
                                         [--steps 300] [--benchmark city-20] [--write-results]

Starts the local stack as `make run` does (`sdctl stack up`, on free ports, state in --out), then for
each data size in --minutes (cumulative: the versions nest, each holds every session driven so far):
drives autopilot sessions of the real game in headless Chromium (`web/e2e/drive.mjs`, one seed per
session) until the accepted segments reach that many minutes, waits for ingest and the processor to
finish each one, snapshots a version (`sdctl dataset create`), trains a small CILRS on it on CPU
(`sdctl train`, the same config and step count for every size), and evaluates the checkpoint with
`sdctl evaluate --checkpoint … --benchmark …` (the model, the game's autopilot and the constant-throttle
agent on the same routes). It writes --out/loop.json and, with --write-results, bench/loop_bench.json
and the "The whole loop" section of bench/RESULTS.md.

Each step is a function here, so tests/e2e/test_loop_short.py runs the same steps on a short drive.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.stack starts the stack exactly as the stack tests do

BIN = Path(sys.executable).parent
DRIVE = REPO / "web" / "e2e" / "drive.mjs"
RESULTS_MD = REPO / "bench" / "RESULTS.md"
RESULTS_JSON = REPO / "bench" / "loop_bench.json"
SECTION = "## The whole loop"
# The generated part of the section ends here; what follows it (a reading of the numbers) is kept.
END = "<!-- end of bench/loop_bench.py output -->"
AGENTS = ("model", "autopilot", "constant-throttle")

# The small CPU training run every data size gets: the tiny CILRS of the trainer's tests (ResNet-18 at
# base width 8) at 64x64 input, batch 16, no loader workers beyond one (2 shared cores). Standing
# frames are drawn as often pulling away as holding (docs/training.md, "Sampling"): with uniform
# draws the network trained on these demonstrations never pulls away from the start.
SMALL_TRAIN = {
    "model": {"backbone": "resnet18", "base_width": 8, "image_height": 64, "image_width": 64},
    "data": {"batch_size": 16, "num_workers": 1, "sampling": "standing"},
    "device": "cpu",
    "log_every_steps": 10,
}


class LoopError(RuntimeError):
    """A step of the loop did not do what it must (a drive not accepted, a session not processed …)."""


class EvaluateUnavailable(LoopError):
    """This checkout's sdctl has no `evaluate` command yet."""


@dataclass
class Timer:
    """Wall seconds since it was made."""

    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    @property
    def s(self) -> float:
        return round(time.monotonic() - self.started, 1)


def train_config(steps: int) -> dict:
    """SMALL_TRAIN with the step count; one validation and one checkpoint, at the end."""
    return {**SMALL_TRAIN, "max_steps": steps, "val_every_steps": steps, "checkpoint_every_steps": steps}


def sdctl(*args: str, env: dict[str, str] | None = None, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """Runs `sdctl ARGS`, output captured."""
    return subprocess.run([str(BIN / "sdctl"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout_s, check=False)


def sdctl_json(*args: str, env: dict[str, str] | None = None, timeout_s: float = 600) -> dict | list:
    """`sdctl ARGS --json` parsed; LoopError with its output if it fails."""
    run = sdctl(*args, "--json", env=env, timeout_s=timeout_s)
    if run.returncode != 0:
        raise LoopError(f"sdctl {' '.join(args)} exited {run.returncode}:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    return json.loads(run.stdout)


def start(state: Path, env: dict[str, str] | None = None):
    """The local stack (`sdctl stack up`) on free ports, state in `state`; call .stop() when done."""
    from tests.stack import start_stack

    return start_stack(state, env)


def drive(url: str, out: Path, *, seed: int, duration_s: float, size: str, timeout_s: float = 300) -> dict:
    """One autopilot session of the real game in headless Chromium, uploaded; the game's result.json.

    LoopError unless the game shows the session as accepted.
    """
    run = subprocess.run(["node", str(DRIVE), "--url", url, "--out", str(out), "--seed", str(seed),
                          "--duration", f"{duration_s:g}", "--size", size, "--timeout", f"{timeout_s:g}"],
                         capture_output=True, text=True, timeout=timeout_s + 60, check=False)
    result_path = out / "result.json"
    if run.returncode != 0 or not result_path.is_file():
        log = (out / "console.log").read_text()[-3000:] if (out / "console.log").is_file() else ""
        raise LoopError(f"drive (seed {seed}) failed, exit {run.returncode}:\n{run.stderr[-2000:]}\n{log}")
    result = json.loads(result_path.read_text())
    if result.get("verdict") != "accepted":
        raise LoopError(f"drive (seed {seed}) was not accepted: {json.dumps(result)[:2000]}")
    return result


def wait_processed(session_id: str, port_offset: int, timeout_s: float = 600, poll_s: float = 4) -> dict:
    """The ingest's catalog record of the session once it is PROCESSED; LoopError if it ends otherwise."""
    deadline = time.monotonic() + timeout_s
    record: dict = {}
    while time.monotonic() < deadline:
        record = sdctl_json("catalog", "show", session_id, "--port-offset", str(port_offset), timeout_s=60)
        state = record["catalog_state"].removeprefix("CATALOG_STATE_")
        if state == "PROCESSED":
            return record
        if state in ("REJECTED", "FAILED"):
            raise LoopError(f"session {session_id} ended {state}: {record.get('last_error') or record.get('problems')}")
        time.sleep(poll_s)
    raise LoopError(f"session {session_id} was not processed within {timeout_s:.0f} s (last: {record})")


def create_version(port_offset: int, store_root: Path, name: str, val_fraction: float) -> dict:
    """`sdctl dataset create` over every accepted segment so far; the version and its manifest's totals."""
    made = sdctl_json("dataset", "create", "--name", name, "--val-fraction", f"{val_fraction:g}",
                      "--port-offset", str(port_offset))
    d = made["dataset"]
    manifest = json.loads((store_root / d["manifest_uri"]).read_text())
    train = manifest["splits"]["train"]
    return {"dataset_id": d["dataset_id"], "name": d["name"], "sessions": int(d["sessions"]),
            "segments": int(d["segments"]), "frames": int(d["frames"]), "minutes": round(float(d["hours"]) * 60, 3),
            "train_frames": int(train["frames"]), "train_minutes": round(float(train["hours"]) * 60, 3),
            "val_segments": int(d["val_segments"])}


def train(dataset_id: str, store_root: Path, out: Path, run_id: str, config: dict) -> dict:
    """`sdctl train` in the foreground on CPU, the version read from the stack's store; its result.json."""
    env = dict(os.environ, SD_STORE_BACKEND="local", SD_STORE_ROOT=str(store_root))
    summary = sdctl_json("train", "--dataset", dataset_id, "--config-json", json.dumps(config),
                         "--out", str(out), "--run-id", run_id, env=env, timeout_s=3600)
    result = json.loads(Path(summary["result"]).read_text())
    return {"run_id": run_id, "checkpoint_uri": result["checkpoint_uri"], "step": int(result["step"]),
            "val_loss": (result.get("validation") or {}).get("loss"), "out": _shown(out)}


def evaluate_available() -> bool:
    """Whether this checkout's sdctl has the `evaluate` command."""
    return sdctl("evaluate", "--help", timeout_s=120).returncode == 0


def evaluate(checkpoint_uri: str, benchmark: str, out: Path, store_root: Path, *, resume: bool = False) -> dict:
    """`sdctl evaluate --checkpoint URI --benchmark NAME --out DIR`: DS/RC/IP of each agent from its report.json.

    `resume`: go on with the stopped evaluation in `out` (`sdctl evaluate --resume`), keeping its routes.
    """
    if not evaluate_available():
        raise EvaluateUnavailable("sdctl has no `evaluate` command in this checkout")
    # One torch thread: the model and the game's Chromium share two cores, and a second spinning torch
    # thread starves the renderer (the network's outputs are bitwise the same with 1 or 2 threads here).
    env = dict(os.environ, SD_STORE_BACKEND="local", SD_STORE_ROOT=str(store_root), SD_EVALUATOR_TORCH_THREADS="1")
    run = sdctl("evaluate", "--checkpoint", checkpoint_uri, "--benchmark", benchmark, "--out", str(out),
                *(["--resume"] if resume else []), env=env, timeout_s=6 * 3600)
    if run.returncode != 0:
        raise LoopError(f"sdctl evaluate exited {run.returncode}:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    return read_scores(out)


def read_scores(out: Path) -> dict:
    """DS/RC/IP, km and routes of each agent, from the evaluation's `out/<agent>/report.json`."""
    scores = {}
    for agent in AGENTS:
        report = json.loads((out / agent / "report.json").read_text())
        lb = report["leaderboard"]
        scores[agent] = {"DS": lb["driving_score"], "RC": lb["route_completion"], "IP": lb["infraction_penalty"],
                         "km_driven": report["km_driven"], "routes": report["routes_evaluated"]}
    return scores


def run_loop(a: argparse.Namespace) -> dict:
    """The benchmark: every data size's version, training and evaluation, with wall times.

    --out/loop.json is rewritten after every session and every data size. With --resume a run that was
    stopped goes on from it: the same stack state (its store and catalog), the sessions already driven,
    the sizes already evaluated, and the routes already driven of the size it was evaluating; the wall
    times are then sums over the runs (`runs` counts them).
    """
    total = Timer()
    out = Path(a.out).resolve()
    progress = out / "loop.json"
    command = " ".join(["python", "bench/loop_bench.py", *(x for x in sys.argv[1:] if x != "--resume")])
    doc: dict = {"command": command,
                 "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                 "recording": {"size": a.size, "drive_s": a.drive_s}, "train_config": train_config(a.steps),
                 "benchmark": a.benchmark, "sessions": [], "sizes": [], "runs": 1, "total_wall_s": 0.0}
    if a.resume and progress.is_file():
        before = json.loads(progress.read_text())
        def plain(d: dict) -> dict:  # what must match; --write-results may come only with the last run
            return {"command": d.get("command", "").replace(" --write-results", ""),
                    **{k: d.get(k) for k in ("recording", "train_config", "benchmark")}}

        if plain(before) != plain(doc):
            raise LoopError(f"--resume: {progress} is a run of another command or config: {plain(before)}")
        doc = {**before, "command": command, "runs": int(before.get("runs", 1)) + 1}
        print(f"resuming: {len(doc['sessions'])} sessions, {len(doc['sizes'])} sizes done", flush=True)
    else:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    earlier_wall_s = float(doc.get("total_wall_s", 0.0))

    def save() -> None:
        doc["total_wall_s"] = round(earlier_wall_s + total.s, 1)
        progress.write_text(json.dumps(doc, indent=1))

    targets = sorted(float(m) for m in a.minutes.split(","))
    done = {e["target_minutes"] for e in doc["sizes"]}
    stack = start(out / "stack")
    store = stack.state / "store"
    try:
        seed = a.seed + len(doc["sessions"])
        version = doc.get("last_version")
        train_min = version["train_minutes"] if version and version["val_segments"] else 0.0
        for target in targets:
            if target in done:
                continue
            # The trainer validates every run, so a version needs a validation session besides the
            # training ones: the data sizes are minutes of the training split.
            while train_min < target:
                t = Timer()
                result = drive(stack.url, out / "drives" / f"seed-{seed}", seed=seed, duration_s=a.drive_s, size=a.size)
                sid = result["result"]["sessionId"]
                drive_wall = t.s
                record = wait_processed(sid, stack.offset)
                doc["sessions"].append({"seed": seed, "session_id": sid, "drive_wall_s": drive_wall,
                                        "processed_after_s": round(t.s - drive_wall, 1),
                                        "segments_accepted": record["segments_accepted"],
                                        "segments_rejected": record["segments_rejected"]})
                print(f"session {sid} (seed {seed}): {record['segments_accepted']} segments accepted, "
                      f"{record['segments_rejected']} rejected, {t.s:.0f} s", flush=True)
                seed += 1
                version = create_version(stack.offset, store, f"loop-{target:g}min", a.val_fraction)
                train_min = version["train_minutes"] if version["val_segments"] else 0.0
                doc["last_version"] = version
                save()
            if version is None or version["name"] != f"loop-{target:g}min":
                # Resumed with enough sessions already driven for this size: its own version of them.
                version = create_version(stack.offset, store, f"loop-{target:g}min", a.val_fraction)
            entry: dict = {"target_minutes": target, "version": version}
            print(f"version {version['dataset_id'][:12]}: {version['minutes']:.2f} min, {version['frames']} frames",
                  flush=True)
            t = Timer()
            entry["train"] = train(version["dataset_id"], store, out / "training" / f"{target:g}min",
                                   f"loop-{target:g}min", train_config(a.steps))
            entry["train"]["wall_s"] = t.s
            print(f"trained {entry['train']['step']} steps in {t.s:.0f} s: {entry['train']['checkpoint_uri']}", flush=True)
            t = Timer()
            eval_dir = out / "evaluation" / f"{target:g}min"
            try:
                # A stopped run's evaluation of this size goes on route by route (the checkpoint is the same:
                # a finished training run resumes at its last step).
                entry["scores"] = evaluate(entry["train"]["checkpoint_uri"], a.benchmark, eval_dir, store,
                                           resume=a.resume and (eval_dir / "progress.json").is_file())
                entry["evaluate_wall_s"] = t.s
            except EvaluateUnavailable as exc:
                entry["scores"] = None
                entry["evaluate_error"] = str(exc)
                print(f"not evaluated: {exc}", flush=True)
            doc["sizes"].append(entry)
            save()
    finally:
        stack.stop(signal.SIGTERM, timeout_s=60)
    doc.pop("last_version", None)
    save()
    return doc


def _shown(path: Path) -> str:
    """A path as results show it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _fmt(v: float | None, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def render_section(doc: dict, date: str, targets: list[float] | None = None) -> str:
    """The Markdown section of bench/RESULTS.md for one run of this benchmark.

    `targets`: the data sizes the command asks for; those with no row yet are named as not run.
    """
    cfg = doc["train_config"]
    m = cfg["model"]
    lines = [
        f"{SECTION} — `{doc['command']}`", "",
        f"{date}. Data sizes are minutes of the training split; one session is held out for validation. The local stack (`sdctl stack up`), autopilot sessions of the game in headless Chromium "
        f"({doc['recording']['size']} recordings, {doc['recording']['drive_s']:g} s each, one seed per session) "
        "uploaded, ingested and processed, then for each data size a dataset version of every session so far "
        f"(`sdctl dataset create`), `sdctl train` on CPU ({m['backbone']} at base width {m['base_width']}, "
        f"{m['image_height']}x{m['image_width']} input, batch {cfg['data']['batch_size']}, {cfg['max_steps']} steps "
        f"for every size) and `sdctl evaluate --checkpoint … --benchmark {doc['benchmark']}`.", "",
        "| data (min) | train (min) | frames | sessions | train steps | train wall s | model DS | RC | IP "
        "| autopilot DS | RC | IP | constant DS | RC | IP |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in doc["sizes"]:
        v, t, s = e["version"], e["train"], e.get("scores") or {}
        cells = [f"{v['minutes']:.2f}", f"{v['train_minutes']:.2f}", str(v["frames"]), str(v["sessions"]),
                 str(t["step"]), f"{t['wall_s']:.0f}"]
        for agent in AGENTS:
            sc = s.get(agent) or {}
            cells += [_fmt(sc.get("DS"), 2), _fmt(sc.get("RC"), 2), _fmt(sc.get("IP"), 3)]
        lines.append("| " + " | ".join(cells) + " |")
    drive_s = sum(x["drive_wall_s"] for x in doc["sessions"])
    runs = int(doc.get("runs", 1))
    over = f", summed over {runs} runs of the command (the later ones with --resume)" if runs > 1 else ""
    lines += ["", f"Total wall time {doc['total_wall_s'] / 60:.1f} min{over} ({len(doc['sessions'])} sessions driven in "
              f"{drive_s / 60:.1f} min of wall time). Per-session and per-step details: `bench/loop_bench.json`."]
    done = {e["target_minutes"] for e in doc["sizes"] if "target_minutes" in e}
    not_run = [t for t in (targets or []) if t not in done]
    if not_run:
        sizes = ", ".join(f"{t:g}" for t in not_run)
        lines += ["", f"Not run yet: the {sizes}-minute size(s). The run had not reached them when this was "
                  "written; the same command with `--resume` goes on with it. These rows are missing, not filled in."]
    missing = [e for e in doc["sizes"] if e.get("scores") is None]
    if missing:
        lines += ["", f"Not evaluated: {missing[0].get('evaluate_error')} — the DS/RC/IP columns stay empty "
                  "until it is; nothing is filled in by hand."]
    prose = [textwrap.fill(line, 105) if line and not line.startswith("|") else line for line in lines]
    return "\n".join(prose + [END]) + "\n"


def write_results(doc: dict, date: str, md: Path = RESULTS_MD, js: Path = RESULTS_JSON,
                  targets: list[float] | None = None) -> None:
    """bench/loop_bench.json and the section of bench/RESULTS.md (replaced if it is there, else appended)."""
    js.write_text(json.dumps(doc, indent=1) + "\n")
    text = md.read_text()
    section = render_section(doc, date, targets)
    start_at = text.find(SECTION)
    if start_at < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end_marker = text.find(END, start_at)
        end_section = text.find("\n## ", start_at + len(SECTION))
        if end_marker >= 0 and (end_section < 0 or end_marker < end_section):
            text = text[:start_at] + section.removesuffix("\n") + text[end_marker + len(END):]
        else:
            text = text[:start_at] + section + (text[end_section:] if end_section >= 0 else "")
    md.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", default="1,2,4", help="data sizes in minutes, comma-separated (cumulative)")
    p.add_argument("--drive-s", type=float, default=60, help="seconds of each autopilot session")
    p.add_argument("--size", default="320x180", help="recording size WxH (the evaluation renders at it)")
    p.add_argument("--steps", type=int, default=300, help="training steps for every data size")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of sessions for validation (at least one: the trainer validates every run)")
    p.add_argument("--benchmark", default="city-20")
    p.add_argument("--seed", type=int, default=101, help="seed of the first session; each next one adds 1")
    p.add_argument("--out", default=str(REPO / ".run" / "loop-bench"))
    p.add_argument("--write-results", action="store_true", help="write bench/loop_bench.json and RESULTS.md")
    p.add_argument("--resume", action="store_true",
                   help="go on from --out/loop.json of a stopped run of the same command (see run_loop)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: report --out/loop.json as it stands (a run still going, or stopped)")
    a = p.parse_args(argv)
    targets = sorted(float(m) for m in a.minutes.split(","))
    if a.report_only:
        doc = json.loads((Path(a.out).resolve() / "loop.json").read_text())
        doc.pop("last_version", None)
    else:
        doc = run_loop(a)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    if a.write_results:
        write_results(doc, date, targets=targets)
    print(render_section(doc, date, targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
