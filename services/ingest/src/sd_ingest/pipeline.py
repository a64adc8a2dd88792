"""Drives sessions through the catalog's state machine: check, validate, dispatch — under leases.

The catalog, not memory, says what to do next (``Catalog.find_work``), so a restarted replica
carries on where any replica stopped. Each step first takes the session's lease with a conditional
UPDATE; while it works it renews the lease, and if it loses it the step is abandoned. A PROCESSING
session whose lease expired was orphaned by a dispatcher that died: if the processor finished that
attempt (its ``_SUCCESS.json`` names it) the result is registered, otherwise the attempt counts as
failed and the session is retried after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from scale_diffusion.processor.v1 import processor_pb2
from sd_common import tracing
from sd_common.objectstore import ObjectStore
from sd_common.problems import Problem
from sd_common.session_format.validate import validate_session

from sd_ingest import metrics
from sd_ingest.catalog import Catalog, LeaseLost, SessionRecord, SessionState, WorkItem
from sd_ingest.completion import check_completeness, staged_session
from sd_ingest.dispatch import DispatchFailed, ProcessorPool, ProcessorSlot
from sd_common.processed_format import QC_REPORT_NAME
from sd_ingest.outputs import OutputInvalid, read_output, success_attempt
from sd_ingest.replays import REASON_FRAMES, REASON_LOG
from sd_ingest.settings import IngestSettings

log = structlog.get_logger()
S = SessionState
# Problems that mean the raw files changed between the completeness check and validation.
_NOT_SETTLED = frozenset({"file_missing", "file_size_mismatch", "file_sha256_mismatch", "manifest_missing"})


def replica_id() -> str:
    """A name for this process as a lease owner: host, pid and a random tag."""
    return f"{socket.gethostname()[:64]}-{os.getpid()}-{secrets.token_hex(3)}"


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with jitter for the retry after ``attempts`` failed attempts."""
    return min(max_s, base_s * 2 ** max(0, attempts - 1)) * random.uniform(0.75, 1.0)


