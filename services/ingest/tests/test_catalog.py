"""The catalog on real SQLite and real PostgreSQL: state machine, idempotent events, leases, attempts."""

from __future__ import annotations

import threading

import pytest
from sd_ingest.catalog import (
    TRANSITIONS,
    Catalog,
    DatasetRecord,
    InvalidTransition,
    LeaseLost,
    SegmentRecord,
    SessionState,
    check_transition,
)

S = SessionState


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def catalog(db_url, clock):
    c = Catalog(db_url, clock=clock)
    yield c
    c.close()


def _seen(catalog: Catalog, sid: str, name: str, etag: str = '"e1"', seq: str | None = "0A") -> str:
    return catalog.record_object(key=f"raw/{sid}/{name}", session_id=sid, raw_prefix=f"raw/{sid}/",
                                 size_bytes=10, etag=etag, sequencer=seq).kind


def _to_validated(catalog: Catalog, sid: str, owner: str = "a") -> None:
    _seen(catalog, sid, "manifest.json")
    rec = catalog.claim(sid, S.RECEIVING, owner, 30)
    catalog.finish_check(sid, owner, rec.generation, complete=True, problems=[], player_id="p1")
    assert catalog.claim(sid, S.COMPLETE, owner, 30) is not None
    catalog.finish_validation(sid, owner, S.VALIDATED, [], [])


def test_the_state_machine_allows_only_its_edges():
    assert set(TRANSITIONS) == set(SessionState)
    check_transition("s", S.RECEIVING, S.COMPLETE)
    check_transition("s", S.PROCESSING, S.VALIDATED)
    for src, dst in [(S.RECEIVING, S.PROCESSING), (S.PROCESSED, S.PROCESSING), (S.REJECTED, S.VALIDATED),
                     (S.VALIDATED, S.PROCESSED), (S.FAILED, S.PROCESSED)]:
        with pytest.raises(InvalidTransition, match=f"{src} cannot move to {dst}"):
            check_transition("s", src, dst)


def test_events_register_once_whatever_their_order_or_repetition(catalog):
    # Out of order (manifest first), then every event delivered again.
    names = ["manifest.json", "latency.jsonl", "video.webm", "frames.jsonl", "events.jsonl"]
    assert [_seen(catalog, "s1", n) for n in names] == ["new"] * 5
    assert [_seen(catalog, "s1", n) for n in names] == ["duplicate"] * 5
    rec = catalog.get_session("s1")
    assert rec.state == S.RECEIVING and rec.generation == 5
    assert catalog.object_deliveries("s1") == {f"raw/s1/{n}": 2 for n in names}
    assert len(catalog.list_sessions()) == 1
    # An older event for a key seen with a newer sequencer changes nothing; a newer one replaces.
    assert _seen(catalog, "s1", "video.webm", etag='"old"', seq="09") == "stale"
    assert _seen(catalog, "s1", "video.webm", etag='"e2"', seq="0B") == "replaced"
    assert catalog.get_session("s1").generation == 6


def test_a_complete_check_made_before_a_new_event_does_not_count(catalog):
    _seen(catalog, "s1", "manifest.json")
    rec = catalog.claim("s1", S.RECEIVING, "a", 30)
    _seen(catalog, "s1", "video.webm")  # arrives while the check runs
    after = catalog.finish_check("s1", "a", rec.generation, complete=True, problems=[])
    assert after.state == S.RECEIVING and after.lease_owner is None
    assert [w.session_id for w in catalog.find_work()] == ["s1"]  # checked again
    rec = catalog.claim("s1", S.RECEIVING, "a", 30)
    assert catalog.finish_check("s1", "a", rec.generation, complete=True, problems=[]).state == S.COMPLETE


def test_a_lease_is_exclusive_across_replicas_until_it_expires(db_url, clock):
    a, b = Catalog(db_url, clock=clock), Catalog(db_url, clock=clock)
    try:
        _seen(a, "s1", "manifest.json")
        assert a.claim("s1", S.RECEIVING, "replica-a", 10) is not None
        assert b.claim("s1", S.RECEIVING, "replica-b", 10) is None
        assert b.find_work() == []
        with pytest.raises(LeaseLost):
            b.finish_check("s1", "replica-b", 1, complete=True, problems=[])
        clock.t += 11  # replica a stopped renewing
        assert b.claim("s1", S.RECEIVING, "replica-b", 10) is not None
        assert not a.renew("s1", "replica-a", 10)
        with pytest.raises(LeaseLost):
            a.finish_check("s1", "replica-a", 1, complete=True, problems=[])
    finally:
        a.close()
        b.close()


