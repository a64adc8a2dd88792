"""Replays: a session whose pictures or input log repeat an earlier one's has those segments rejected.

Real sessions (the synthetic generator) go through the real processor into a real local store; the
catalog (real SQLite and PostgreSQL) registers what read_output parses, as the pipeline does.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import threading
from pathlib import Path

import pytest
from sd_common.objectstore import make_store
from sd_common.session_format.synth import SynthConfig, synth_session
from sd_common.session_format.tamper import reupload_copy
from sd_common.settings import StoreSettings
from sd_ingest import replays
from sd_ingest.catalog import Catalog, SessionState
from sd_ingest.outputs import ProcessedOutput, read_output
from sd_ingest.replays import FrameHash, IndexedHash, band_values, hamming, match_segment
from sd_processor.export import DirectorySink
from sd_processor.pipeline import process_session

S = SessionState
BASE = SynthConfig(width=256, height=144, duration_s=6.0, seed=5)


def _processed(store_root: Path, session_dir: Path, sid: str) -> ProcessedOutput:
    manifest = json.loads((session_dir / "manifest.json").read_text())
    assert manifest["session_id"] == sid
    result = process_session(session_dir, DirectorySink(store_root / "processed" / sid), attempt_id=f"1-{sid}")
    assert not result.rejected, result.problems

    async def read() -> ProcessedOutput:
        store = make_store(StoreSettings(backend="local", root=store_root))
        try:
            return await read_output(store, f"processed/{sid}/", sid)
        finally:
            await store.close()
    return asyncio.run(read())


def _renamed(src: Path, dst: Path, sid: str) -> Path:
    """The same files, uploaded under another session id."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["session_id"] = sid
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dst


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, ProcessedOutput]:
    """Processed outputs: an original drive, three copies of it, and two genuine other drives."""
    tmp = tmp_path_factory.mktemp("replays")
    root = tmp / "store"
    original = synth_session(tmp / "orig", BASE).session_dir
    bitrate = int(2_500_000 * BASE.width * BASE.height / (1280 * 720))
    sessions = {
        "orig": _renamed(original, tmp / "orig-renamed", "orig"),
        "renamed": _renamed(original, tmp / "renamed", "renamed"),
        "reencoded": reupload_copy(original, tmp / "reencoded", bitrate=bitrate // 4, shift_ms=1234,
                                   event_jitter_ms=3.0, session_id="reencoded"),
        "paced": _renamed(synth_session(tmp / "paced", SynthConfig(**{**BASE.__dict__, "pace": 0.8})).session_dir,
                          tmp / "paced-renamed", "paced"),
        "elsewhere": _renamed(synth_session(tmp / "other", SynthConfig(**{**BASE.__dict__, "seed": 6})).session_dir,
                              tmp / "other-renamed", "elsewhere"),
    }
    done = {sid: _processed(root, d, sid) for sid, d in sessions.items()}
    # each, on its own, is one accepted segment and a short rest
    assert {sid: [s.accepted for s in out.segments] for sid, out in done.items()} == {
        sid: [True, False] for sid in sessions}
    return done


@pytest.fixture
def catalog(db_url):
    c = Catalog(db_url)
    yield c
    c.close()


def _register(catalog: Catalog, out: ProcessedOutput, owner: str = "a"):
    """Takes a session from first sight to PROCESSED with this output, as the pipeline does."""
    sid = out.session_id
    if catalog.get_session(sid) is None:
        catalog.record_object(key=f"raw/{sid}/manifest.json", session_id=sid, raw_prefix=f"raw/{sid}/",
                              size_bytes=10, etag='"e"', sequencer="0A")
        rec = catalog.claim(sid, S.RECEIVING, owner, 30)
        catalog.finish_check(sid, owner, rec.generation, complete=True, problems=[], player_id="p1")
        catalog.claim(sid, S.COMPLETE, owner, 30)
        catalog.finish_validation(sid, owner, S.VALIDATED, [], [])
    else:
        catalog.reprocess(sid)
    assert catalog.claim(sid, S.VALIDATED, owner, 30) is not None
    attempt = catalog.start_attempt(sid, owner, f"{random.getrandbits(32):08x}").attempt_id
    return catalog.finish_processed(sid, owner, attempt, segments=out.segments, qc_report_uri="q", problems=[],
                                    fingerprints=out.fingerprints)


def _verdict(catalog: Catalog, sid: str) -> list[tuple[bool, list[str]]]:
    return [(s.accepted, s.reasons) for s in catalog.segments(sid)]


def _codes(rec) -> list[str]:
    return sorted(p.code for p in rec.problems)


# ---- the index and the match, on their own ----------------------------------------------------------


def test_any_two_hashes_within_the_distance_share_a_band():
    rng = random.Random(7)
    for _ in range(3000):
        a = rng.getrandbits(64)
        flips = rng.sample(range(64), rng.randint(0, replays.MAX_DISTANCE))
        b = a
        for bit in flips:
            b ^= 1 << bit
        assert hamming(a, b) == len(flips)
        assert any(x == y for x, y in zip(band_values(a), band_values(b))), (hex(a), hex(b))
    # and the bands cover all 64 bits: a hash is its bands
    a = rng.getrandbits(64)
    assert band_values(a) != band_values(a ^ (1 << 63)) and band_values(a) != band_values(a ^ 1)


