"""The whole loop, short: autopilot demonstrations in headless Chromium against a real local stack →
upload → ingest → processor → a dataset version (`sdctl dataset create`) → a few CPU training steps
(`sdctl train`) → a checkpoint that the evaluator's model agent loads with the dataset's camera. The steps
are bench/loop_bench.py's own functions, so the benchmark and this test run the same code.

It shares the browser tests' stack and their two plain drives, the 32 s one and a 10 s one
(tests/e2e/conftest.py): the trainer validates every run, so a version needs two sessions. The version
holds every session accepted so far on that stack (the game tests' rejected and re-uploaded one, and
the diffusion drive's, when they ran first and the processor kept any of their segments).
Needs what tests/e2e/test_game_e2e.py needs (Node with web/node_modules, Debian's Chromium); skipped
without them, and failing under CI=true.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.e2e.game import IN_CI, MISSING, SIZE as GAME_SIZE

REPO = Path(__file__).resolve().parents[2]
SIZE = f"{GAME_SIZE[0]}x{GAME_SIZE[1]}"  # the game tests' size: one camera in the version
STEPS = 4

needs_browser = pytest.mark.skipif(MISSING is not None and not IN_CI, reason=f"browser test needs: {MISSING}")
# Two drives, processing and training run in the first test's fixture: wider than the suite's 300 s.
pytestmark = pytest.mark.timeout(900)


def _loop_bench():
    spec = importlib.util.spec_from_file_location("loop_bench", REPO / "bench" / "loop_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


lb = _loop_bench()


@pytest.fixture(scope="module")
def loop(stack, drive, second_drive, tmp_path_factory):
    """One pass of the loop over the browser tests' two plain drives; what each step returned."""
    root = tmp_path_factory.mktemp("loop")
    records = {d["sid"]: lb.wait_processed(d["sid"], stack["offset"], timeout_s=240) for d in (drive, second_drive)}
    store = stack["state"] / "store"
    version = lb.create_version(stack["offset"], store, "loop-short", val_fraction=0.5)
    config = {**lb.train_config(STEPS), "data": {**lb.SMALL_TRAIN["data"], "batch_size": 8, "num_workers": 0}}
    trained = lb.train(version["dataset_id"], store, root / "train", "loop-short", config)
    return {"records": records, "store": store, "version": version, "trained": trained, "config": config}


def _accepted(store: Path, sid: str) -> list[dict]:
    """The segments the processor accepted, less those the catalog then rejected as replays of an earlier
    session (the stack's scripted drives repeat one another: docs/verification.md, "Duplicates and replays")."""
    from sd_ingest.catalog import Catalog
    catalog = Catalog(f"sqlite:///{store.parent / 'ingest' / 'catalog.db'}")
    try:
        verdict = {seg.segment_id: seg for seg in catalog.segments(sid)}
    finally:
        catalog.close()
    processed = [s for s in json.loads((store / "processed" / sid / "segments.json").read_text())["segments"]
                 if s["accepted"]]
    for s in processed:
        seg = verdict[s["segment_id"]]
        assert seg.accepted or {"duplicate_frames", "duplicate_log"} & set(seg.reasons), (s["segment_id"], seg.reasons)
    return [s for s in processed if verdict[s["segment_id"]].accepted]


@needs_browser
def test_the_demonstrations_become_a_version_of_their_accepted_segments(loop):
    store, version = loop["store"], loop["version"]
    manifest = json.loads((store / "datasets" / version["dataset_id"] / "manifest.json").read_text())
    sessions = {s["session_id"] for s in manifest["segments"]}
    # Both drives of this test, and whatever else the stack had accepted before the snapshot.
    assert set(loop["records"]) <= sessions
    for sid, record in loop["records"].items():
        assert len(_accepted(store, sid)) == record["segments_accepted"] >= 1
    frames = {"train": 0, "val": 0}
    for sid in sessions:
        accepted = _accepted(store, sid)
        listed = [s for s in manifest["segments"] if s["session_id"] == sid]
        assert sorted(s["segment_id"] for s in listed) == sorted(s["segment_id"] for s in accepted)
        assert len({s["split"] for s in listed}) == 1  # a session is never split
        frames[listed[0]["split"]] += sum(len(json.loads((store / "processed" / sid / s["segment_id"] /
                                                          "measurements.json").read_text())) for s in accepted)
    assert frames["train"] > 0 and frames["val"] > 0
    assert version["frames"] == frames["train"] + frames["val"] and version["train_frames"] == frames["train"]
    assert 0 < version["train_minutes"] < version["minutes"]


@needs_browser
def test_training_ends_at_its_step_count_with_a_checkpoint_in_the_store(loop):
    trained = loop["trained"]
    assert trained["step"] == STEPS
    assert trained["val_loss"] is not None and trained["val_loss"] > 0
    assert (loop["store"] / trained["checkpoint_uri"]).is_file(), trained["checkpoint_uri"]


