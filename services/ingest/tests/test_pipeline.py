"""The ingest in-process over a real local store and a real gRPC processor stand-in (fake_processor.py).

Events come from the store's own queue, exactly as in `make run`; each test asserts on the catalog,
the store and what the processor was asked to do.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fake_processor import calls, start_fake_processor
from sd_common.objectstore import build_s3_event, make_store
from sd_common.settings import StoreSettings
from sd_ingest import metrics
from sd_ingest.assembly import start_ingest
from sd_ingest.catalog import SessionState
from sd_ingest.outputs import success_attempt
from sd_ingest.settings import IngestSettings

from conftest import put_session

S = SessionState


async def wait_for(predicate, timeout_s: float = 30.0, interval_s: float = 0.05):
    """Polls an (async or sync) predicate until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


class Harness:
    """A local store, a fake processor and ingests started on demand; everything stopped at teardown."""

    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.tmp = tmp_path
        self.db_url = db_url
        self.store_settings = StoreSettings(backend="local", root=tmp_path / "store")
        self.store = make_store(self.store_settings)
        self.ingests = []
        self.processor = None
        self.processor_port = 0
        self.log_dir = tmp_path / "processor"

    async def start_processor(self, script: list[str], *, fingerprints: bool = False):
        store = make_store(self.store_settings)
        server, self.processor_port, self.processor = await start_fake_processor(
            store, script, self.log_dir, self.processor_port, fingerprints=fingerprints)
        self._proc_server, self._proc_store = server, store
        return self.processor

    async def stop_processor(self) -> None:
        await self._proc_server.stop(0)
        await self._proc_store.close()

    async def start_ingest(self, **overrides):
        # No test here waits for a lease to run out (leases are released, or adopted in test_catalog with
        # a settable clock), so the lease is long: a replica stalled on a loaded machine never loses it.
        settings = IngestSettings(**{
            "grpc_port": 0, "metrics_port": 0, "state_dir": self.tmp / "ingest", "database_url": self.db_url,
            "processor_target": f"127.0.0.1:{self.processor_port}", "scan_interval_s": 0.1,
            "receive_wait_s": 0.1, "retry_backoff_s": 0.05, "retry_backoff_max_s": 0.2, "lease_s": 30.0,
            "dispatch_idle_timeout_s": 10.0, "shutdown_grace_s": 1.0, "visibility_timeout_s": 5.0, **overrides})
        ingest = await start_ingest(settings, self.store_settings)
        self.ingests.append(ingest)
        return ingest

    async def close(self) -> None:
        for ingest in self.ingests:
            if ingest.consumer is None or not ingest.consumer._stopping.is_set():
                await ingest.stop()
        if self.processor is not None:
            await self.stop_processor()
        await self.store.close()

    def session(self, sid: str):
        return self.ingests[0].catalog.get_session(sid)

    async def wait_state(self, sid: str, *states: SessionState, timeout_s: float = 30.0):
        return await wait_for(lambda: (r := self.session(sid)) is not None and r.state in states and r, timeout_s)


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}")
    yield h
    await h.close()


async def test_a_session_goes_from_upload_events_to_processed(tmp_path, db_url, session_6s):
    h = Harness(tmp_path, db_url)
    try:
        await h.start_processor(["ok"])
        await h.start_ingest()
        await put_session(h.store, session_6s, "sess-a", "player-1")
        rec = await h.wait_state("sess-a", S.PROCESSED, S.FAILED, S.REJECTED)
        assert rec.state == S.PROCESSED, rec
        assert (rec.player_id, rec.attempts, rec.segments_accepted, rec.segments_rejected) == ("player-1", 1, 1, 1)
        assert rec.qc_report_uri == "processed/sess-a/qc_report.json"
        assert await h.store.head("processed/sess-a/qc_report.json") is not None
        [call] = [c for c in calls(h.log_dir) if c["outcome"] == "ok"]
        assert call["attempt_id"] == rec.attempt_id
        segs = h.ingests[0].catalog.segments("sess-a")
        assert [(s.segment_id, s.accepted) for s in segs] == [("route_sess-a_000", True), ("route_sess-a_001", False)]
        # The raw upload is never deleted.
        listed = {i.key async for i in h.store.list("raw/sess-a/")}
        assert len(listed) == 5
    finally:
        await h.close()


