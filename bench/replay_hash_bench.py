"""The distances behind the replay check's thresholds: re-encoded copies against genuine other drives.

    .venv/bin/python bench/replay_hash_bench.py [--duration-s 20] [--size 640x360]

Synthesizes one drive (seed 41) and, as the things the check must tell apart:
- copies of it (sd_common.session_format.tamper.reupload_copy): the video re-encoded at a quarter of
  the bitrate, and at twice it, every clock shifted, the input events' times jittered;
- genuine drives: the same city and route driven at 0.8 and 1.15 times the pace (synth's ``pace``),
  and another city and route (seed 42).
Every session is processed with a picture hash on every frame; the script then reports the Hamming
distance of each copy's pictures to the same pictures of the original, of the original's pictures a
few frames apart, and of each genuine drive's pictures to the nearest picture of the original (time
ignored: the worst case); and, sampling as the processor does at several rates, the share of each
segment's sampled pictures the replay check (sd_ingest.replays.match_segment) finds repeated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "replay_hash"


def processed_hashes(session_dir: Path, out: Path) -> list[list[tuple[int, int]]]:
    """(pts_ms, hash) of every kept picture, per segment, from a run hashing every frame."""
    from sd_processor.config import ProcessorConfig
    from sd_processor.export import DirectorySink
    from sd_processor.pipeline import process_session
    result = process_session(session_dir, DirectorySink(out), attempt_id="bench",
                             config=ProcessorConfig(frame_hashes_per_s=240.0))
    assert not result.rejected, result.problems
    doc = json.loads((out / "segments.json").read_text())
    return [[(t, int(h, 16)) for t, h in zip(s["frame_hash_t_ms"], s["frame_hashes"])] for s in doc["segments"]]


def sample(segment: list[tuple[int, int]], per_s: float) -> list[tuple[int, int]]:
    """The pictures the processor's SegmentSampler picks at ``per_s`` from a segment's every picture."""
    period, out, due = 1000.0 / per_s, [], None
    for t, h in segment:
        if due is None:
            due = t
        if t >= due:
            out.append((t, h))
            while due <= t:
                due += period
    return out


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration-s", type=float, default=20.0)
    p.add_argument("--size", default="640x360")
    p.add_argument("--tolerance-ms", type=float, default=50.0, help="the offset tolerance of the match")
    a = p.parse_args()
    from sd_common.session_format.synth import SynthConfig, synth_session
    from sd_common.session_format.tamper import reupload_copy
    from sd_ingest.replays import FrameHash, IndexedHash, hamming, match_segment

    w, h = (int(v) for v in a.size.split("x"))
    base = SynthConfig(width=w, height=h, duration_s=a.duration_s, seed=41)
    bitrate = int(2_500_000 * w * h / (1280 * 720))
    started = time.perf_counter()
    sessions: dict[str, Path] = {}
    original = synth_session(OUT / "original", base).session_dir
    sessions["original"] = original
    sessions["copy: bitrate/4, shifted 1234 ms, events jittered"] = reupload_copy(
        original, OUT / "copy_low" / "session", bitrate=bitrate // 4, shift_ms=1234, event_jitter_ms=3.0)
    sessions["copy: bitrate x2"] = reupload_copy(original, OUT / "copy_high" / "session", bitrate=bitrate * 2)
    for name, cfg in (("genuine: same route, pace 0.8", SynthConfig(**{**base.__dict__, "pace": 0.8})),
                      ("genuine: same route, pace 1.15", SynthConfig(**{**base.__dict__, "pace": 1.15})),
                      ("genuine: other city and route", SynthConfig(**{**base.__dict__, "seed": 42}))):
        sessions[name] = synth_session(OUT / name.split(":")[1].strip().replace(" ", "_").replace(",", ""),
                                       cfg).session_dir
    hashes = {name: processed_hashes(d, OUT / "processed" / str(k)) for k, (name, d) in enumerate(sessions.items())}
    (OUT / "hashes.json").write_text(json.dumps(hashes))
    print(f"{len(sessions)} sessions of {a.duration_s:g} s at {a.size} made and processed in "
          f"{time.perf_counter() - started:.0f} s\n")

    orig = hashes["original"]
    flat = [x for seg in orig for x in seg]
    by_t = dict(flat)
    print("| pair | pictures | p50 bits | p95 | p99 | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in [n for n in hashes if n.startswith("copy")]:
        shift = 1234 if "shifted" in name else 0
        d = [hamming(hv, by_t[t - shift]) for seg in hashes[name] for t, hv in seg if t - shift in by_t]
        print(f"| {name} vs the same picture of the original | {len(d)} | {pct(d, 50):.0f} | {pct(d, 95):.0f} | "
              f"{pct(d, 99):.0f} | {max(d)} |")
    for lag in (1, 2, 4, 8):
        d = [hamming(flat[i][1], flat[i + lag][1]) for i in range(len(flat) - lag)]
        print(f"| original vs itself {lag} frame(s) later | {len(d)} | {pct(d, 50):.0f} | {pct(d, 95):.0f} | "
              f"{pct(d, 99):.0f} | {max(d)} |")
    for name in [n for n in hashes if n.startswith("genuine")]:
        d = [min(hamming(hv, o) for _, o in flat) for seg in hashes[name] for _, hv in sample(seg, 4.0)]
        print(f"| {name}: each picture (4/s) vs the nearest of the original | {len(d)} | {pct(d, 50):.0f} | "
              f"{pct(d, 95):.0f} | p1 {pct(d, 1):.0f} | min {min(d)} |")

    print("\nShare of each segment's sampled pictures repeating the original at one offset "
          "(segments with >= 4 samples; min / max over segments):\n")
    print("| rate /s | max bits | " + " | ".join(n for n in hashes if n != "original") + " |")
    print("| ---: | ---: |" + " ---: |" * (len(hashes) - 1))
    for per_s in (1.0, 2.0, 4.0):
        index = [IndexedHash("original", t, hv) for seg in orig for t, hv in sample(seg, per_s)]
        for k in (4, 6, 8, 10):
            cells = []
            for name, segs in hashes.items():
                if name == "original":
                    continue
                shares = []
                for seg in segs:
                    q = [FrameHash(t, hv) for t, hv in sample(seg, per_s)]
                    if len(q) < 4:
                        continue
                    m = match_segment(q, index, max_distance=k, min_share=0.0, min_matches=1,
                                      tolerance_ms=a.tolerance_ms)
                    shares.append(m.matched / m.sampled if m else 0.0)
                cells.append(f"{min(shares):.2f}-{max(shares):.2f}" if shares else "-")
            print(f"| {per_s:g} | {k} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
