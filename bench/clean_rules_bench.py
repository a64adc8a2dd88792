"""Precision and recall of each CLEAN picture rule on a labelled set of sessions.

    .venv/bin/python bench/clean_rules_bench.py [--quick] [--out bench/out/clean_rules]

The labelled set: synthetic sessions whose picture corruptions are known frame by frame. Two kinds
of scene, each at several resolutions, each once clean and once with corruptions:

- ``textured``: the generator's own sessions (``sdctl synth``; its corruption knobs and ground truth).
- ``flat``: the same drives re-rendered with flat-shaded, untextured buildings (no window bands: one
  colour per wall, as the game's boxes are), with the same kinds of corruption applied here, by the
  same recipe as the generator's knobs, and labelled here. ``flat-side`` looks at the walls passing
  by (turned 85 degrees right, 12 up): whole frames of one flat colour with a few edges.

All are encoded at the game's own bitrate (8 Mbit/s at 1280x720, at least 2.5 Mbit/s), as a player's
recording is.

Every session goes through the whole processor with its default configuration. For each rule R:
recall = corrupted-for-R frames flagged R / corrupted-for-R frames; precision = frames flagged R that
were corrupted for R / (those + clean frames flagged R). A corrupted frame that another rule also
flags (a black frame that also counts as flicker) is dropped rightly and is not a false alarm;
``clean lost`` counts clean frames any picture rule dropped. The test
services/processor/tests/test_clean_precision.py runs a small version of this set with thresholds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent
RULES = ("blurred", "frozen", "black", "overexposed", "flicker")
KNOBS = {"blurred": "blur_frames", "black": "black_frames", "overexposed": "overexposed_frames",
         "flicker": "flicker_frames", "frozen": "frozen_frames"}


@dataclass
class Labelled:
    """One processed session of the set: which frame ids were corrupted for which rule, and which were shown."""

    name: str
    session_dir: Path
    labels: dict[int, str]  # frame id -> the rule its corruption is for
    frame_ids: list[int]  # every frame id the video shows
    qc: dict = field(default_factory=dict)


@contextlib.contextmanager
def flat_shading() -> Iterator[None]:
    """The generator's renderer without window bands: every wall is one flat colour."""
    from sd_common.session_format import scene

    saved = scene._WINDOW_RADIUS_M
    scene._WINDOW_RADIUS_M = 0.0
    try:
        yield
    finally:
        scene._WINDOW_RADIUS_M = saved


def game_bitrate(width: int, height: int) -> int:
    """The bitrate the game records at (web/src/media/recorder.ts bitrateFor): 8 Mbit/s at 720p, at least 2.5."""
    return max(2_500_000, round(8e6 * width * height / (1280 * 720)))


def _corruption_plan(n: int, counts: dict[str, int], seed: int) -> dict[int, str]:
    """Frame index -> rule, for ``counts[rule]`` frames each, apart from each other and the ends."""
    rng = np.random.default_rng([seed, 11])
    pool = list(range(8, n - 4))
    rng.shuffle(pool)
    plan: dict[int, str] = {}
    for rule in RULES:
        for _ in range(counts.get(rule, 0)):
            while pool:
                i = pool.pop()
                if all(abs(i - j) > 2 for j in plan):
                    plan[i] = rule
                    break
    return plan