def test_concurrent_claims_have_exactly_one_winner(db_url, clock):
    catalogs = [Catalog(db_url, clock=clock) for _ in range(6)]
    try:
        _to_validated(catalogs[0], "s1")
        wins = []
        barrier = threading.Barrier(len(catalogs))

        def claim(i: int) -> None:
            barrier.wait()
            if catalogs[i].claim("s1", S.VALIDATED, f"r{i}", 30) is not None:
                wins.append(i)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(catalogs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
    finally:
        for c in catalogs:
            c.close()


def test_failed_attempts_back_off_then_fail(catalog, clock):
    _to_validated(catalog, "s1")
    for attempt in (1, 2, 3):
        assert catalog.claim("s1", S.VALIDATED, "a", 30) is not None
        rec = catalog.start_attempt("s1", "a", f"{attempt}-x")
        assert rec.state == S.PROCESSING and rec.attempts == attempt
        rec = catalog.finish_failed_attempt("s1", "a", "UNAVAILABLE", permanent=False, max_attempts=3, backoff_s=5)
        if attempt < 3:
            assert rec.state == S.VALIDATED
            assert catalog.claim("s1", S.VALIDATED, "a", 30) is None  # not before the backoff
            clock.t += 6
    assert rec.state == S.FAILED and rec.attempts == 3 and rec.last_error == "UNAVAILABLE"
    assert catalog.reprocess("s1").state == S.VALIDATED
    assert catalog.get_session("s1").attempts == 0


def test_a_permanent_failure_fails_at_once(catalog):
    _to_validated(catalog, "s1")
    catalog.claim("s1", S.VALIDATED, "a", 30)
    catalog.start_attempt("s1", "a", "1-x")
    rec = catalog.finish_failed_attempt("s1", "a", "INVALID_ARGUMENT", permanent=True, max_attempts=3, backoff_s=1)
    assert rec.state == S.FAILED and rec.attempts == 1


def _segment(sid: str, k: int, accepted: bool = True) -> SegmentRecord:
    return SegmentRecord(segment_id=f"route_{sid}_{k:03d}", session_id=sid, player_id="p1", index=k,
                         accepted=accepted, reasons=[] if accepted else ["short"], frames=150, duration_s=5.0,
                         t_start_ms=0, t_end_ms=5000, distance_m=40.0, mean_speed_mps=8.0,
                         command_counts={"4": 150}, uri=f"processed/{sid}/route_{sid}_{k:03d}/")


def test_processed_registers_segments_once_even_when_reprocessed(catalog):
    _to_validated(catalog, "s1")
    catalog.claim("s1", S.VALIDATED, "a", 30)
    catalog.start_attempt("s1", "a", "1-x")
    with pytest.raises(LeaseLost):  # an answer for another attempt is not this one's
        catalog.finish_processed("s1", "a", "0-old", segments=[], qc_report_uri="", problems=[])
    rec = catalog.finish_processed("s1", "a", "1-x", segments=[_segment("s1", 0), _segment("s1", 1, False)],
                                   qc_report_uri="processed/s1/qc_report.json", problems=[])
    assert (rec.state, rec.segments_accepted, rec.segments_rejected) == (S.PROCESSED, 1, 1)
    assert [s.segment_id for s in catalog.accepted_segments()] == ["route_s1_000"]
    catalog.reprocess("s1")
    assert catalog.accepted_segments() == []  # only PROCESSED sessions' segments count
    catalog.claim("s1", S.VALIDATED, "b", 30)
    catalog.start_attempt("s1", "b", "1-y")
    catalog.finish_processed("s1", "b", "1-y", segments=[_segment("s1", 0)], qc_report_uri="q", problems=[])
    assert [s.attempt_id for s in catalog.accepted_segments()] == ["1-y"]
    assert len(catalog.segments("s1")) == 1


def test_an_orphaned_attempt_is_adopted_once(catalog, clock):
    _to_validated(catalog, "s1")
    catalog.claim("s1", S.VALIDATED, "dead", 5)
    catalog.start_attempt("s1", "dead", "1-x")
    assert catalog.find_work() == []
    clock.t += 6
    [item] = catalog.find_work()
    assert item.orphaned and item.state == S.PROCESSING
    assert catalog.adopt_orphan("s1", "b", 30) is not None
    assert catalog.adopt_orphan("s1", "c", 30) is None


def test_graceful_release_does_not_count_the_interrupted_attempt(catalog):
    _to_validated(catalog, "s1")
    catalog.claim("s1", S.VALIDATED, "a", 30)
    catalog.start_attempt("s1", "a", "1-x")
    assert catalog.release("s1", "a", undo_attempt=True)
    rec = catalog.get_session("s1")
    assert (rec.state, rec.attempts, rec.lease_owner) == (S.VALIDATED, 0, None)


def test_a_rejected_session_reopens_when_a_file_is_uploaded_again(catalog):
    _seen(catalog, "s1", "manifest.json")
    rec = catalog.claim("s1", S.RECEIVING, "a", 30)
    catalog.finish_check("s1", "a", rec.generation, complete=True, problems=[])
    catalog.claim("s1", S.COMPLETE, "a", 30)
    catalog.finish_validation("s1", "a", S.REJECTED, [], [])
    assert _seen(catalog, "s1", "manifest.json", etag='"fixed"', seq="0B") == "replaced"
    assert catalog.get_session("s1").state == S.RECEIVING


def test_listing_counting_and_datasets(catalog):
    for i in range(5):
        _seen(catalog, f"s{i}", "manifest.json")
    page = catalog.list_sessions(limit=2)
    assert [r.session_id for r in page] == ["s0", "s1"]
    assert [r.session_id for r in catalog.list_sessions(limit=10, after_id="s1")] == ["s2", "s3", "s4"]
    assert catalog.counts_by_state()[S.RECEIVING] == 5
    assert catalog.list_sessions(states=[S.PROCESSED]) == []
    from datetime import UTC, datetime
    rec = DatasetRecord("a" * 64, "v1", datetime.now(UTC), 0.1, 2, 1, 1, 300, 2, 0, 0.0, 2**62, "m", "s", "l")
    stored, created = catalog.add_dataset(rec)
    assert created and stored.split_seed == 2**62
    again, created = catalog.add_dataset(rec)
    assert not created and again.name == "v1"
    assert [d.dataset_id for d in catalog.list_datasets()] == ["a" * 64]


def test_segment_facts_round_trip_and_an_older_database_gains_their_columns(db_url):
    import dataclasses

    from sqlalchemy import create_engine, text

    from sd_common.sql import normalize_url

    first = Catalog(db_url)
    _to_validated(first, "s1")
    first.claim("s1", S.VALIDATED, "a", 30)
    first.start_attempt("s1", "a", "1-x")
    seg = dataclasses.replace(_segment("s1", 0), infractions={"red_light": 2, "collision_static": 1},
                              diffusion_frames=120, route_progress_start=0.25, route_progress_end=0.5)
    first.finish_processed("s1", "a", "1-x", segments=[seg], qc_report_uri="q", problems=[])
    [got] = first.segments("s1")
    assert (got.infractions, got.diffusion_frames, got.route_progress_start, got.route_progress_end) == (
        {"collision_static": 1, "red_light": 2}, 120, 0.25, 0.5)
    first.close()
    # A database made before the facts existed: their columns are gone, the row is still there.
    engine = create_engine(normalize_url(db_url))
    with engine.begin() as conn:
        for column in ("infractions_json", "diffusion_frames", "route_progress_start", "route_progress_end"):
            conn.execute(text(f"ALTER TABLE catalog_segments DROP COLUMN {column}"))
    engine.dispose()
    again = Catalog(db_url)
    try:
        [old] = again.segments("s1")
        assert (old.segment_id, old.frames, old.infractions, old.diffusion_frames, old.route_progress_start,
                old.route_progress_end) == ("route_s1_000", 150, {}, 0, 0.0, 0.0)
        Catalog(db_url).close()  # opening once more finds every column and adds none
    finally:
        again.close()


def _processed(catalog: Catalog, sid: str, version: str = "v1") -> None:
    _to_validated(catalog, sid)
    catalog.claim(sid, S.VALIDATED, "a", 30)
    catalog.start_attempt(sid, "a", f"1-{sid}")
    catalog.finish_processed(sid, "a", f"1-{sid}", segments=[_segment(sid, 0)], qc_report_uri="q", problems=[],
                             processor_version=version)


def test_a_reprocessing_run_sends_a_session_once_and_only_from_a_state_it_selects(catalog, clock):
    _processed(catalog, "s1")
    assert catalog.get_session("s1").processor_version == "v1"
    rec = catalog.reprocess_for_run("s1", "run-a", [S.PROCESSED])
    assert (rec.state, rec.attempts, rec.reprocess_run, rec.lease_owner) == (S.VALIDATED, 0, "run-a", None)
    assert catalog.reprocess_for_run("s1", "run-a", [S.PROCESSED, S.FAILED]) is None  # VALIDATED: not selected
    catalog.claim("s1", S.VALIDATED, "a", 30)
    catalog.start_attempt("s1", "a", "1-again")
    catalog.finish_processed("s1", "a", "1-again", segments=[_segment("s1", 0)], qc_report_uri="q", problems=[],
                             processor_version="v2")
    done = catalog.get_session("s1")
    assert (done.state, done.processor_version, done.reprocess_run) == (S.PROCESSED, "v2", "run-a")
    assert catalog.reprocess_for_run("s1", "run-a", [S.PROCESSED]) is None  # this run sent it already
    assert catalog.get_session("s1") == done
    # A session under a live lease is not sent; once the lease has run out it is.
    _processed(catalog, "s2")
    assert catalog.claim("s2", S.PROCESSED, "other", 30) is not None
    assert catalog.reprocess_for_run("s2", "run-a", [S.PROCESSED]) is None
    clock.t += 31
    assert catalog.reprocess_for_run("s2", "run-a", [S.PROCESSED]).state == S.VALIDATED
    # A rejected session is validated again, as reprocess() does; a state with no reprocess edge is refused.
    _seen(catalog, "s3", "manifest.json")
    rec = catalog.claim("s3", S.RECEIVING, "a", 30)
    catalog.finish_check("s3", "a", rec.generation, complete=True, problems=[])
    catalog.claim("s3", S.COMPLETE, "a", 30)
    catalog.finish_validation("s3", "a", S.REJECTED, [], [])
    assert catalog.reprocess_for_run("s3", "run-b", [S.REJECTED]).state == S.COMPLETE
    with pytest.raises(InvalidTransition):
        catalog.reprocess_for_run("s3", "run-b", [S.PROCESSING])


def test_the_selection_filters_by_version_and_time_and_keeps_what_its_run_sent(catalog, clock):
    from datetime import UTC, datetime

    _processed(catalog, "a1", "v1")
    clock.t += 100
    _processed(catalog, "a2", "v2")
    t1 = datetime.fromtimestamp(clock.t - 50, UTC)

    def picked(**kw):
        return [r.session_id for r in catalog.select_sessions(states=[S.PROCESSED], **kw)]

    assert picked() == ["a1", "a2"]
    assert picked(processor_version="v1") == ["a1"]
    assert picked(received_until=t1) == ["a1"] and picked(received_since=t1) == ["a2"]
    assert picked(processed_since=t1) == ["a2"] and picked(processed_until=t1, processed_since=t1) == []
    assert picked(after_id="a1") == ["a2"]
    catalog.reprocess_for_run("a1", "r", [S.PROCESSED])
    assert picked(processor_version="v1") == []  # VALIDATED now
    assert picked(processor_version="v1", run_id="r") == ["a1"]  # ... but its run still sees it


def test_an_older_catalog_gains_the_reprocessing_columns(db_url):
    from sqlalchemy import create_engine, text

    from sd_common.sql import normalize_url

    first = Catalog(db_url)
    _processed(first, "s1", "v9")
    first.close()
    engine = create_engine(normalize_url(db_url))
    with engine.begin() as conn:
        for column in ("processor_version", "reprocess_run"):
            conn.execute(text(f"ALTER TABLE catalog_sessions DROP COLUMN {column}"))
    engine.dispose()
    again = Catalog(db_url)
    try:
        old = again.get_session("s1")
        assert (old.state, old.processor_version, old.reprocess_run) == (S.PROCESSED, "", "")
        assert again.reprocess_for_run("s1", "r", [S.PROCESSED]).reprocess_run == "r"
    finally:
        again.close()