class Pipeline:
    """The worker loop of one replica."""

    def __init__(self, settings: IngestSettings, catalog: Catalog, store: ObjectStore,
                 processor: ProcessorPool | None, *, owner: str | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.processor = processor
        self.owner = owner or replica_id()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: dict[str, asyncio.Task] = {}
        self._kinds: dict[str, str] = {}
        self._limits = {"check": 4, "validate": settings.validation_concurrency, "dispatch": settings.concurrency}
        self._not_before: dict[str, float] = {}  # session → monotonic time; local backoff after errors
        self._validation_slots = asyncio.Semaphore(settings.validation_concurrency)
        self._loop_task: asyncio.Task | None = None
        self._last_gauge = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the loop in the running event loop."""
        self._loop_task = asyncio.create_task(self._run(), name="ingest-pipeline")

    def nudge(self) -> None:
        """Wakes the loop now (an event made a session ready)."""
        self._wake.set()

    async def stop(self, grace_s: float) -> None:
        """Stops starting steps, lets running ones finish within ``grace_s``, then cancels and releases them."""
        self._stopping.set()
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        running = list(self._tasks.values())
        if running:
            _done, pending = await asyncio.wait(running, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def in_flight(self) -> dict[str, str]:
        """Session id → step, for the steps running now."""
        return dict(self._kinds)

    # ---- loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._schedule()
            except Exception:  # the database may be briefly away; keep going
                log.exception("pipeline scan failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.scan_interval_s)

    async def _schedule(self) -> None:
        now = time.monotonic()
        if now - self._last_gauge > 5.0:
            self._last_gauge = now
            counts = await asyncio.to_thread(self.catalog.counts_by_state)
            for state, n in counts.items():
                metrics.SESSIONS.labels(state.value).set(n)
            metrics.DISPATCH_BACKLOG.set(counts[S.VALIDATED] + counts[S.PROCESSING])
        items = await asyncio.to_thread(self.catalog.find_work, 50)
        # Dispatches to start now: no more than the processor pods' free slots (resolved again, cached).
        free = 0
        if self.processor is not None:
            await self.processor.refresh()
            free = self.processor.free_slots()
        for item in items:
            if self._stopping.is_set():
                return
            kind = {S.RECEIVING: "check", S.COMPLETE: "validate"}.get(item.state, "dispatch")
            if item.session_id in self._tasks or self._not_before.get(item.session_id, 0) > now:
                continue
            if kind == "dispatch" and not item.orphaned:
                if free <= 0:
                    continue
                free -= 1
            if kind == "dispatch" and self.processor is None:
                continue
            if sum(1 for k in self._kinds.values() if k == kind) >= self._limits[kind]:
                continue
            self._spawn(item, kind)

    def _spawn(self, item: WorkItem, kind: str) -> None:
        step: Callable[[WorkItem], Awaitable[None]] = {
            "check": self._check, "validate": self._validate, "dispatch": self._dispatch}[kind]
        task = asyncio.create_task(self._guard(item, step, kind), name=f"{kind}:{item.session_id}")
        self._tasks[item.session_id] = task
        self._kinds[item.session_id] = kind

    async def _guard(self, item: WorkItem, step: Callable[[WorkItem], Awaitable[None]], kind: str) -> None:
        sid = item.session_id
        # one trace per step; a dispatch's call to the processor continues it there
        span = tracing.tracer("sd_ingest").start_as_current_span(f"ingest {kind}",
                                                                 attributes={tracing.SESSION_ATTRIBUTE: sid})
        try:
            with structlog.contextvars.bound_contextvars(session_id=sid), span:
                await step(item)
        except LeaseLost as exc:
            log.warning("lease lost; another replica carries on", session_id=sid, reason=str(exc))
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(
                self.catalog.release, sid, self.owner, undo_attempt=True))
            log.info("step interrupted by shutdown; lease released", session_id=sid)
        except Exception as exc:
            self._not_before[sid] = time.monotonic() + 5.0
            log.exception("step failed; will retry", session_id=sid, error=str(exc))
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.catalog.release, sid, self.owner)
        finally:
            self._tasks.pop(sid, None)
            self._kinds.pop(sid, None)
            self._wake.set()

    @contextlib.asynccontextmanager
    async def _leased(self, sid: str):
        """Renews this replica's lease on ``sid`` while the body runs; cancels the body if it is lost."""
        body = asyncio.current_task()
        lost = False

        async def heartbeat() -> None:
            nonlocal lost
            while True:
                await asyncio.sleep(self.settings.lease_s / 3)
                if not await asyncio.to_thread(self.catalog.renew, sid, self.owner, self.settings.lease_s):
                    lost = True
                    body.cancel()
                    return

        beat = asyncio.create_task(heartbeat())
        try:
            yield
        except asyncio.CancelledError:
            if lost:
                body.uncancel()
                raise LeaseLost(f"session {sid}: lease lost while working") from None
            raise
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    def _moved(self, rec: SessionRecord) -> None:
        metrics.SESSION_TRANSITIONS.labels(rec.state.value).inc()
        log.info("session state", session_id=rec.session_id, state=rec.state.value, attempts=rec.attempts)

    # ---- RECEIVING → COMPLETE ----------------------------------------------------------------------

    async def _check(self, item: WorkItem) -> None:
        rec = await asyncio.to_thread(self.catalog.claim, item.session_id, S.RECEIVING, self.owner,
                                      self.settings.lease_s)
        if rec is None:
            return
        async with self._leased(rec.session_id):
            report = await check_completeness(self.store, rec.raw_prefix)
        m = report.manifest
        done = await asyncio.to_thread(
            self.catalog.finish_check, rec.session_id, self.owner, rec.generation, complete=report.complete,
            problems=report.problems, player_id=m.player_id if m else "", manifest_sha256=report.manifest_sha256,
            duration_s=float(m.duration_s) if m else 0.0, frame_count=m.frame_count if m else 0)
        if done.state == S.COMPLETE:
            self._moved(done)
        else:
            log.info("session incomplete", session_id=rec.session_id,
                     waiting_for=[p.path for p in report.problems][:8])

    # ---- COMPLETE → VALIDATED | REJECTED -----------------------------------------------------------

    async def _validate(self, item: WorkItem) -> None:
        rec = await asyncio.to_thread(self.catalog.claim, item.session_id, S.COMPLETE, self.owner,
                                      self.settings.lease_s)
        if rec is None:
            return
        started = time.perf_counter()
        async with self._leased(rec.session_id), self._validation_slots:
            async with staged_session(self.store, rec.raw_prefix, self.settings.state_dir / "scratch") as folder:
                report = await asyncio.to_thread(validate_session, Path(folder), deep=True)
        metrics.VALIDATION_SECONDS.observe(time.perf_counter() - started)
        problems = list(report.problems)
        sid = rec.session_id
        if problems and all(p.code in _NOT_SETTLED for p in problems):
            dst = S.RECEIVING  # the raw files changed after the check: wait for them again
        else:
            dst = S.REJECTED if problems else S.VALIDATED
        done = await asyncio.to_thread(self.catalog.finish_validation, sid, self.owner, dst, problems,
                                       list(report.warnings))
        self._moved(done)
        if dst == S.REJECTED:
            log.warning("session rejected; raw files kept", session_id=sid, problems=len(problems),
                        codes=sorted({p.code for p in problems}))

    # ---- VALIDATED → PROCESSING → PROCESSED | VALIDATED | FAILED -----------------------------------

    def _out_prefix(self, sid: str) -> str:
        return f"{self.settings.processed_prefix}{sid}/"

    async def _dispatch(self, item: WorkItem) -> None:
        sid = item.session_id
        if item.orphaned:
            rec = await asyncio.to_thread(self.catalog.adopt_orphan, sid, self.owner, self.settings.lease_s)
            if rec is None:
                return
            if rec.attempt_id and await success_attempt(self.store, self._out_prefix(sid)) == rec.attempt_id:
                log.info("orphaned attempt had finished; registering its output", attempt_id=rec.attempt_id)
                await self._register(rec, rec.attempt_id, problems=[])
                return
            await self._failed(rec, DispatchFailed(
                f"attempt {rec.attempt_id} was orphaned: its dispatcher stopped renewing the lease"), 0.0)
            return
        # The pod's slot is taken before the session is claimed: a full or unreachable pool costs no attempt.
        slot = await self.processor.reserve()
        if slot is None:
            self._not_before[sid] = time.monotonic() + min(1.0, self.settings.scan_interval_s)
            return
        try:
            await self._dispatch_on(slot, sid)
        finally:
            slot.release()

    async def _dispatch_on(self, slot: ProcessorSlot, sid: str) -> None:
        rec = await asyncio.to_thread(self.catalog.claim, sid, S.VALIDATED, self.owner, self.settings.lease_s)
        if rec is None:
            return
        attempt_id = f"{rec.attempts + 1}-{secrets.token_hex(4)}"
        rec = await asyncio.to_thread(self.catalog.start_attempt, sid, self.owner, attempt_id)
        self._moved(rec)
        request = processor_pb2.ProcessSessionRequest(
            session_id=sid, raw_uri=rec.raw_prefix, output_uri=self._out_prefix(sid), attempt_id=attempt_id)
        started = time.perf_counter()
        metrics.DISPATCH_IN_FLIGHT.inc()
        try:
            async with self._leased(sid):
                result = await slot.process(request)
                if not result.rejected and await success_attempt(self.store, self._out_prefix(sid)) != attempt_id:
                    raise DispatchFailed(f"the processor answered, but {self._out_prefix(sid)}_SUCCESS.json "
                                         f"does not name attempt {attempt_id}")
                # A session the processor rejected (bad content) is PROCESSED with no accepted segment;
                # its problems say why. That is an answer, not a failure to retry.
                await self._register(rec, attempt_id, problems=[
                    Problem(p.code, p.path, p.message) for p in result.problems],
                    qc_report_uri=result.qc_report_uri, rejected=result.rejected)
            metrics.DISPATCH_SECONDS.labels("processed").observe(time.perf_counter() - started)
        except (DispatchFailed, OutputInvalid) as exc:
            failed = await self._failed(rec, exc, time.perf_counter() - started)
            metrics.DISPATCH_SECONDS.labels("retry" if failed.state == S.VALIDATED else "failed").observe(
                time.perf_counter() - started)
        finally:
            metrics.DISPATCH_IN_FLIGHT.dec()

    async def _register(self, rec: SessionRecord, attempt_id: str, *, problems: list[Problem],
                        qc_report_uri: str = "", rejected: bool = False) -> None:
        fingerprints, version = None, ""
        try:
            output = await read_output(self.store, self._out_prefix(rec.session_id), rec.session_id)
            segments, fingerprints, version = output.segments, output.fingerprints, output.processor_version
        except OutputInvalid:
            if not rejected:
                raise
            segments = []
        if rejected:
            log.warning("the processor rejected the session; no segment exported", session_id=rec.session_id,
                        codes=sorted({p.code for p in problems}))
        done = await asyncio.to_thread(
            self.catalog.finish_processed, rec.session_id, self.owner, attempt_id, segments=segments,
            qc_report_uri=qc_report_uri or self._out_prefix(rec.session_id) + QC_REPORT_NAME, problems=problems,
            fingerprints=fingerprints, processor_version=version)
        self._moved(done)
        if any(p.code in (REASON_FRAMES, REASON_LOG) for p in done.problems):
            log.warning("the session replays an earlier one; its repeated segments are rejected",
                        session_id=rec.session_id, codes=sorted({p.code for p in done.problems
                                                                 if p.code in (REASON_FRAMES, REASON_LOG)}))

    async def _failed(self, rec: SessionRecord, exc: Exception, elapsed_s: float) -> SessionRecord:
        permanent = isinstance(exc, DispatchFailed) and exc.permanent
        current = await asyncio.to_thread(self.catalog.get_session, rec.session_id)
        attempts = current.attempts if current else rec.attempts
        delay = backoff_s(attempts, self.settings.retry_backoff_s, self.settings.retry_backoff_max_s)
        done = await asyncio.to_thread(
            self.catalog.finish_failed_attempt, rec.session_id, self.owner, str(exc), permanent=permanent,
            max_attempts=self.settings.max_attempts, backoff_s=delay)
        self._moved(done)
        log.warning("dispatch attempt failed", session_id=rec.session_id, error=str(exc), permanent=permanent,
                    attempts=done.attempts, next_state=done.state.value,
                    retry_in_s=round(delay, 2) if done.state == S.VALIDATED else None,
                    elapsed_s=round(elapsed_s, 3))
        return done
