"""``sdctl synth`` and ``sdctl validate``: make a synthetic session, check any session."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Imported here, not lazily, so that sdctl's guarded import notices a missing media extra (PyAV, OpenCV).
from .synth import CORRUPTIONS, SynthConfig, synth_session
from .validate import validate_session


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``synth`` and ``validate`` subcommands to sdctl's argument parser (handler in ``fn``)."""
    knobs = "\n".join(f"  {name:<26} {k.help} (bare: {k.on_value!r})" for name, k in CORRUPTIONS.items())
    synth = subparsers.add_parser(
        "synth",
        help="write a synthetic session (DIR/session/) and its truth (DIR/truth.json)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"corruptions (--corrupt KNOB[=VALUE], repeatable):\n{knobs}",
    )
    synth.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write into")
    synth.add_argument("--duration-s", type=float, default=3.0)
    synth.add_argument("--width", type=int, default=1280)
    synth.add_argument("--height", type=int, default=720)
    synth.add_argument("--fps", type=float, default=30.0)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--bitrate", type=int, default=None, help="bits/s (default scales with resolution)")
    synth.add_argument("--diffusion", action="store_true", help="log a diffusion view and its latency")
    synth.add_argument("--corrupt", action="append", default=[], metavar="KNOB[=VALUE]",
                       help="break the session on purpose (see the list below)")
    synth.set_defaults(fn=synth_command)

    validate = subparsers.add_parser("validate", help="check a session directory against format v1")
    validate.add_argument("dir", type=Path, metavar="DIR")
    validate.add_argument("--no-deep", dest="deep", action="store_false",
                          help="skip decoding the video (manifest, hashes and logs only)")
    validate.add_argument("--json", action="store_true", help="print the whole report as JSON")
    validate.set_defaults(fn=validate_command)


def _knob_value(name: str, text: str | None) -> Any:
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    on = CORRUPTIONS[name].on_value
    if text is None:
        return on
    if isinstance(on, bool):
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"{name} takes true or false, not {text!r}")
        return text.lower() in ("1", "true", "yes")
    try:
        return type(on)(text)
    except ValueError:
        kind = {int: "an integer", float: "a number"}.get(type(on), type(on).__name__)
        raise ValueError(f"{name} takes {kind}, not {text!r}") from None


def synth_command(args: argparse.Namespace) -> int:
    """Writes a synthetic session; prints its directory and a one-line summary."""
    config = SynthConfig(width=args.width, height=args.height, fps=args.fps, duration_s=args.duration_s,
                         seed=args.seed, bitrate=args.bitrate, diffusion=args.diffusion)
    try:
        for item in args.corrupt:
            name, _, value = item.partition("=")
            config = config.with_corruption(name, _knob_value(name, value if "=" in item else None))
        truth = synth_session(args.out, config)
    except ValueError as exc:
        print(f"sdctl synth: {exc}", file=sys.stderr)
        return 2
    corrupt = ", ".join(f"{k}={v}" for k, v in truth.corruptions.items()) or "none"
    print(truth.session_dir)
    print(f"{truth.frame_count} frames logged, {len(truth.video_frames)} encoded, {config.width}x{config.height} "
          f"@ {config.fps:g} fps, {truth.elapsed_s:.2f} s; corruptions: {corrupt}; "
          f"expected problems: {', '.join(truth.expected_problem_codes) or 'none'}")
    return 0


def validate_command(args: argparse.Namespace) -> int:
    """Validates a session; prints each problem as 'path: message'. Exit 0 if valid, 1 if not."""
    report = validate_session(args.dir, deep=args.deep)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for p in report.problems:
            print(f"{p.path}: {p.message}")
        for p in report.warnings:
            print(f"{p.path}: warning: {p.message}")
        s = report.stats
        verdict = "valid" if report.ok else f"INVALID ({len(report.problems)} problems)"
        decoded = f", {s.frames_decoded} decoded, {s.barcodes_read} barcodes read" if args.deep else ""
        # The summary goes to stderr so stdout stays one 'path: message' line per finding.
        print(f"{args.dir}: {verdict}; {s.frames_logged} frames logged{decoded}; {s.elapsed_s:.2f} s",
              file=sys.stderr)
    return 0 if report.ok else 1