def rerender_flat(session_dir: Path, counts: dict[str, int], seed: int, *, look_deg: float = 0.0,
                  tilt_deg: float = 0.0) -> dict[int, str]:
    """Re-renders a generated session's video flat-shaded from its logged camera poses; returns the labels.

    Each encoded frame is rendered from the pose of the line its barcode names, at the same pts, then
    the corruptions of ``counts`` are applied (before the barcode is drawn, as the generator does).
    ``look_deg`` turns the view to the right of the driving direction and ``tilt_deg`` up: at 85 and
    12 degrees the picture is mostly the flat walls passing by (the log keeps the driving pose).
    """
    from sd_common.session_format import barcode
    from sd_common.session_format.scene import City, Renderer, rotation
    from sd_common.session_format.spec import file_sha256
    from sd_common.session_format.synth import TRUTH_NAME, SynthTruth
    from sd_common.session_format.video import VideoWriter

    truth = SynthTruth.load(session_dir.parent / TRUTH_NAME)
    manifest = json.loads((session_dir / "manifest.json").read_text())
    rec, intr = manifest["recording"], manifest["camera"]["intrinsics"]
    w, h = rec["width"], rec["height"]
    cell = manifest["barcode"]["cell_px"]
    lines = {}
    for raw in (session_dir / "frames.jsonl").read_text().splitlines():
        obj = json.loads(raw)
        lines[obj["frame_id"]] = obj["camera"]
    plan = _corruption_plan(len(truth.video_frames), counts, seed)
    labels: dict[int, str] = {}
    bitrate = game_bitrate(w, h)
    sigma = max(2.5, h / 160)
    previous: np.ndarray | None = None
    video = session_dir / "video.webm"
    with flat_shading(), VideoWriter(video, w, h, bitrate=bitrate, fps_hint=round(rec["fps_target"])) as writer:
        renderer = Renderer(City(manifest["city"]["seed"]), w, h, intr["fx"], intr["fy"], intr["cx"], intr["cy"])
        for k, (fid, pts) in enumerate(truth.video_frames):
            pose = lines[fid]
            view = rotation(pose["yaw_deg"] - look_deg, pose["pitch_deg"] + tilt_deg, pose["roll_deg"])
            image = renderer.render(np.array([pose["x_m"], pose["y_m"], pose["z_m"]]), view).copy()
            rule = plan.get(k)
            if rule == "blurred":
                image = cv2.GaussianBlur(image, (0, 0), sigma)
            elif rule == "black":
                image = np.zeros_like(image)
            elif rule == "overexposed":
                image = cv2.add(image, np.full_like(image, 220))
            elif rule == "flicker":
                image = 255 - image
            elif rule == "frozen" and previous is not None:
                image = previous.copy()
            if rule:
                labels[fid] = rule
            previous = image.copy()
            barcode.draw(image, fid, cell)
            writer.write_bgr(image, pts)
    for entry in manifest["files"]:
        if entry["path"] == "video.webm":
            entry["size_bytes"], entry["sha256"] = video.stat().st_size, file_sha256(video)
    (session_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return labels


def make_session(out: Path, *, scene: str, width: int, height: int, duration_s: float, seed: int,
                 counts: dict[str, int]) -> Labelled:
    """One labelled session: ``scene`` is ``textured`` (generator knobs), ``flat`` or ``flat-side`` (re-rendered)."""
    from sd_common.session_format.synth import SynthConfig, synth_session

    name = f"{scene} {width}x{height} {'corrupted' if counts else 'clean'} seed {seed}"
    cfg = SynthConfig(width=width, height=height, duration_s=duration_s, seed=seed,
                      bitrate=game_bitrate(width, height))
    if scene == "textured":
        for rule, count in counts.items():
            cfg = cfg.with_corruption(KNOBS[rule], count)
        truth = synth_session(out, cfg)
        labels = {fid: "blurred" for fid in truth.blurred_frame_ids}
        for knob, ids in truth.picture_frame_ids.items():
            rule = next(r for r, k in KNOBS.items() if k == knob)
            labels.update({fid: rule for fid in ids})
    else:
        truth = synth_session(out, cfg)
        look, tilt = (85.0, 12.0) if scene == "flat-side" else (0.0, 0.0)
        labels = rerender_flat(truth.session_dir, counts, seed, look_deg=look, tilt_deg=tilt)
    return Labelled(name, truth.session_dir, labels, sorted({fid for fid, _ in truth.video_frames}))


def process(item: Labelled, out: Path, config=None) -> Labelled:
    """Runs the processor on the session; keeps its QC report."""
    from sd_processor.export import DirectorySink
    from sd_processor.pipeline import process_session

    shutil.rmtree(out, ignore_errors=True)
    process_session(item.session_dir, DirectorySink(out), config=config, attempt_id="bench")
    item.qc = json.loads((out / "qc_report.json").read_text())
    return item


@dataclass
class RuleScore:
    """Counts of one rule over a set of sessions."""

    flagged_true: int = 0  # corrupted for the rule and flagged by it
    flagged_clean: int = 0  # clean and flagged by it
    missed: int = 0  # corrupted for the rule, not flagged by it

    @property
    def precision(self) -> float:
        """Share of the rule's clean-or-own flags that were right (1.0 when it flagged nothing)."""
        n = self.flagged_true + self.flagged_clean
        return self.flagged_true / n if n else 1.0

    @property
    def recall(self) -> float:
        """Share of the frames corrupted for the rule that it flagged (1.0 when there were none)."""
        n = self.flagged_true + self.missed
        return self.flagged_true / n if n else 1.0


def score(items: list[Labelled]) -> tuple[dict[str, RuleScore], int, int]:
    """Per-rule counts, clean frames dropped by a picture rule, and clean frames in all."""
    scores = {r: RuleScore() for r in RULES}
    clean_lost = clean_total = 0
    for item in items:
        flags: dict[int, set[str]] = {}
        for d in item.qc["dropped_frames"]:
            if "frame_id" in d:
                flags.setdefault(d["frame_id"], set()).update(r for r in d["reasons"] if r in RULES)
        for fid in item.frame_ids:
            got, label = flags.get(fid, set()), item.labels.get(fid)
            if label is None:
                clean_total += 1
                clean_lost += bool(got)
            for rule in RULES:
                if label == rule:
                    if rule in got:
                        scores[rule].flagged_true += 1
                    else:
                        scores[rule].missed += 1
                elif label is None and rule in got:
                    scores[rule].flagged_clean += 1
    return scores, clean_lost, clean_total


def false_alarms(item: Labelled) -> list[tuple[int, list[str]]]:
    """(frame id, picture reasons) of the clean frames a picture rule dropped."""
    out = []
    for d in item.qc["dropped_frames"]:
        fid = d.get("frame_id")
        got = [r for r in d["reasons"] if r in RULES]
        if fid is not None and got and fid not in item.labels:
            out.append((fid, got))
    return out


def table(rows: list[tuple[str, dict[str, RuleScore], int, int]]) -> str:
    """A markdown table: one row per group of sessions, precision/recall per rule."""
    head = "| set | " + " | ".join(f"{r} P / R" for r in RULES) + " | clean lost |"
    sep = "| --- | " + " | ".join("---:" for _ in RULES) + " | ---: |"
    body = []
    for name, scores, lost, total in rows:
        cells = []
        for r in RULES:
            s = scores[r]
            n = s.flagged_true + s.missed
            cells.append(f"{s.precision:.2f} / {s.recall:.2f}" + (f" ({n})" if n else " (–)"))
        body.append(f"| {name} | " + " | ".join(cells) + f" | {lost} of {total} |")
    return "\n".join([head, sep, *body])


SCENES = ("textured", "flat", "flat-side")
SIZES = ((256, 144), (640, 360), (1280, 720))
CORRUPT = {"blurred": 6, "black": 3, "overexposed": 3, "flicker": 3, "frozen": 4}


def build_set(out: Path, *, quick: bool) -> list[Labelled]:
    """The labelled set (cached sessions are rebuilt; they are cheap)."""
    items = []
    sizes = SIZES[:2] if quick else SIZES
    duration = 6.0 if quick else 12.0
    seeds = (31,) if quick else (31, 32)
    for scene in SCENES:
        for w, h in sizes:
            for seed in seeds:
                for counts in ({}, CORRUPT):
                    tag = f"{scene}-{w}x{h}-{seed}-{'c' if counts else 'k'}"
                    items.append(make_session(out / tag, scene=scene, width=w, height=h, duration_s=duration,
                                              seed=seed, counts=counts))
    return items


def main(argv: list[str] | None = None) -> int:
    """Builds the set, processes it, prints the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two sizes, one seed, 6 s sessions")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "clean_rules")
    ap.add_argument("--verbose", action="store_true", help="list every clean frame a rule dropped")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    items = build_set(args.out, quick=args.quick)
    groups: dict[str, list[Labelled]] = {}
    for item in items:
        process(item, item.session_dir.parent / "processed")
        scene, size = item.name.split()[:2]
        groups.setdefault(f"{scene} {size}", []).append(item)
        if args.verbose:
            print(item.name, "false alarms:", false_alarms(item), file=sys.stderr)
    rows = [(name, *score(group)) for name, group in groups.items()]
    for scene in SCENES:
        rows.append((f"**all {scene}**", *score([i for i in items if i.name.split()[0] == scene])))
    rows.append(("**all**", *score(items)))
    print(table(rows))
    frames = sum(len(i.frame_ids) for i in items)
    print(f"\n{len(items)} sessions, {frames} frames, {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
