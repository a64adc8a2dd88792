"""Fuzz: every case of the corpus processes without a crash; bad ones end in named problems.

For each case the processor must return (never raise); a bad case must name at least one problem
(and, where the recipe knows it, the expected code); a session is rejected exactly when one of its
problems is fatal; clean cases process with no problem and at least one accepted segment; the
reports are written and valid JSON; and the raw files are byte-identical afterwards.
"""

from __future__ import annotations

import json
import re

import pytest
from sd_processor.export import DirectorySink
from sd_processor.pipeline import is_fatal, process_session

from .corpus import corpus, make_bases, tree_digest

CASES = corpus()
CODE = re.compile(r"[a-z][a-z0-9_]*")


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 200, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.fixture(scope="session")
def bases(tmp_path_factory):
    return make_bases(tmp_path_factory.mktemp("fuzz-bases"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, bases, tmp_path):
    session = case.build(tmp_path / "work", bases)
    before = tree_digest(session)
    out = tmp_path / "out"
    result = process_session(session, DirectorySink(out), attempt_id="fuzz", expected_session_id=None)
    assert tree_digest(session) == before, "the raw session was modified"
    codes = [p.code for p in result.problems]
    assert all(CODE.fullmatch(c) for c in codes), codes
    assert all(p.message for p in result.problems)
    assert result.rejected == any(is_fatal(c) for c in codes)
    if case.bad:
        assert codes, f"{case.name}: a bad session produced no named problem"
    elif case.bad is False:
        assert not codes and not result.rejected, result.problems
    if case.clean:
        assert result.segments_accepted >= 1
    if case.expect:
        assert case.expect in codes, (case.name, codes)
    if result.rejected:
        assert result.segments_accepted == 0 and not list(out.glob("route_*"))
    qc = json.loads((out / "qc_report.json").read_text())
    assert qc["rejected"] == result.rejected and qc["frames"]["kept"] == result.frames_kept
    if case.dropped:
        assert qc["frames"]["dropped"].get(case.dropped, 0) > 0, qc["frames"]
    if case.segment_rejected:
        assert qc["segments"]["rejected"].get(case.segment_rejected, 0) > 0, qc["segments"]
    assert json.loads((out / "_SUCCESS.json").read_text())["segments_accepted"] == result.segments_accepted
    segments = json.loads((out / "segments.json").read_text())
    accepted = [s["segment_id"] for s in segments["segments"] if s["accepted"]]
    assert sorted(accepted) == sorted(p.name for p in out.glob("route_*"))
