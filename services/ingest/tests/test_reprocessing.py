"""Reprocessing the corpus in shards (reprocessing.py, `sdctl catalog reprocess --all`).

The sessions are uploaded and processed by the ingest in-process (test_pipeline's harness: a real local
store, a real gRPC processor stand-in), then sent back by shard workers on their own catalog
connections; the ingest's pipeline processes them again the normal way. Each test compares every row of
every table of the catalog's database (sessions, segments, replay index, ledger) and the store's
objects before and after a second run of the same shards.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter

import pytest
from fake_processor import calls
from sd_ingest.catalog import Catalog, SessionState
from sd_ingest.reprocessing import Selector, SelectorError, run_shard, shard_of
from sqlalchemy import MetaData, create_engine, select
from test_pipeline import Harness, wait_for

from conftest import put_session
from sd_common.sql import normalize_url

S = SessionState


def test_shards_are_disjoint_cover_every_id_and_do_not_move_when_ids_are_added():
    ids = [f"sess-{i:05d}" for i in range(3000)]
    for shards in (1, 2, 3, 7):
        parts = [{sid for sid in ids if shard_of(sid, shards) == k} for k in range(shards)]
        assert set().union(*parts) == set(ids)
        assert sum(len(p) for p in parts) == len(ids)  # no id in two shards
        # each shard gets its share, within 15% (sha256 spreads the ids)
        assert all(abs(len(p) - len(ids) / shards) < 0.15 * len(ids) / shards for p in parts), [len(p) for p in parts]
    before = {sid: shard_of(sid, 5) for sid in ids}
    more = ids + [f"late-{i}" for i in range(500)]
    assert {sid: shard_of(sid, 5) for sid in more if sid in before} == before
    assert shard_of("sess-00001", 4) == int.from_bytes(
        __import__("hashlib").sha256(b"sess-00001").digest()[:8], "big") % 4


def test_selectors_and_shards_that_cannot_run_are_refused_with_the_value():
    with pytest.raises(SelectorError, match="PROCESSING cannot be reprocessed"):
        Selector(states=(S.PROCESSING,))
    with pytest.raises(SelectorError, match="shards must be at least 1"):
        shard_of("x", 0)
    assert Selector().default_run_id() == Selector().default_run_id()
    assert Selector(processor_version="v1").default_run_id() != Selector().default_run_id()


_TABLES: dict[str, MetaData] = {}


def snapshot(url: str) -> dict[str, list[tuple]]:
    """Every row of every table of the database, sorted (the tables reflected once per database)."""
    engine = create_engine(normalize_url(url))
    try:
        if url not in _TABLES:
            _TABLES[url] = MetaData()
            _TABLES[url].reflect(engine)
        meta = _TABLES[url]
        with engine.connect() as conn:
            return {name: sorted((tuple(map(str, row)) for row in conn.execute(select(table))))
                    for name, table in meta.tables.items()}
    finally:
        engine.dispose()


async def store_objects(store) -> dict[str, str]:
    return {info.key: info.etag async for info in store.list("")}


def ok_calls(log_dir) -> Counter:
    return Counter(c["session_id"] for c in calls(log_dir) if c["outcome"] == "ok")


async def start(h: Harness):
    # Two sessions at once; the stand-in writes a session's output without a progress message, in this
    # test's own event loop, so on a busy machine the idle timeout is generous (an attempt is not lost).
    return await h.start_ingest(processor_slots_per_pod=2, concurrency=2, dispatch_idle_timeout_s=60.0)


async def processed_corpus(h: Harness, session_6s, ids: list[str]) -> None:
    for sid in ids:
        await put_session(h.store, session_6s, sid, f"player-{sid[-1]}")
    for sid in ids:
        assert (await h.wait_state(sid, S.PROCESSED, S.FAILED, S.REJECTED)).state == S.PROCESSED


async def settle(h: Harness) -> None:
    """Waits until the ingest has nothing in flight and has scanned the catalog again."""
    await wait_for(lambda: not h.ingests[0].pipeline.in_flight())
    await asyncio.sleep(0.4)  # several scans (scan_interval_s 0.1): anything sent would have started


async def test_shards_reprocess_each_selected_session_once_and_a_second_run_changes_nothing(
        tmp_path, db_url, session_6s):
    h = Harness(tmp_path, db_url)
    try:
        proc = await h.start_processor(["ok"])
        proc.version = "v1"
        await start(h)
        old = ["sess-1", "sess-2", "sess-5"]
        assert {shard_of(sid, 3) for sid in old} == {0, 1, 2}  # every shard has work
        await processed_corpus(h, session_6s, old)
        proc.version = "v2"
        await processed_corpus(h, session_6s, ["sess-new"])
        await settle(h)
        assert {sid: h.session(sid).processor_version for sid in [*old, "sess-new"]} == {
            **{sid: "v1" for sid in old}, "sess-new": "v2"}
        before, objects_before = snapshot(db_url), await store_objects(h.store)
        first = {sid: h.session(sid) for sid in [*old, "sess-new"]}

        workers = [Catalog(db_url) for _ in range(3)]
        try:
            # Date filters: only sess-new was processed after the v1 sessions were.
            since = Selector(processed_since=first["sess-new"].processed_at)
            until = Selector(processed_until=first["sess-new"].processed_at)
            dry = [run_shard(workers[0], sel, shard=0, shards=1, run_id="dry", dry_run=True)
                   for sel in (since, until)]
            assert [sorted(r.session_ids) for r in dry] == [["sess-new"], old]
            assert snapshot(db_url) == before  # a dry run changes nothing

            selector = Selector(processor_version="v1")
            reports = await asyncio.gather(*(asyncio.to_thread(
                run_shard, workers[k], selector, shard=k, shards=3, run_id="run-1", poll_s=0.05, timeout_s=60)
                for k in range(3)))
            assert [r.selected for r in reports] == [sum(shard_of(s, 3) == k for s in old) for k in range(3)]
            assert sum(r.sent for r in reports) == sum(r.processed for r in reports) == len(old), reports
            assert all((r.already, r.busy, r.failed, r.pending) == (0, 0, 0, 0) for r in reports)
            await settle(h)
            assert ok_calls(h.log_dir) == {**{sid: 2 for sid in old}, "sess-new": 1}
            for sid in old:
                rec = h.session(sid)
                assert (rec.state, rec.attempts, rec.processor_version, rec.reprocess_run) == (
                    S.PROCESSED, 1, "v2", "run-1")
                assert rec.attempt_id != first[sid].attempt_id
            assert h.session("sess-new") == first["sess-new"]  # not selected: untouched
            after = snapshot(db_url)
            assert [r for r in after["catalog_sessions"] if r[0] == "sess-new"] == \
                [r for r in before["catalog_sessions"] if r[0] == "sess-new"]

            # The same shards again, shard 0 twice at once: nothing is sent, nothing changes.
            objects_after = await store_objects(h.store)
            assert objects_after.keys() == objects_before.keys()  # the same outputs, rewritten
            again = await asyncio.gather(*(asyncio.to_thread(
                run_shard, workers[k], selector, shard=k % 3, shards=3, run_id="run-1", poll_s=0.05, timeout_s=60)
                for k in (0, 1, 2, 0)))
            assert sum(r.sent for r in again) == 0
            assert [r.already for r in again] == [reports[k % 3].sent for k in (0, 1, 2, 0)]
            assert [r.processed for r in again] == [reports[k % 3].processed for k in (0, 1, 2, 0)]
            await settle(h)
            assert snapshot(db_url) == after
            assert await store_objects(h.store) == objects_after
            assert ok_calls(h.log_dir) == {**{sid: 2 for sid in old}, "sess-new": 1}

            # A new run of shard 0 by two workers at once: each of its sessions is dispatched once more.
            both = await asyncio.gather(*(asyncio.to_thread(
                run_shard, workers[k], Selector(), shard=0, shards=3, run_id="run-2", poll_s=0.05, timeout_s=60)
                for k in (0, 1)))
            shard0 = [sid for sid in [*old, "sess-new"] if shard_of(sid, 3) == 0]
            assert sum(r.sent for r in both) == len(shard0) and all(r.processed == len(shard0) for r in both)
            await settle(h)
            assert ok_calls(h.log_dir) == {sid: 2 + (sid in shard0) - (sid == "sess-new") for sid in [*old, "sess-new"]}
        finally:
            for c in workers:
                c.close()
    finally:
        await h.close()


async def test_sdctl_reprocess_all_in_two_worker_processes(tmp_path, session_6s):
    db = tmp_path / "catalog.db"
    h = Harness(tmp_path, f"sqlite:///{db}")
    try:
        await h.start_processor(["ok"])
        await start(h)
        ids = ["sess-c0", "sess-c1"]
        assert [shard_of(sid, 2) for sid in ids] == [0, 1]  # one session per worker
        await processed_corpus(h, session_6s, ids)
        await settle(h)

        async def sdctl(*args: str) -> dict:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sd_common.cli.main", "catalog", "reprocess", "--all", "--json",
                "--database-url", f"sqlite:///{db}", "--poll-s", "0.1", "--timeout-s", "60", *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()
            report = json.loads(out)
            pids = [r["pid"] for r in report["shards"]]
            assert len(set(pids)) == 2 and proc.pid not in pids  # a worker process per shard
            return report

        first = await sdctl("--workers", "2")
        assert [r["shard"] for r in first["shards"]] == [0, 1]
        assert [(r["selected"], r["sent"]) for r in first["shards"]] == [(1, 1), (1, 1)]
        assert first["total"] == {"selected": 2, "sent": 2, "already": 0, "busy": 0, "processed": 2, "failed": 0,
                                  "rejected": 0, "pending": 0, "superseded": 0}
        await settle(h)
        assert ok_calls(h.log_dir) == {sid: 2 for sid in ids}
        assert {h.session(sid).reprocess_run for sid in ids} == {first["run_id"]}
        before = snapshot(f"sqlite:///{db}")

        again = await sdctl("--workers", "2")
        assert again["run_id"] == first["run_id"]
        assert (again["total"]["sent"], again["total"]["already"], again["total"]["processed"]) == (0, 2, 2)
        await settle(h)
        assert snapshot(f"sqlite:///{db}") == before
        assert ok_calls(h.log_dir) == {sid: 2 for sid in ids}
    finally:
        await h.close()


def test_a_shard_keeps_at_most_its_window_out_and_counts_each_outcome(db_url):
    """run_shard's own loop, with the ingest's part played between its looks at the catalog: each
    sleep finishes the sessions sent (one fails for good), and another run takes one over."""
    from test_catalog import _processed

    catalog = Catalog(db_url)
    try:
        ids = [f"w{i}" for i in range(7)]
        for sid in ids:
            _processed(catalog, sid)
        seen_open: list[int] = []

        def ingest_step(_s: float) -> None:
            sent = [r for r in catalog.get_sessions(ids).values() if r.state == S.VALIDATED]
            seen_open.append(len(sent))
            for rec in sent:
                catalog.claim(rec.session_id, S.VALIDATED, "ingest", 30)
                catalog.start_attempt(rec.session_id, "ingest", "2-x")
                if rec.session_id == "w3":
                    catalog.finish_failed_attempt("w3", "ingest", "bad", permanent=True, max_attempts=3, backoff_s=0)
                    continue
                catalog.finish_processed(rec.session_id, "ingest", "2-x", segments=[], qc_report_uri="q", problems=[])
                if rec.session_id == "w5":
                    catalog.reprocess_for_run("w5", "other-run", [S.PROCESSED])

        report = run_shard(catalog, Selector(), shard=0, shards=1, run_id="r", window=3, sleep=ingest_step)
        assert max(seen_open) == 3 and len(seen_open) == 3  # 7 sessions, 3 at a time
        assert (report.selected, report.sent, report.processed, report.failed, report.superseded, report.pending) == (
            7, 7, 5, 1, 1, 0)
        assert {sid: catalog.get_session(sid).reprocess_run for sid in ids} == {
            **{sid: "r" for sid in ids}, "w5": "other-run"}
    finally:
        catalog.close()