def test_a_match_needs_a_run_of_pictures_at_one_offset():
    rng = random.Random(3)
    track = [(k * 250, rng.getrandbits(64)) for k in range(40)]  # an earlier session, 4 pictures a second
    index = [IndexedHash("earlier", t, h) for t, h in track]
    copy = [FrameHash(t + 1234, h ^ 0b101) for t, h in track[8:28]]  # the same pictures, 2 bits off, shifted
    m = match_segment(copy, index)
    assert (m.session_id, m.matched, m.sampled, m.offset_ms) == ("earlier", 20, 20, -1234.0)
    # the same pictures at another pace: each one's nearest is there, but the offset drifts
    paced = [FrameHash(round(t * 1.25), h) for t, h in track[8:28]]
    assert match_segment(paced, index) is None
    # half of the pictures repeated is not enough; too few pictures prove nothing
    half = copy[:10] + [FrameHash(h.t_ms, rng.getrandbits(64)) for h in copy[10:]]
    assert match_segment(half, index) is None
    assert match_segment(copy[:replays.MIN_MATCHES - 1], index) is None


# ---- sessions through the processor and the catalog -------------------------------------------------


def test_the_same_session_processed_again_keeps_its_verdict(catalog, outputs):
    first = _register(catalog, outputs["orig"])
    verdict = _verdict(catalog, "orig")
    assert first.segments_accepted == 1 and verdict == [(True, []), (False, ["too_short"])]
    again = _register(catalog, outputs["orig"])  # reprocessed: the same session never matches itself
    assert again.segments_accepted == 1 and _verdict(catalog, "orig") == verdict and _codes(again) == []
    assert catalog.replay_index_size() == (1, sum(len(v) for v in outputs["orig"].fingerprints.frames.values()))


def test_the_same_files_under_another_session_id_are_a_replay(catalog, outputs):
    _register(catalog, outputs["orig"])
    rec = _register(catalog, outputs["renamed"])
    assert outputs["renamed"].fingerprints.log_fingerprint == outputs["orig"].fingerprints.log_fingerprint != ""
    assert rec.segments_accepted == 0 and _codes(rec) == ["duplicate_frames", "duplicate_log"]
    assert _verdict(catalog, "renamed") == [(False, ["duplicate_frames", "duplicate_log"]),
                                            (False, ["too_short", "duplicate_frames", "duplicate_log"])]
    assert all("session orig" in p.message for p in rec.problems)
    # the original keeps its credit, also when it is processed again after the copy
    assert _register(catalog, outputs["orig"]).segments_accepted == 1
    assert _verdict(catalog, "orig") == [(True, []), (False, ["too_short"])]
    # the copy processed again is a replay again
    assert _verdict(catalog, "renamed") == [(False, ["duplicate_frames", "duplicate_log"]),
                                            (False, ["too_short", "duplicate_frames", "duplicate_log"])] and \
        _register(catalog, outputs["renamed"]).segments_accepted == 0


def test_a_reencoded_copy_with_shifted_clocks_repeats_the_pictures(catalog, outputs):
    _register(catalog, outputs["orig"])
    rec = _register(catalog, outputs["reencoded"])
    # its jittered events make another log fingerprint: the pictures alone tell
    assert outputs["reencoded"].fingerprints.log_fingerprint not in ("", outputs["orig"].fingerprints.log_fingerprint)
    assert rec.segments_accepted == 0 and _codes(rec) == ["duplicate_frames"]
    assert _verdict(catalog, "reencoded")[0] == (False, ["duplicate_frames"])
    [problem] = rec.problems
    assert "session orig" in problem.message and "-1234 ms" in problem.message


def test_genuine_other_drives_are_not_replays(catalog, outputs):
    _register(catalog, outputs["orig"])
    for sid in ("paced", "elsewhere"):  # the same city and route at another pace; another city and route
        rec = _register(catalog, outputs[sid])
        assert _codes(rec) == [] and rec.segments_accepted == 1, (sid, rec.problems)
    # registered first, a genuine drive does not make the original a replay either
    assert _register(catalog, outputs["orig"]).segments_accepted == 1


def test_two_copies_registered_at_once_are_not_both_accepted(db_url, outputs, monkeypatch):
    # Both registrations stop right after their index lookup until the other has looked too (or 2 s
    # passed): without the lock around check and insert both would find an empty index.
    catalogs = [Catalog(db_url), Catalog(db_url)]
    met = threading.Barrier(2, timeout=2.0)
    real = replays.match_segment

    def slow_match(*args, **kwargs):
        found = real(*args, **kwargs)
        try:
            met.wait()
        except threading.BrokenBarrierError:
            pass
        return found

    monkeypatch.setattr(replays, "match_segment", slow_match)
    results: dict[str, object] = {}

    def register(k: int, sid: str) -> None:
        results[sid] = _register(catalogs[k], outputs[sid], owner=f"replica-{k}")

    try:
        threads = [threading.Thread(target=register, args=(k, sid))
                   for k, sid in enumerate(("renamed", "reencoded"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        accepted = sorted(rec.segments_accepted for rec in results.values())
        assert accepted == [0, 1], {sid: (r.segments_accepted, _codes(r)) for sid, r in results.items()}
    finally:
        for c in catalogs:
            c.close()
