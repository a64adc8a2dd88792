"""CLEAN precision and recall on a small labelled set, per rule (bench/clean_rules_bench.py runs the large one).

Two sessions at the game's bitrate, each with every kind of picture corruption on known frames: a
generator session (textured buildings, its own corruption knobs, 256x144) and the same kind of drive
re-rendered flat-shaded and looking at the untextured walls passing by (640x360), where most frames
are one flat colour with a few sharp edges. Before the rules judged pictures against what the session
shows, the flat session lost most of its frames to the blur and frozen rules.
"""

from __future__ import annotations

import pytest

from bench.clean_rules_bench import RULES, false_alarms, make_session, process, score

CORRUPT = {"blurred": 4, "black": 2, "overexposed": 2, "flicker": 2, "frozen": 3}
MIN_PRECISION = {"blurred": 0.95, "frozen": 0.9, "black": 1.0, "overexposed": 1.0, "flicker": 1.0}
MIN_RECALL = {"blurred": 0.9, "frozen": 0.5, "black": 1.0, "overexposed": 1.0, "flicker": 1.0}
MAX_CLEAN_LOST = 0.01  # share of clean frames any picture rule may drop


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    items = [make_session(root / "textured", scene="textured", width=256, height=144, duration_s=6.0, seed=41,
                          counts=CORRUPT),
             make_session(root / "flat-side", scene="flat-side", width=640, height=360, duration_s=6.0, seed=31,
                          counts=CORRUPT)]
    return [process(item, item.session_dir.parent / "processed") for item in items]


@pytest.mark.parametrize("rule", RULES)
def test_each_picture_rule_meets_its_precision_and_recall(labelled, rule):
    scores, _, _ = score(labelled)
    s = scores[rule]
    detail = {i.name: false_alarms(i) for i in labelled}
    assert s.flagged_true + s.missed > 0  # the set has frames corrupted for this rule
    assert s.precision >= MIN_PRECISION[rule], (rule, s, detail)
    assert s.recall >= MIN_RECALL[rule], (rule, s, detail)


def test_flat_shaded_sharp_frames_are_kept(labelled):
    _, lost, total = score(labelled)
    flat = [i for i in labelled if i.name.startswith("flat-side")]
    _, flat_lost, flat_total = score(flat)
    assert flat_lost <= MAX_CLEAN_LOST * flat_total, false_alarms(flat[0])
    assert lost <= MAX_CLEAN_LOST * total
