"""`sdctl train`: train on a dataset version in the foreground, or start, show, list and cancel runs
of a trainer service over gRPC."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scale_diffusion.trainer.v1 import trainer_pb2 as pb
from scale_diffusion.trainer.v1 import trainer_pb2_grpc
from sd_common.cli.grpc_client import add_target_arguments, call_service, message_dict, target_of

from sd_trainer.runs import RunRequestInvalid, check_dataset_id, new_run_id, parse_overrides

FINAL = {pb.RUN_STATE_SUCCEEDED, pb.RUN_STATE_FAILED, pb.RUN_STATE_CANCELLED}


def _target(a: argparse.Namespace) -> str:
    return target_of(a, "trainer")


def _call(a: argparse.Namespace, fn: Callable[[trainer_pb2_grpc.TrainerServiceStub], object]) -> object | None:
    return call_service("trainer", _target(a), trainer_pb2_grpc.TrainerServiceStub, fn)


def _line(r: dict) -> str:
    state = r["state"].removeprefix("RUN_STATE_")
    text = f"{r['run_id']:<22} {state:<10} step={r['step']:<7} dataset={r['dataset_id'][:12]}"
    if float(r["train_loss"]) or float(r["val_loss"]):
        text += f" train_loss={float(r['train_loss']):.4f} val_loss={float(r['val_loss']):.4f}"
    if r["checkpoint_uri"]:
        text += f"\n  checkpoint {r['checkpoint_uri']}"
    if r["message"]:
        text += f"\n  {r['message']}"
    return text


def _print_run(a: argparse.Namespace, run) -> None:
    print(json.dumps(message_dict(run), indent=1) if a.json else _line(message_dict(run)))


def _validated(a: argparse.Namespace):
    """The config the overrides give, or None after saying what is wrong."""
    try:
        check_dataset_id(a.dataset)
        return parse_overrides(a.config_json)[1]
    except RunRequestInvalid as exc:
        print(f"sdctl train: {exc}", file=sys.stderr)
        return None


def _foreground(a: argparse.Namespace) -> int:
    """Runs the training process here, its progress bar in this terminal, and says where the results are."""
    if not a.dataset:
        print("sdctl train: give --dataset <version id> (or a subcommand: start, show, list, cancel)",
              file=sys.stderr)
        return 2
    if _validated(a) is None:
        return 2
    run_id = a.run_id or new_run_id(a.dataset)
    out = a.out or Path(".run/training") / run_id
    cmd = [sys.executable, "-m", "sd_trainer.train", "--run-id", run_id, "--dataset", a.dataset,
           "--config-json", a.config_json or "{}", "--out", str(out)]
    if a.dataset_root:
        cmd += ["--dataset-root", str(a.dataset_root)]
    print(f"training run {run_id} on {a.dataset} (files in {out})", file=sys.stderr, flush=True)
    # The same terminal: its tqdm bar shows here, Ctrl-C reaches it too. With --json its own result line
    # goes to stderr, so stdout is the one JSON summary below.
    proc = subprocess.Popen(cmd, stdout=sys.stderr if a.json else None)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = proc.wait()  # it checkpoints and exits on the same Ctrl-C
    result_path = Path(out) / "result.json"
    result = json.loads(result_path.read_text()) if code == 0 and result_path.is_file() else None
    if result is None:
        print(f"sdctl train: run {run_id} did not finish (exit code {code}); run the same command with "
              f"--run-id {run_id} to resume it; its files are in {out}", file=sys.stderr)
        return code or 1
    summary = {"run_id": run_id, "out": str(out), "checkpoint_uri": result.get("checkpoint_uri", ""),
               "curves": str(Path(out) / "curves"), "tensorboard": str(Path(out) / "tensorboard"),
               "result": str(result_path)}
    if a.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"run {run_id} finished at step {result.get('step')}\n"
              f"  checkpoint   {summary['checkpoint_uri']}\n  curves       {summary['curves']}/*.png\n"
              f"  tensorboard  {summary['tensorboard']}\n  result       {summary['result']}")
    return 0


def _follow(a: argparse.Namespace, run_id: str, total_steps: int):
    """Polls the run until it ends, with a progress bar of its steps; the last run seen."""
    from tqdm import tqdm

    bar = tqdm(total=total_steps, unit="step", desc=run_id, file=sys.stderr, disable=a.json)
    try:
        while True:
            r = _call(a, lambda s: s.GetTrainingRun(pb.GetTrainingRunRequest(run_id=run_id), timeout=30))
            if r is None:
                return None
            run = r.run
            bar.n = min(run.step, total_steps)
            bar.set_postfix_str(pb.RunState.Name(run.state).removeprefix("RUN_STATE_")
                                + (f" loss={run.train_loss:.4f}" if run.train_loss else ""))
            bar.refresh()
            if run.state in FINAL:
                return run
            time.sleep(a.interval_s)
    finally:
        bar.close()


def _start(a: argparse.Namespace) -> int:
    config = _validated(a)
    if config is None:
        return 2
    r = _call(a, lambda s: s.StartTrainingRun(pb.StartTrainingRunRequest(
        dataset_id=a.dataset, config_json=a.config_json), timeout=60))
    if r is None:
        return 1
    if not a.follow:
        _print_run(a, r.run)
        return 0
    if not a.json:
        print(f"started {r.run.run_id}; following (Ctrl-C stops following, not the run)", file=sys.stderr)
    try:
        run = _follow(a, r.run.run_id, config.max_steps)
    except KeyboardInterrupt:
        return 130
    if run is None:
        return 1
    _print_run(a, run)
    return 0 if run.state == pb.RUN_STATE_SUCCEEDED else 1


def _show(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.GetTrainingRun(pb.GetTrainingRunRequest(run_id=a.run_id), timeout=30))
    if r is None:
        return 1
    _print_run(a, r.run)
    return 0


def _list(a: argparse.Namespace) -> int:
    runs, token = [], ""
    while True:
        r = _call(a, lambda s, t=token: s.ListTrainingRuns(pb.ListTrainingRunsRequest(
            dataset_id=a.dataset, page_size=200, page_token=t), timeout=30))
        if r is None:
            return 1
        runs += list(r.runs)
        token = r.next_page_token
        if not token:
            break
    if a.json:
        print(json.dumps([message_dict(x) for x in runs], indent=1))
    else:
        for x in runs:
            print(_line(message_dict(x)))
        if not runs:
            print("no training runs yet (sdctl train start --dataset <version>)")
    return 0


def _cancel(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.CancelTrainingRun(pb.CancelTrainingRunRequest(run_id=a.run_id), timeout=120))
    if r is None:
        return 1
    _print_run(a, r.run)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p, "trainer")


def _config_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-json", default="", help='overrides of the training config, e.g. \'{"max_steps": 1000}\'')


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``train`` to sdctl's argument parser (handler in ``fn``)."""
    train = subparsers.add_parser(
        "train", help="train CILRS on a dataset version here, or run trainings on the trainer service",
        description="Without a subcommand: train in the foreground with a progress bar. "
                    "With one: talk to the trainer service over gRPC.")
    train.add_argument("--dataset", help="dataset version id (foreground training)")
    _config_json(train)
    train.add_argument("--dataset-root", type=Path,
                       help="read the version from this folder laid out like the store (default: the object store)")
    train.add_argument("--out", type=Path, help="the run's files (default .run/training/<run id>)")
    train.add_argument("--run-id", help="name the run (the same id again resumes it from its newest checkpoint)")
    train.add_argument("--json", action="store_true", help="print the summary as JSON")
    train.set_defaults(fn=_foreground)
    sub = train.add_subparsers(dest="action")

    start = sub.add_parser("start", help="start a run on the trainer service")
    start.add_argument("--dataset", required=True, help="dataset version id")
    _config_json(start)
    start.add_argument("--follow", action="store_true", help="show its progress until it ends")
    start.add_argument("--interval-s", type=float, default=2.0, help="seconds between polls with --follow")
    _common(start)
    start.set_defaults(fn=_start)
    show = sub.add_parser("show", help="one run: state, step, losses, checkpoint")
    show.add_argument("run_id")
    _common(show)
    show.set_defaults(fn=_show)
    lst = sub.add_parser("list", help="runs, newest first")
    lst.add_argument("--dataset", default="", help="only runs of this dataset version")
    _common(lst)
    lst.set_defaults(fn=_list)
    cancel = sub.add_parser("cancel", help="stop a pending or running run")
    cancel.add_argument("run_id")
    _common(cancel)
    cancel.set_defaults(fn=_cancel)