@needs_browser
def test_the_checkpoint_rebuilds_the_trained_network_and_drives_on_a_recorded_frame(loop):
    import av
    import torch
    from sd_trainer.config import TrainConfig

    from sd_evaluator.agents import Control, Observation
    from sd_evaluator.policy import CheckpointAgent

    path = loop["store"] / loop["trained"]["checkpoint_uri"]
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig.from_overrides(state["config"])
    assert cfg.max_steps == STEPS and cfg.model == TrainConfig.from_overrides(loop["config"]).model
    assert state["dataset_id"] == loop["version"]["dataset_id"] and state["step"] == STEPS
    adam_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {STEPS}, adam_steps  # every parameter took each of the run's steps
    # The evaluator's model agent loads it with the dataset's camera: the recording's size and mount, the
    # processor's crop, the network's input size.
    agent = CheckpointAgent.load(str(path))
    sid = next(iter(loop["records"]))
    segments = json.loads((loop["store"] / "processed" / sid / "segments.json").read_text())
    camera = agent.camera
    assert (camera.recording_width, camera.recording_height) == tuple(int(v) for v in SIZE.split("x"))
    assert camera.crop.to_dict() == segments["crop"] and camera.mount.to_dict() == segments["mount"]
    assert (camera.input_height, camera.input_width) == (cfg.model.image_height, cfg.model.image_width)
    # A whole recorded frame (the raw upload's first picture) drives it: a control within CARLA's ranges.
    with av.open(str(loop["store"] / "raw" / sid / "video.webm")) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    control = agent.act(Observation(image=frame, speed_mps=3.0, command=4, t_s=0.0))
    assert isinstance(control, Control)


def test_the_results_section_is_replaced_in_place_and_names_what_was_not_evaluated(tmp_path):
    doc = {"command": "python bench/loop_bench.py --minutes 1", "recording": {"size": SIZE, "drive_s": 60},
           "train_config": lb.train_config(300), "benchmark": "city-20", "total_wall_s": 600.0,
           "sessions": [{"drive_wall_s": 90.0}, {"drive_wall_s": 95.0}],
           "sizes": [{"version": {"minutes": 1.92, "train_minutes": 0.96, "frames": 3300, "sessions": 2},
                      "train": {"step": 300, "wall_s": 120.0},
                      "scores": {"model": {"DS": 1.5, "RC": 4.0, "IP": 0.5},
                                 "autopilot": {"DS": 80.0, "RC": 90.0, "IP": 0.8},
                                 "constant-throttle": {"DS": 2.0, "RC": 5.0, "IP": 0.45}}},
                     {"version": {"minutes": 2.9, "train_minutes": 1.95, "frames": 5000, "sessions": 3},
                      "train": {"step": 300, "wall_s": 125.0}, "scores": None,
                      "evaluate_error": "sdctl has no `evaluate` command in this checkout"}]}
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n## Before\n\ntext\n\n## The whole loop — old\n\nold\n\n## After\n\nkept\n")
    lb.write_results(doc, "2026-12-01", md=md, js=tmp_path / "loop.json")
    md.write_text(md.read_text().replace(lb.END, lb.END + "\n\nWhat this means: a reading.\n"))
    lb.write_results(doc, "2026-12-01", md=md, js=tmp_path / "loop.json")  # a rerun keeps the reading
    text = md.read_text()
    assert text.count(lb.SECTION) == 1 and "old" not in text and text.count(lb.END) == 1
    assert text.index(lb.END) < text.index("What this means: a reading.") < text.index("## After")
    assert text.index("## Before") < text.index(lb.SECTION) < text.index("## After") and "kept" in text
    rows = [line for line in text.splitlines() if line.startswith("| 1.92") or line.startswith("| 2.90")]
    assert rows[0].split(" | ")[6:] == ["1.50", "4.00", "0.500", "80.00", "90.00", "0.800", "2.00", "5.00", "0.450 |"]
    assert rows[1].count("—") == 9  # not evaluated: empty, never made up
    assert "Not evaluated: sdctl has no `evaluate` command" in text and "Not run yet" not in text
    assert json.loads((tmp_path / "loop.json").read_text()) == doc
    # A stopped run's sizes that were never reached are named, not filled in.
    doc["sizes"][0]["target_minutes"], doc["sizes"][1]["target_minutes"] = 1.0, 2.0
    lb.write_results(doc, "2026-12-01", md=md, js=tmp_path / "loop.json", targets=[1.0, 2.0, 4.0])
    assert "Not run yet: the 4-minute size(s)" in md.read_text() and md.read_text().count("| 2.90") == 1


def test_scores_are_read_from_each_agents_report_as_the_evaluator_writes_it(tmp_path):
    sys.path.append(str(REPO / "services" / "evaluator" / "tests"))
    from leaderboard_files import ROUTES_XML, leaderboard_file
    from sd_evaluator.report import build_report, write_report
    from sd_evaluator.results import Results
    from sd_evaluator.route_file import read_route_file

    routes = tmp_path / "routes.xml"
    routes.write_text(ROUTES_XML)
    report = build_report(Results.from_json(leaderboard_file()), read_route_file(routes))
    for agent in lb.AGENTS:
        write_report(report, tmp_path / "evaluation" / agent)
    scores = lb.read_scores(tmp_path / "evaluation")
    assert list(scores) == ["model", "autopilot", "constant-throttle"]
    lbd = report["leaderboard"]
    assert scores["model"] == {"DS": lbd["driving_score"], "RC": lbd["route_completion"],
                               "IP": lbd["infraction_penalty"], "km_driven": report["km_driven"], "routes": 2}
    assert 0 < scores["model"]["DS"] < scores["model"]["RC"] <= 100
