"""The ingest and a processor as real processes, killed with SIGKILL mid-session.

- A processor killed mid-session: the session is retried and finishes once.
- The ingest killed mid-stream and started again: no event is lost, nothing is counted twice.

The first is run twice: against the ingest's scripted stand-in (services/ingest/tests/fake_processor.py,
which records every call it gets) and against the real processor (`python -m sd_processor`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scale_diffusion.ingest.v1 import ingest_pb2
from sd_common.objectstore import LocalEventQueue
from sd_ingest.catalog import Catalog, SessionState
from sd_ingest.outputs import success_attempt

from tests.ingest_access import catalog_session, put_session_locally
from tests.ports import free_port
from tests.pg import start_postgres

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "services" / "ingest" / "tests" / "fake_processor.py"
S = SessionState


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def _calls(log_dir: Path) -> list[dict]:
    path = log_dir / "calls.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


class Procs:
    """Processes started by a test; every one still running is killed at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store_root = tmp / "store"
        self.log_dir = tmp / "processor"
        self.running: list[subprocess.Popen] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "SD_STORE_BACKEND": "local", "SD_STORE_ROOT": str(self.store_root), **extra}

    def processor(self, port: int, script: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(FAKE), "--port", str(port), "--script", script,
                                 "--log-dir", str(self.log_dir)], env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.running.append(proc)
        line = proc.stdout.readline()
        assert "listening" in line, line + proc.stdout.read()
        return proc

    def real_processor(self, port: int) -> subprocess.Popen:
        """`python -m sd_processor` on ``port``, logging JSON lines to processor-<n>.log; healthy when returned."""
        log = open(self.tmp / f"processor-{len(self.running)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "sd_processor"], env=self.env(
            SD_PROCESSOR_GRPC_PORT=str(port), SD_PROCESSOR_METRICS_PORT="0", SD_PROCESSOR_LOG_FORMAT="json",
            SD_PROCESSOR_WORK_DIR=str(self.tmp / "work"), SD_PROCESSOR_SHUTDOWN_GRACE_S="2",
            SD_PROCESSOR_VERSION="9.9.9-test"),
            stdout=log, stderr=subprocess.STDOUT)
        self.running.append(proc)
        self._wait_healthy(proc, port, Path(log.name), "the processor")
        return proc

    def _wait_healthy(self, proc: subprocess.Popen, port: int, log: Path, what: str) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            def healthy() -> bool:
                assert proc.poll() is None, log.read_text()
                try:
                    return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1).status \
                        == health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    return False
            _wait(healthy, 60, f"{what} to be healthy")

    def ingest(self, grpc_port: int, processor_port: int, database_url: str, **settings: str) -> subprocess.Popen:
        env = self.env(**{f"SD_INGEST_{k.upper()}": str(v) for k, v in {
            "grpc_port": grpc_port, "metrics_port": 0, "state_dir": self.tmp / "ingest",
            "database_url": database_url, "processor_target": f"127.0.0.1:{processor_port}",
            "scan_interval_s": 0.2, "receive_wait_s": 0.2, "retry_backoff_s": 0.2, "retry_backoff_max_s": 1,
            "lease_s": 2, "visibility_timeout_s": 3, "log_format": "json", "shutdown_grace_s": 2,
            **settings}.items()})
        log = open(self.tmp / f"ingest-{grpc_port}-{len(self.running)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "sd_ingest"], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.running.append(proc)
        self._wait_healthy(proc, grpc_port, Path(log.name), "the ingest")
        return proc

    def kill_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.kill_all()


@pytest.fixture(scope="module")
def session_6s(tmp_path_factory) -> Path:
    from sd_common.session_format.synth import SynthConfig, synth_session
    out = tmp_path_factory.mktemp("synth6-rel")
    synth_session(out, SynthConfig(width=256, height=144, duration_s=6.0, seed=21))
    return out / "session"


def test_a_processor_killed_mid_session_is_retried_and_finishes_once(procs, session_6s):
    processor_port, ingest_port = free_port(), free_port()
    first = procs.processor(processor_port, "slow:30")
    # Retries back off to 1 s; 30 attempts give the new processor about 25 s to come up, which a loaded
    # machine needs (6 attempts, about 3 s, ran out while it was still importing).
    procs.ingest(ingest_port, processor_port, f"sqlite:///{procs.tmp / 'catalog.db'}", max_attempts=30)
    put_session_locally(procs.store_root, session_6s, "sess-kill")
    _wait(lambda: any(c["outcome"] == "started" for c in _calls(procs.log_dir)), 60, "the first dispatch")
    first.send_signal(signal.SIGKILL)
    first.wait()
    procs.processor(processor_port, "ok")  # the processor comes back on the same address
    done = _wait(lambda: (s := catalog_session(ingest_port, "sess-kill")) and s.catalog_state in (
        ingest_pb2.CATALOG_STATE_PROCESSED, ingest_pb2.CATALOG_STATE_FAILED) and s, 60, "PROCESSED")
    assert done.catalog_state == ingest_pb2.CATALOG_STATE_PROCESSED, done.last_error
    assert done.attempts >= 2 and done.segments_accepted == 1
    finished = [c for c in _calls(procs.log_dir) if c["outcome"] == "ok"]
    assert len(finished) == 1 and finished[0]["attempt_id"] == done.attempt_id
    import asyncio

    from sd_common.objectstore import make_store
    from sd_common.settings import StoreSettings

    async def marker() -> str | None:
        store = make_store(StoreSettings(backend="local", root=procs.store_root))
        try:
            return await success_attempt(store, "processed/sess-kill/")
        finally:
            await store.close()

    assert asyncio.run(marker()) == done.attempt_id
    assert (procs.store_root / "raw" / "sess-kill" / "video.webm").is_file()  # the raw upload is kept


def _events(log: Path, event: str, sid: str) -> list[dict]:
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")] if log.exists() else []
    return [x for x in lines if x.get("event") == event and x.get("session_id") == sid]


def test_the_real_processor_killed_mid_session_is_retried_and_finishes_once(procs, long_session_dir):
    processor_port, ingest_port = free_port(), free_port()
    first = procs.real_processor(processor_port)
    first_log = procs.tmp / "processor-0.log"
    # Two attempts: the killed one, and one retry, which waits for the processor to be back rather
    # than spending itself on refused connections while it restarts.
    procs.ingest(ingest_port, processor_port, f"sqlite:///{procs.tmp / 'catalog.db'}", max_attempts=2,
                 dispatch_idle_timeout_s=60)
    put_session_locally(procs.store_root, long_session_dir, "sess-real-kill")
    [started] = _wait(lambda: _events(first_log, "processing", "sess-real-kill"), 90, "the processor to start")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert _events(first_log, "processed", "sess-real-kill") == []  # killed before it finished
    time.sleep(3)  # down for a while, as under a supervisor's restart delay
    procs.real_processor(processor_port)  # back on the same address, as a supervisor would bring it
    done = _wait(lambda: (s := catalog_session(ingest_port, "sess-real-kill")) and s.catalog_state in (
        ingest_pb2.CATALOG_STATE_PROCESSED, ingest_pb2.CATALOG_STATE_FAILED) and s, 120, "PROCESSED")
    assert done.catalog_state == ingest_pb2.CATALOG_STATE_PROCESSED, done.last_error
    assert done.attempts == 2 and done.attempt_id != started["attempt_id"]
    second_log = procs.tmp / f"processor-{len(procs.running) - 1}.log"
    [finished] = _events(second_log, "processed", "sess-real-kill")  # finished once, by the retry
    assert finished["attempt_id"] == done.attempt_id and done.segments_accepted == finished["segments_accepted"] > 0
    import asyncio

    from sd_common.objectstore import make_store
    from sd_common.settings import StoreSettings

    async def marker() -> str | None:
        store = make_store(StoreSettings(backend="local", root=procs.store_root))
        try:
            return await success_attempt(store, "processed/sess-real-kill/")
        finally:
            await store.close()

    assert asyncio.run(marker()) == done.attempt_id
    catalog = Catalog(f"sqlite:///{procs.tmp / 'catalog.db'}")
    try:
        segments = [seg for seg in catalog.accepted_segments() if seg.session_id == "sess-real-kill"]
        assert len(segments) == done.segments_accepted  # the killed attempt left nothing counted
        # what a reprocessing selects by: the release named in the processor's segments.json
        assert catalog.get_session("sess-real-kill").processor_version == "9.9.9-test"
    finally:
        catalog.close()


def test_an_ingest_killed_mid_stream_loses_and_double_counts_nothing(procs, session_6s):
    pg = start_postgres()
    try:
        url = pg.new_database()
        processor_port, ingest_port = free_port(), free_port()
        procs.processor(processor_port, "slow:1.5")
        first = procs.ingest(ingest_port, processor_port, url, concurrency=1)
        sids = [f"sess-{i}" for i in range(3)]
        for sid in sids:
            put_session_locally(procs.store_root, session_6s, sid)
        # Kill it while it holds a dispatch and has events still queued or leased.
        _wait(lambda: any(c["outcome"] == "started" for c in _calls(procs.log_dir)), 60, "a dispatch")
        first.send_signal(signal.SIGKILL)
        first.wait()
        procs.ingest(ingest_port, processor_port, url, concurrency=1)
        for sid in sids:
            s = _wait(lambda sid=sid: (s := catalog_session(ingest_port, sid)) and s.catalog_state in (
                ingest_pb2.CATALOG_STATE_PROCESSED, ingest_pb2.CATALOG_STATE_FAILED) and s, 90, f"{sid} PROCESSED")
            assert s.catalog_state == ingest_pb2.CATALOG_STATE_PROCESSED, s.last_error
            assert s.segments_accepted == 1
        queue = LocalEventQueue(procs.store_root / ".events")
        import asyncio
        _wait(lambda: asyncio.run(queue.pending()) == 0, 30, "every event to be handled")
        catalog = Catalog(url)
        try:
            assert [r.session_id for r in catalog.list_sessions()] == sids
            assert sorted(seg.session_id for seg in catalog.accepted_segments()) == sids  # once each
            for sid in sids:
                assert len(catalog.object_deliveries(sid)) == 5  # every raw file recorded, none lost
        finally:
            catalog.close()
        finished = sorted(c["session_id"] for c in _calls(procs.log_dir) if c["outcome"] == "ok")
        assert finished == sids  # each session's output was completed exactly once
    finally:
        procs.kill_all()
        pg.stop()


def test_sessions_spread_over_three_processors_and_one_killed_mid_session_loses_nothing(procs, session_6s):
    """Client-side balancing (dispatch.ProcessorPool): three processor processes, one slot each, nine
    sessions. Every processor takes sessions; one is killed while it processes one; every session
    ends PROCESSED with one completed output, made by the attempt the catalog holds."""
    ports = [free_port() for _ in range(3)]
    victims = [procs.processor(port, "slow:1.5") for port in ports]
    ingest_port = free_port()
    procs.ingest(ingest_port, ports[0], f"sqlite:///{procs.tmp / 'catalog.db'}", concurrency=3, max_attempts=5,
                 processor_target=",".join(f"127.0.0.1:{p}" for p in ports), processor_slots_per_pod=1)
    sids = [f"sess-lb-{i}" for i in range(9)]
    for sid in sids:
        put_session_locally(procs.store_root, session_6s, sid)
    # Each pod holds one session at a time: the first three dispatches go to three different pods.
    first = _wait(lambda: (c := [x for x in _calls(procs.log_dir) if x["outcome"] == "started"]) and
                  len({x["pid"] for x in c}) == 3 and c, 60, "a dispatch on every processor")
    victim = victims[1]
    doomed = next(c for c in first if c["pid"] == victim.pid)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = {}
    for sid in sids:
        done[sid] = _wait(lambda sid=sid: (s := catalog_session(ingest_port, sid)) and s.catalog_state in (
            ingest_pb2.CATALOG_STATE_PROCESSED, ingest_pb2.CATALOG_STATE_FAILED) and s, 120, f"{sid} PROCESSED")
        assert done[sid].catalog_state == ingest_pb2.CATALOG_STATE_PROCESSED, done[sid].last_error
    calls = _calls(procs.log_dir)
    finished = [c for c in calls if c["outcome"] == "ok"]
    assert sorted(c["session_id"] for c in finished) == sids  # each completed exactly once
    for c in finished:
        assert c["attempt_id"] == done[c["session_id"]].attempt_id  # by the attempt the catalog registered
    assert victim.pid not in {c["pid"] for c in finished}  # the killed pod completed nothing
    retried = done[doomed["session_id"]]
    assert retried.attempts >= 2 and retried.attempt_id != doomed["attempt_id"]
    by_pod = {p.pid: sum(c["pid"] == p.pid for c in finished) for p in victims if p is not victim}
    assert all(n >= 1 for n in by_pod.values()), by_pod  # the two survivors shared the rest
    catalog = Catalog(f"sqlite:///{procs.tmp / 'catalog.db'}")
    try:
        assert sorted(seg.session_id for seg in catalog.accepted_segments()) == sids  # counted once each
    finally:
        catalog.close()