async def test_the_same_upload_under_another_session_id_is_registered_as_a_replay(harness, session_6s):
    await harness.start_processor(["ok"], fingerprints=True)
    await harness.start_ingest()
    await put_session(harness.store, session_6s, "sess-first", "player-1")
    first = await harness.wait_state("sess-first", S.PROCESSED, S.FAILED, S.REJECTED)
    await put_session(harness.store, session_6s, "sess-again", "player-1")
    again = await harness.wait_state("sess-again", S.PROCESSED, S.FAILED, S.REJECTED)
    assert (first.state, first.segments_accepted, [p.code for p in first.problems]) == (S.PROCESSED, 1, [])
    assert (again.state, again.segments_accepted) == (S.PROCESSED, 0)
    [problem] = again.problems
    assert problem.code == "duplicate_log" and "sess-first" in problem.message
    segs = harness.ingests[0].catalog.segments("sess-again")
    assert [s.reasons for s in segs] == [["duplicate_log"], ["shorter_than_5s", "duplicate_log"]]
    assert harness.session("sess-first").segments_accepted == 1  # the first keeps its segment


async def test_duplicate_out_of_order_and_redelivered_events_count_once(harness, session_6s):
    await harness.start_processor(["slow:0.5"])
    ingest = await harness.start_ingest()
    dup_before = metrics.EVENTS_DUPLICATE._value.get()
    # Out of order: the manifest arrives before the files it lists.
    doc = await put_session(harness.store, session_6s, "sess-b", files=[])
    rec = await harness.wait_state("sess-b", S.RECEIVING)
    await wait_for(lambda: harness.session("sess-b").checked_generation >= 1)
    assert {p.code for p in harness.session("sess-b").problems} == {"file_missing"}
    await put_session(harness.store, session_6s, "sess-b", manifest=False)
    # Every event again, twice (redelivery), plus one stale event with an older sequencer.
    keys = [f"raw/sess-b/{f['path']}" for f in doc["files"]] + ["raw/sess-b/manifest.json"]
    for _ in range(2):
        for key in keys:
            info = await harness.store.head(key)
            await ingest.queue.send(build_s3_event(bucket="b", region="r", key=key, size_bytes=info.size_bytes,
                                                   etag=info.etag, event_name="ObjectCreated:Put",
                                                   event_time=info.last_modified, sequencer="FFFFFFFFFFFFFFFFFF"))
    await ingest.queue.send(build_s3_event(bucket="b", region="r", key=keys[0], size_bytes=1, etag='"stale"',
                                           event_name="ObjectCreated:Put", event_time=info.last_modified,
                                           sequencer="0001"))
    rec = await harness.wait_state("sess-b", S.PROCESSED, S.FAILED)
    assert rec.state == S.PROCESSED and rec.attempts == 1
    await wait_for(lambda: sum(ingest.catalog.object_deliveries("sess-b").values()) >= 15 + 1)
    assert len([c for c in calls(harness.log_dir) if c["session_id"] == "sess-b"]) == 2  # started + ok, once
    assert len(ingest.catalog.list_sessions()) == 1
    assert metrics.EVENTS_DUPLICATE._value.get() - dup_before >= 10
    assert [s.segment_id for s in ingest.catalog.accepted_segments()] == ["route_sess-b_000"]


async def test_failed_attempts_are_retried_with_backoff_until_one_succeeds(harness, session_6s):
    await harness.start_processor(["fail:UNAVAILABLE", "fail:INTERNAL", "ok"])
    await harness.start_ingest(max_attempts=3)
    await put_session(harness.store, session_6s, "sess-c")
    rec = await harness.wait_state("sess-c", S.PROCESSED, S.FAILED)
    assert (rec.state, rec.attempts) == (S.PROCESSED, 3)
    assert [c["step"] for c in calls(harness.log_dir) if c["outcome"] != "started"] == [
        "fail:UNAVAILABLE", "fail:INTERNAL", "ok"]
    assert len({c["attempt_id"] for c in calls(harness.log_dir)}) == 3  # each attempt its own id


async def test_a_hung_processor_is_cancelled_and_the_session_retried(harness, session_6s):
    await harness.start_processor(["hang", "ok"])
    # The harness's idle timeout (10 s) is long enough for an "ok" call, which writes its frames without
    # progress messages, on a loaded machine; the hung call is cancelled after it.
    await harness.start_ingest(max_attempts=4)
    await put_session(harness.store, session_6s, "sess-d")
    rec = await harness.wait_state("sess-d", S.PROCESSED, S.FAILED)
    assert (rec.state, rec.attempts) == (S.PROCESSED, 2)


async def test_a_permanent_failure_fails_the_session_and_reprocess_recovers_it(harness, session_6s):
    proc = await harness.start_processor(["fail:INVALID_ARGUMENT"])
    ingest = await harness.start_ingest()
    await put_session(harness.store, session_6s, "sess-e")
    rec = await harness.wait_state("sess-e", S.FAILED, S.PROCESSED)
    assert (rec.state, rec.attempts) == (S.FAILED, 1)
    assert "INVALID_ARGUMENT" in rec.last_error
    assert await harness.store.head("raw/sess-e/video.webm") is not None
    proc.script, proc.calls = ["ok"], 0
    await ingest.service.reprocess("sess-e")
    rec = await harness.wait_state("sess-e", S.PROCESSED)
    assert rec.attempts == 1


