"""`sdctl evaluate`: evaluate a checkpoint and its baselines here, route by route, or start, show, list and
cancel evaluations of an evaluator service over gRPC."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scale_diffusion.evaluator.v1 import evaluator_pb2 as pb
from scale_diffusion.evaluator.v1 import evaluator_pb2_grpc
from sd_common.cli.grpc_client import add_target_arguments, call_service, message_dict, target_of

from sd_evaluator.runs import new_evaluation_id

FINAL = {pb.EVALUATION_STATE_SUCCEEDED, pb.EVALUATION_STATE_FAILED, pb.EVALUATION_STATE_CANCELLED}
# The evaluation process this command runs in the foreground.
EVALUATE_PROGRAM: list[str] = [sys.executable, "-m", "sd_evaluator.evaluate"]


def _call(a: argparse.Namespace, fn: Callable[[evaluator_pb2_grpc.EvaluatorServiceStub], object]) -> object | None:
    return call_service("evaluator", target_of(a, "evaluator"), evaluator_pb2_grpc.EvaluatorServiceStub, fn)


def _agent_line(name: str, s: dict) -> str:
    return (f"  {name:<17} DS {float(s['driving_score']):7.3f}  RC {float(s['route_completion']):7.3f}  "
            f"IP {float(s['infraction_penalty']):.4f}  km {float(s['km_driven']):.3f}")


def _line(e: dict) -> str:
    state = e["state"].removeprefix("EVALUATION_STATE_")
    text = (f"{e['evaluation_id']:<14} {state:<10} {e['benchmark']:<18} {100 * float(e['progress']):5.1f}% "
            f"agents={','.join(e['agents'])}")
    if e["current_agent"] and state == "RUNNING":
        text += f" driving={e['current_agent']}"
    if e["checkpoint_uri"]:
        text += f"\n  checkpoint {e['checkpoint_uri']}"
    for s in e["agents_summary"]:
        text += "\n" + _agent_line(s["agent"], s) + f"  routes {s['routes_completed']}/{s['routes_total']} {s['state']}"
    if e["report_uri"]:
        text += f"\n  report {e['report_uri']}"
    if e["message"]:
        text += f"\n  {e['message']}"
    return text


def _print(a: argparse.Namespace, evaluation) -> None:
    print(json.dumps(message_dict(evaluation), indent=1) if a.json else _line(message_dict(evaluation)))


def _foreground(a: argparse.Namespace) -> int:
    """Runs the evaluation process here, its route-by-route lines in this terminal, then the summary."""
    if not a.benchmark:
        print("sdctl evaluate: give --benchmark NAME (and --checkpoint URI), or a subcommand: start, show, list, "
              "cancel", file=sys.stderr)
        return 2
    evaluation_id = a.evaluation_id or new_evaluation_id()
    out = a.out or Path(".run/evaluations") / evaluation_id
    cmd = [*EVALUATE_PROGRAM, "--benchmark", a.benchmark, "--out", str(out), "--evaluation-id", evaluation_id,
           "--carla-host", a.carla_host, "--carla-port", str(a.carla_port)]
    if a.checkpoint:
        cmd += ["--checkpoint", a.checkpoint]
    if a.agents:
        cmd += ["--agents", a.agents]
    if a.resume:
        cmd += ["--resume"]
    print(f"evaluation {evaluation_id} on {a.benchmark} (files in {out})", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)  # the same terminal: its route lines show here, Ctrl-C reaches it too
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = proc.wait()  # the same Ctrl-C reached it: it stops between two steps and exits 143
    result_path = Path(out) / "result.json"
    if code != 0 or not result_path.is_file():
        why = {2: "bad input", 143: "stopped"}.get(code, "failed")
        progress = Path(out) / "progress.json"
        detail = json.loads(progress.read_text()).get("message", "") if progress.is_file() else ""
        print(f"sdctl evaluate: evaluation {evaluation_id} {why} (exit code {code}){': ' + detail if detail else ''}; "
              f"its files are in {out}", file=sys.stderr)
        return code or 1
    result = json.loads(result_path.read_text())
    if a.json:
        print(json.dumps({"evaluation_id": evaluation_id, "out": str(out), "report": result["report"],
                          "report_uri": result["report_uri"], "scores": result["scores"]}, indent=1))
        return 0
    print(f"evaluation {evaluation_id}: {result['benchmark']}, {result['routes_in_run']} routes of "
          f"{Path(result['route_file']).name} ({', '.join(result['towns'])})")
    for name, s in result["scores"]["agents"].items():
        print(_agent_line(name, s))
    print(f"  report   {result['report']}\n  result   {result_path}")
    return 0


def _follow(a: argparse.Namespace, evaluation_id: str):
    """Polls the evaluation until it ends, with a bar of the routes driven (all agents); the last one seen."""
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", desc=evaluation_id, file=sys.stderr, disable=a.json,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
    try:
        while True:
            r = _call(a, lambda s: s.GetEvaluation(pb.GetEvaluationRequest(evaluation_id=evaluation_id), timeout=30))
            if r is None:
                return None
            e = r.evaluation
            bar.n = round(100 * e.progress)
            bar.set_postfix_str(pb.EvaluationState.Name(e.state).removeprefix("EVALUATION_STATE_")
                                + (f" {e.current_agent}" if e.current_agent else "")
                                + "".join(f" {s.agent}={s.driving_score:.2f}" for s in e.agents_summary))
            bar.refresh()
            if e.state in FINAL:
                return e
            time.sleep(a.interval_s)
    finally:
        bar.close()


def _start(a: argparse.Namespace) -> int:
    agents = [x.strip() for x in a.agents.split(",") if x.strip()] if a.agents else []
    r = _call(a, lambda s: s.StartEvaluation(pb.StartEvaluationRequest(
        checkpoint_uri=a.checkpoint, benchmark=a.benchmark, agents=agents), timeout=60))
    if r is None:
        return 1
    if not a.follow:
        _print(a, r.evaluation)
        return 0
    if not a.json:
        print(f"started {r.evaluation.evaluation_id}; following (Ctrl-C stops following, not the evaluation)",
              file=sys.stderr)
    try:
        e = _follow(a, r.evaluation.evaluation_id)
    except KeyboardInterrupt:
        return 130
    if e is None:
        return 1
    _print(a, e)
    return 0 if e.state == pb.EVALUATION_STATE_SUCCEEDED else 1


def _show(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.GetEvaluation(pb.GetEvaluationRequest(evaluation_id=a.evaluation_id), timeout=30))
    if r is None:
        return 1
    _print(a, r.evaluation)
    return 0


def _list(a: argparse.Namespace) -> int:
    evaluations, token = [], ""
    while True:
        r = _call(a, lambda s, t=token: s.ListEvaluations(pb.ListEvaluationsRequest(page_size=200, page_token=t),
                                                          timeout=30))
        if r is None:
            return 1
        evaluations += list(r.evaluations)
        token = r.next_page_token
        if not token:
            break
    if a.json:
        print(json.dumps([message_dict(x) for x in evaluations], indent=1))
    else:
        for x in evaluations:
            print(_line(message_dict(x)))
        if not evaluations:
            print("no evaluations yet (sdctl evaluate start --checkpoint URI --benchmark NAME)")
    return 0


def _cancel(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.CancelEvaluation(pb.CancelEvaluationRequest(evaluation_id=a.evaluation_id),
                                              timeout=120))
    if r is None:
        return 1
    _print(a, r.evaluation)
    return 0


def _what(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--checkpoint", default="", help="a checkpoint: a file, a store key or an s3:// URI (a training "
                                                    "run's checkpoint_uri)")
    p.add_argument("--benchmark", required=required, default="", help="a benchmark name, e.g. city-20")
    p.add_argument("--agents", default="", help="comma-separated, of model, autopilot, constant-throttle (default: "
                                                "the model and every baseline of the benchmark)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``evaluate`` to sdctl's argument parser (handler in ``fn``)."""
    ev = subparsers.add_parser(
        "evaluate", help="evaluate a checkpoint beside its baselines here, or run evaluations on the evaluator service",
        description="Without a subcommand: evaluate here, one line per route and agent. "
                    "With one: talk to the evaluator service over gRPC.")
    _what(ev, required=False)
    ev.add_argument("--out", type=Path, help="the evaluation's files (default .run/evaluations/<id>)")
    ev.add_argument("--evaluation-id", default="", help="name the evaluation (default ev-<random>)")
    ev.add_argument("--carla-host", default="127.0.0.1", help="the CARLA server of a CARLA benchmark")
    ev.add_argument("--carla-port", type=int, default=2000)
    ev.add_argument("--json", action="store_true", help="print the summary as JSON")
    ev.add_argument("--resume", action="store_true",
                    help="go on with the stopped evaluation in --out, keeping the routes it recorded (city benchmarks)")
    ev.set_defaults(fn=_foreground)
    sub = ev.add_subparsers(dest="action")

    start = sub.add_parser("start", help="start an evaluation on the evaluator service")
    _what(start, required=True)
    start.add_argument("--follow", action="store_true", help="show its progress until it ends")
    start.add_argument("--interval-s", type=float, default=2.0, help="seconds between polls with --follow")
    add_target_arguments(start, "evaluator")
    start.set_defaults(fn=_start)
    show = sub.add_parser("show", help="one evaluation: state, progress, every agent's scores, the report")
    show.add_argument("evaluation_id")
    add_target_arguments(show, "evaluator")
    show.set_defaults(fn=_show)
    lst = sub.add_parser("list", help="evaluations, newest first")
    add_target_arguments(lst, "evaluator")
    lst.set_defaults(fn=_list)
    cancel = sub.add_parser("cancel", help="stop a pending or running evaluation")
    cancel.add_argument("evaluation_id")
    add_target_arguments(cancel, "evaluator")
    cancel.set_defaults(fn=_cancel)
