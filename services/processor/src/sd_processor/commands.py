"""``sdctl process``: run the processor on one session without the services."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

from .config import LABEL_CONTROLS, ProcessorConfig
from .export import DirectorySink
from .pipeline import ProcessingResult, process_session


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``process`` subcommand to sdctl's argument parser (handler in ``fn``)."""
    p = subparsers.add_parser(
        "process",
        help="align, splice, clean and export one raw session as CILRS segments",
        description="Processes one raw session: a local session directory, or an object-store prefix "
                    "(raw/<session_id>, or s3://<bucket>/raw/<session_id>) read with the SD_STORE_* settings. "
                    "Outputs (docs/dataset-format.md) go to a local folder. Exit status: 0 processed, "
                    "1 rejected (problems printed), 2 could not run.")
    p.add_argument("source", metavar="RAW_SESSION_DIR_OR_URI")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the outputs")
    p.add_argument("--attempt-id", default=None, help="recorded in the outputs (default: a new id)")
    p.add_argument("--session-id", default=None, help="reject the session unless its manifest names this id")
    p.add_argument("--width", type=int, default=256, help="output width (default 256)")
    p.add_argument("--height", type=int, default=256, help="output height (default 256)")
    p.add_argument("--fov-deg", type=float, default=None,
                   help="output horizontal field of view (default: the largest undistorted crop)")
    p.add_argument("--segment-s", type=float, default=5.0, help="segment length in seconds (default 5)")
    p.add_argument("--label-controls", choices=LABEL_CONTROLS, default="shown",
                   help="controls that label a picture: applied while it was shown (default) or at the render "
                        "it was made from; they differ only with the diffusion view")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=process_command)


def process_command(args: argparse.Namespace) -> int:
    """Runs the processor on one session; prints a summary (or JSON) and each problem."""
    try:
        config = ProcessorConfig(output_width=args.width, output_height=args.height, output_fov_deg=args.fov_deg,
                                 segment_s=args.segment_s, min_segment_s=min(2.0, args.segment_s),
                                 label_controls=args.label_controls)
    except ValueError as exc:
        print(f"sdctl process: {exc}", file=sys.stderr)
        return 2
    attempt_id = args.attempt_id or uuid.uuid4().hex
    sink = DirectorySink(args.out)
    source = Path(args.source)
    looks_local = args.source.startswith(("/", "./", "../", "~")) or source.exists()
    if looks_local and not source.expanduser().is_dir():
        print(f"sdctl process: {args.source} is not a session directory", file=sys.stderr)
        return 2
    try:
        if looks_local:
            source = source.expanduser()
            result = process_session(source, sink, config=config, attempt_id=attempt_id,
                                     expected_session_id=args.session_id)
        else:
            from .job import process_from_store_uri
            result = asyncio.run(process_from_store_uri(args.source, sink, config=config, attempt_id=attempt_id,
                                                        expected_session_id=args.session_id))
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not trace back
        from .errors import describe_error
        print(f"sdctl process: {describe_error(exc)}", file=sys.stderr)
        return 2
    _print(result, args)
    return 1 if result.rejected else 0


def _print(result: ProcessingResult, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps({
            "session_id": result.session_id, "attempt_id": result.attempt_id, "rejected": result.rejected,
            "frames_decoded": result.frames_decoded, "frames_kept": result.frames_kept,
            "segments_accepted": result.segments_accepted, "segments_rejected": result.segments_rejected,
            "alignment_mode": result.alignment_mode, "alignment_error_ms": round(result.alignment_error_ms, 3),
            "elapsed_s": result.elapsed_s, "out": str(args.out),
            "problems": [p.to_dict() for p in result.problems]}, indent=1))
        return
    for p in result.problems:
        print(f"{p.path}: {p.message} [{p.code}]")
    verdict = "REJECTED" if result.rejected else "processed"
    print(f"{result.session_id}: {verdict}; {result.frames_decoded} frames decoded, {result.frames_kept} kept, "
          f"{result.segments_accepted} segments accepted, {result.segments_rejected} rejected; alignment "
          f"{result.alignment_mode} (error {result.alignment_error_ms:.1f} ms); {result.elapsed_s:.2f} s -> "
          f"{args.out}", file=sys.stderr)