async def test_attempts_run_out_and_the_session_fails(harness, session_6s):
    await harness.start_processor(["fail:UNAVAILABLE"])
    await harness.start_ingest(max_attempts=2)
    await put_session(harness.store, session_6s, "sess-f")
    rec = await harness.wait_state("sess-f", S.FAILED, S.PROCESSED)
    assert (rec.state, rec.attempts) == (S.FAILED, 2)


async def test_an_invalid_session_is_rejected_with_every_problem_and_kept(harness, session_broken):
    await harness.start_processor(["ok"])
    await harness.start_ingest()
    await put_session(harness.store, session_broken, "sess-g")
    rec = await harness.wait_state("sess-g", S.REJECTED, S.PROCESSED, S.FAILED)
    assert rec.state == S.REJECTED
    codes = [p.code for p in rec.problems]
    assert codes.count("frame_value_not_finite") == 3 and codes.count("frame_value_invalid") == 3
    assert all(p.path.startswith("frames.jsonl") and p.message for p in rec.problems)
    assert calls(harness.log_dir) == []
    assert len([i async for i in harness.store.list("raw/sess-g/")]) == 5


async def test_an_incomplete_session_waits_until_its_last_file_arrives(harness, session_6s):
    await harness.start_processor(["ok"])
    await harness.start_ingest()
    await put_session(harness.store, session_6s, "sess-h", files=["video.webm", "frames.jsonl", "events.jsonl"])
    await wait_for(lambda: (r := harness.session("sess-h")) and r.checked_generation >= 4)
    rec = harness.session("sess-h")
    assert rec.state == S.RECEIVING
    assert [(p.code, p.path) for p in rec.problems] == [("file_missing", "latency.jsonl")]
    await put_session(harness.store, session_6s, "sess-h", files=["latency.jsonl"], manifest=False)
    assert (await harness.wait_state("sess-h", S.PROCESSED)).attempts == 1


async def test_messages_that_keep_failing_are_dead_lettered(harness, monkeypatch):
    ingest = await harness.start_ingest(visibility_timeout_s=0.3, dead_letter_after_receives=2, processor_target="")
    await ingest.queue.send("this is not an S3 event")
    await wait_for(lambda: ingest.catalog.dead_letters())
    [letter] = ingest.catalog.dead_letters()
    assert letter.body == "this is not an S3 event" and "malformed" in letter.reason

    def broken(**_kw):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(ingest.catalog, "record_object", broken)
    await ingest.queue.send(build_s3_event(bucket="b", region="r", key="raw/s/video.webm", size_bytes=1, etag='"e"',
                                           event_name="ObjectCreated:Put", event_time=letter.created_at,
                                           sequencer="01"))
    await wait_for(lambda: len(ingest.catalog.dead_letters()) == 2, timeout_s=20)
    newest = ingest.catalog.dead_letters()[0]
    assert newest.receive_count == 2 and "database unavailable" in newest.reason
    assert await ingest.queue.pending() == 0


async def test_two_replicas_never_process_one_session_twice(harness, session_6s):
    await harness.start_processor(["slow:0.5"])
    a = await harness.start_ingest()
    b = await harness.start_ingest()
    assert a.pipeline.owner != b.pipeline.owner
    sids = [f"sess-r{i}" for i in range(3)]
    for sid in sids:
        await put_session(harness.store, session_6s, sid)
    for sid in sids:
        rec = await harness.wait_state(sid, S.PROCESSED, S.FAILED)
        assert (rec.state, rec.attempts) == (S.PROCESSED, 1)
    done = [c["session_id"] for c in calls(harness.log_dir) if c["outcome"] == "ok"]
    assert sorted(done) == sids


async def test_graceful_stop_releases_the_lease_and_a_restart_finishes_once(harness, session_6s):
    proc = await harness.start_processor(["hang"])
    first = await harness.start_ingest(shutdown_grace_s=0.3)
    await put_session(harness.store, session_6s, "sess-s")
    await harness.wait_state("sess-s", S.PROCESSING)
    await first.stop()
    rec = harness.session("sess-s")
    assert (rec.state, rec.attempts, rec.lease_owner) == (S.VALIDATED, 0, None)
    proc.script, proc.calls = ["ok"], 0
    second = await harness.start_ingest()
    rec = await wait_for(lambda: (r := second.catalog.get_session("sess-s")).state == S.PROCESSED and r)
    assert rec.attempts == 1
    assert await success_attempt(harness.store, "processed/sess-s/") == rec.attempt_id
