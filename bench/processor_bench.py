"""Processor throughput on one core against the ffmpeg CLI doing the same crop, scale and JPEG encode.

    .venv/bin/python bench/processor_bench.py [--runs 3] [--core 0] [--profile]

A 60 s 1280x720 VP8 session at 30 fps (synthesized once, cached under bench/out/) goes through the
whole processor (validate, align, splice, clean, export to a folder) in a child process pinned to one
core; then, on the same core and file, ``ffmpeg -threads 1 -i video.webm -vf crop=...,scale=256:256
frames/%05d.jpg`` with the processor's own crop. Each runs ``--runs`` times; the best wall time counts.
Peak memory is the child's ru_maxrss. ``--profile`` prints where the processor's time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
SESSION = OUT / "session_720p_60s"
DURATION_S = 60.0


def ensure_session() -> Path:
    """The cached benchmark session, synthesized on first use."""
    from sd_common.session_format.synth import SynthConfig, synth_session
    if not (SESSION / "session" / "manifest.json").is_file():
        print(f"synthesizing a {DURATION_S:g} s 1280x720 session into {SESSION} ...", flush=True)
        synth_session(SESSION, SynthConfig(width=1280, height=720, duration_s=DURATION_S, seed=7))
    return SESSION / "session"


def crop_of(session: Path):
    """The crop plan the processor uses for this session (ffmpeg gets the same)."""
    from sd_common.session_format.spec import parse_manifest
    from sd_processor.config import ProcessorConfig
    from sd_processor.geometry import plan_crop
    m = parse_manifest((session / "manifest.json").read_bytes())
    cfg = ProcessorConfig()
    i = m.camera.intrinsics
    return plan_crop(width=m.recording.width, height=m.recording.height, fx=i.fx, fy=i.fy, cx=i.cx, cy=i.cy,
                     excluded_bottom_rows=m.barcode.cell_px + cfg.barcode_margin_px,
                     output_width=cfg.output_width, output_height=cfg.output_height)


def child(session: Path, out: Path, core: int, profile: bool) -> None:
    """Runs the processor once on one core; prints its wall time, result and peak memory as JSON."""
    os.sched_setaffinity(0, {core})
    from sd_processor.export import DirectorySink
    from sd_processor.pipeline import process_session
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    if profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        result = prof.runcall(process_session, session, DirectorySink(out), attempt_id="bench")
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(18)
    else:
        result = process_session(session, DirectorySink(out), attempt_id="bench")
    wall = time.perf_counter() - started
    print(json.dumps({"wall_s": wall, "frames_decoded": result.frames_decoded, "frames_kept": result.frames_kept,
                      "segments_accepted": result.segments_accepted, "rejected": result.rejected,
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def run_ours(session: Path, core: int, profile: bool = False) -> dict:
    out = OUT / "processor_out"
    proc = subprocess.run([sys.executable, __file__, "--child", str(session), str(out), str(core)]
                          + (["--profile"] if profile else []), capture_output=True, text=True, check=True)
    if profile:
        print(proc.stderr, file=sys.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_ffmpeg(session: Path, crop, core: int) -> dict:
    frames = OUT / "ffmpeg_frames"
    shutil.rmtree(frames, ignore_errors=True)
    frames.mkdir(parents=True)
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", "-i", str(session / "video.webm"),
           "-vf", f"crop={crop.filter},scale={crop.output_width}:{crop.output_height}", str(frames / "%05d.jpg")]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"ffmpeg failed with status {status}: {' '.join(cmd)}")
    return {"wall_s": wall, "frames": len(list(frames.iterdir())), "maxrss_kib": usage.ru_maxrss, "cmd": cmd}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), "--profile" in sys.argv)
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--core", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="profile one processor run (printed to stderr)")
    a = p.parse_args()
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed (apt-get install ffmpeg)", file=sys.stderr)
        return 2
    session = ensure_session()
    crop = crop_of(session)
    if a.profile:
        run_ours(session, a.core, profile=True)
    ours = min((run_ours(session, a.core) for _ in range(a.runs)), key=lambda r: r["wall_s"])
    ff = min((run_ffmpeg(session, crop, a.core) for _ in range(a.runs)), key=lambda r: r["wall_s"])
    ratio = ours["wall_s"] / ff["wall_s"]
    rows = [
        ("processor (validate+align+splice+clean+export)", ours["wall_s"], ours["maxrss_kib"],
         f"{ours['frames_decoded']} decoded, {ours['frames_kept']} exported, {ours['segments_accepted']} segments"),
        ("ffmpeg -threads 1 crop+scale+jpeg", ff["wall_s"], ff["maxrss_kib"], f"{ff['frames']} frames"),
    ]
    print(f"\nsession: {DURATION_S:g} s, 1280x720 VP8 @ 30 fps; crop {crop.filter} -> "
          f"{crop.output_width}x{crop.output_height}; one core (cpu {a.core}); best of {a.runs}\n")
    print("| run | wall s | x real time | peak RSS MiB | output |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, wall, rss, note in rows:
        print(f"| {name} | {wall:.2f} | {DURATION_S / wall:.1f} | {rss / 1024:.0f} | {note} |")
    print(f"\nprocessor / ffmpeg time: {ratio:.2f}  (target <= 1.2); processor real-time factor per core: "
          f"{DURATION_S / ours['wall_s']:.1f}x (target >= 10)")
    print("ffmpeg command: " + " ".join(ff["cmd"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
