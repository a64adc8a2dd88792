"""Jobs of a service that run a program as a child process, one JSON record per job: what the trainer's
training runs and the evaluator's evaluations share.

No gRPC here. Each service subclasses `ProcessLauncher` with its record type (a dataclass deriving from
`ProcessRecord`), its states, its command line, its wording and its error classes; this module keeps the
records (`<records_dir>/<id>.json`, replaced atomically), starts queued jobs oldest first while there is
room, cancels with SIGTERM then SIGKILL after a grace, settles what a previous service process left
(stops an orphaned process group, restarts a job at most a set number of times) and reads the
process's progress.json, result.json and log when it ends. It also holds the listing page tokens and
the plumbing of the services' custom resources in Kubernetes (`call_custom_objects`,
`list_custom_objects`, `condition_message`, `custom_objects_api`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

log = structlog.get_logger()

MAX_PAGE = 500
DEFAULT_PAGE = 50


def now_utc() -> str:
    """Now as an ISO 8601 UTC timestamp with microseconds and a `Z`."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(kw_only=True)
class ProcessRecord:
    """The fields a subprocess launcher needs to supervise a job; a service's record derives from it."""

    pid: int = 0
    pid_started: str = ""  # the process's start time in /proc (tells a reused pid from ours)
    exit_code: int | None = None
    cancel_requested: bool = False
    launches: int = 0

    def to_json(self) -> str:
        """The record as stored (one JSON object)."""
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Any:
        """A stored record; keys this version does not know are ignored."""
        doc = json.loads(text)
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in doc.items() if k in known})
        record.loaded()
        return record

    def loaded(self) -> None:
        """Turns the values JSON gave back into their types (an enum, nested records)."""


# --- page tokens ---------------------------------------------------------------------------------------


def encode_page_token(key: tuple[str, str]) -> str:
    """The token of a listing's last item: its sort key (creation time, id)."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def decode_page_token(token: str, invalid: type[Exception]) -> tuple[str, str] | None:
    """The sort key a token names (None for ""); `invalid` when this service did not issue it."""
    if not token:
        return None
    try:
        created_at, item_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        if isinstance(created_at, str) and isinstance(item_id, str):
            return created_at, item_id
    except (ValueError, TypeError):
        pass
    raise invalid("page_token is not one this service issued")


def page_of(items: Sequence[Any], page_size: int, page_token: str, invalid: type[Exception]) -> tuple[list[Any], str]:
    """One page of items (each with a `sort_key`), newest first, after the item the token names; and the
    next token ("" at the end). Bad sizes and tokens raise `invalid`."""
    if page_size < 0:
        raise invalid(f"page_size must be >= 0, got {page_size}")
    limit = min(page_size or DEFAULT_PAGE, MAX_PAGE)
    after = decode_page_token(page_token, invalid)
    ordered = sorted(items, key=lambda r: r.sort_key, reverse=True)
    if after is not None:
        ordered = [r for r in ordered if r.sort_key < after]
    chunk = ordered[:limit]
    return chunk, (encode_page_token(chunk[-1].sort_key) if len(ordered) > limit else "")


# --- what a child process leaves -------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file; None when it is missing, half written or not an object."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not written yet, or being rewritten
    return doc if isinstance(doc, dict) else None


def as_number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (booleans included)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def process_started(pid: int) -> str:
    """The start time of a process (field 22 of /proc/<pid>/stat), "" when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log (of its last 8 KiB), cut to `limit` characters."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:limit] if lines else ""


def failure_reason(progress: dict[str, Any] | None, log_path: Path) -> str:
    """Why the process failed: the reason it wrote into progress.json, else the last line of its log."""
    if progress and progress.get("state") == "failed" and progress.get("message"):
        return f"{progress.get('reason') or 'error'}: {str(progress['message'])[:500]}"
    return last_line(log_path) or f"see {log_path}"


def describe_exit(code: int) -> str:
    """`exit code N`, or `killed by SIGNAME` for a negative return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


# --- the launcher --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LauncherWording:
    """A service's messages, as `str.format` templates. Fields: `r` (the record), `out` (its folder),
    `exit` (describe_exit), `reason` (failure_reason), `exc`, `running`, `max_concurrent`, `id`, `state`."""

    waiting: str
    not_started: str
    cancelled: str
    interrupted: str
    succeeded: str
    no_result: str
    bad_input: str
    crashed: str
    recovered_cancelled: str
    finished_while_down: str
    gone_too_often: str
    gone_restarting: str
    not_found: str
    already_final: str


R = TypeVar("R", bound=ProcessRecord)


class ProcessLauncher(Generic[R]):
    """Runs each record's job as a child process (its own process group) and keeps the record in
    `<records_dir>/<id>.json`; the job's files are in `<outputs_dir>/<id>/`. A subclass sets the class
    attributes and the hooks below."""

    name = "subprocess"
    record_type: type[R]
    states: type[StrEnum]  # with PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED
    id_field: str  # the record's id attribute
    restarts_field: str  # the record's count of restarts after a service restart
    noun: str  # "run": in log events
    process_noun: str  # "training": in log events
    log_name: str  # the process's stdout and stderr, in its folder
    wording: LauncherWording
    not_found_error: type[Exception]
    finished_error: type[Exception]
    running_gauge: Any  # prometheus Gauge
    finished_counter: Any  # prometheus Counter labelled by state

    def __init__(self, records_dir: Path, outputs_dir: Path, *, max_concurrent: int, stop_grace_s: float,
                 program: Sequence[str], env: dict[str, str] | None, clock: Callable[[], str]) -> None:
        self.records_dir = Path(records_dir)
        self.outputs_dir = Path(outputs_dir)
        self.max_concurrent = max_concurrent
        self.stop_grace_s = stop_grace_s
        self.program = list(program)
        self.env = env
        self._clock = clock
        self._records: dict[str, R] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: dict[str, asyncio.Task] = {}
        self._lock = asyncio.Lock()
        self._stopping = False

    # hooks ---------------------------------------------------------------------------------------------

    @property
    def restart_limit(self) -> int:
        """How many times a job whose process was gone after a service restart starts again."""
        raise NotImplementedError

    def command(self, record: R, out: Path) -> list[str]:
        """The process's arguments after the program."""
        raise NotImplementedError

    def new_id(self, record: R) -> str:
        """A fresh id for a record whose id is taken."""
        raise NotImplementedError

    def apply_progress(self, record: R, progress: dict[str, Any] | None, result: dict[str, Any] | None) -> None:
        """Copies what progress.json / result.json say into the record."""
        raise NotImplementedError

    def prepare_out(self, out: Path) -> None:
        """Before each launch, in the job's folder (a launcher that starts over removes old files)."""

    def on_launch(self, record: R) -> None:
        """After a launch, before the record is saved (sets its message)."""

    def on_final(self, record: R) -> None:
        """When the record reaches a final state, before it is saved."""

    # the mechanics -------------------------------------------------------------------------------------

    @property
    def final_states(self) -> frozenset:
        """The states a job never leaves."""
        return frozenset({self.states.SUCCEEDED, self.states.FAILED, self.states.CANCELLED})

    def _id(self, record: R) -> str:
        return getattr(record, self.id_field)

    def _say(self, template: str, record: R, **values: Any) -> str:
        return template.format(r=record, **values)

    def out_dir(self, record_id: str) -> Path:
        """The job's --out folder."""
        return self.outputs_dir / record_id

    def load(self) -> None:
        """Reads every record (before the API serves)."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = self.record_type.from_json(path.read_text())
            except (OSError, ValueError, TypeError) as exc:
                log.error(f"unreadable {self.noun} record left alone", path=str(path), error=str(exc))
                continue
            self._records[self._id(record)] = record

    def _save(self, record: R) -> None:
        record.updated_at = self._clock()
        self.records_dir.mkdir(parents=True, exist_ok=True)
        record_id = self._id(record)
        tmp = self.records_dir / f".{record_id}.json.tmp"
        tmp.write_text(record.to_json())
        os.replace(tmp, self.records_dir / f"{record_id}.json")  # a reader never sees half a record

    def _running(self) -> int:
        return sum(1 for r in self._records.values() if r.state == self.states.RUNNING)

    def _files(self, record: R) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        out = self.out_dir(self._id(record))
        return read_json(out / "progress.json"), read_json(out / "result.json")

    async def open(self) -> None:
        """Settles jobs left by the previous service process, then starts what is pending."""
        async with self._lock:
            for record in sorted(self._records.values(), key=lambda r: r.sort_key):
                if record.state not in self.final_states:
                    await self._recover(record)
            await self._fill()
        self.running_gauge.set(self._running())

    async def _recover(self, record: R) -> None:
        bound = log.bind(**{self.id_field: self._id(record)})
        s, w = self.states, self.wording
        if record.state == s.RUNNING and record.pid and process_started(record.pid) == record.pid_started:
            # The previous service died without stopping it (SIGKILL): it is not our child, so we cannot
            # wait for its exit status. Stop it and start it again under this process's supervision.
            bound.warning(f"stopping a {self.process_noun} process left by the previous service", pid=record.pid)
            await self._stop_orphan(record.pid, record.pid_started)
        progress, result = self._files(record)
        self.apply_progress(record, progress, result)
        if record.cancel_requested:
            self._final(record, s.CANCELLED, self._say(w.recovered_cancelled, record))
        elif record.state == s.RUNNING and result is not None:
            self._final(record, s.SUCCEEDED, self._say(w.finished_while_down, record))
        elif record.state == s.RUNNING:
            if getattr(record, self.restarts_field) >= self.restart_limit:
                self._final(record, s.FAILED, self._say(w.gone_too_often, record))
            else:
                setattr(record, self.restarts_field, getattr(record, self.restarts_field) + 1)
                record.state, record.pid, record.pid_started = s.PENDING, 0, ""
                record.message = self._say(w.gone_restarting, record)
                bound.warning(f"starting again a {self.noun} whose process was gone",
                              restarts=getattr(record, self.restarts_field))
                self._save(record)

    async def _stop_orphan(self, pid: int, started: str) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_grace_s
        while process_started(pid) == started and loop.time() < deadline:
            await asyncio.sleep(0.1)
        if process_started(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = loop.time() + 10  # its new parent (init) reaps it
            while process_started(pid) == started and loop.time() < deadline:
                await asyncio.sleep(0.05)

    def _final(self, record: R, state: StrEnum, message: str) -> None:
        record.state, record.message, record.finished_at = state, message, self._clock()
        record.pid, record.pid_started = 0, ""
        self.on_final(record)
        self._save(record)
        self.finished_counter.labels(state.value).inc()
        log.info(f"{self.noun} finished", **{self.id_field: self._id(record)}, state=state.value, message=message)

    async def _fill(self) -> None:
        """Starts pending jobs, oldest first, while there is room (caller holds the lock)."""
        if self._stopping:
            return
        for record in sorted(self._records.values(), key=lambda r: r.sort_key):
            if self._running() >= self.max_concurrent:
                break
            if record.state == self.states.PENDING and not record.cancel_requested:
                try:
                    await self._launch(record)
                except OSError as exc:  # the program is missing, the folder unwritable
                    self._final(record, self.states.FAILED, self._say(self.wording.not_started, record, exc=exc))
        self.running_gauge.set(self._running())

    async def _launch(self, record: R) -> None:
        record_id = self._id(record)
        out = self.out_dir(record_id)
        out.mkdir(parents=True, exist_ok=True)
        self.prepare_out(out)
        with (out / self.log_name).open("ab") as logfile:
            proc = await asyncio.create_subprocess_exec(
                *self.program, *self.command(record, out), stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile, stderr=asyncio.subprocess.STDOUT, env=self.env,
                start_new_session=True)  # its own process group: a stop reaches its workers and browsers too
        record.state, record.pid, record.pid_started = self.states.RUNNING, proc.pid, process_started(proc.pid)
        record.launches += 1
        record.started_at = record.started_at or self._clock()
        record.exit_code = None
        self.on_launch(record)
        self._procs[record_id] = proc
        self._save(record)
        self._watchers[record_id] = asyncio.create_task(self._watch(record, proc))
        log.info(f"{self.process_noun} process started", **{self.id_field: record_id}, pid=proc.pid,
                 launch=record.launches, out=str(out))

    async def _watch(self, record: R, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        s, w = self.states, self.wording
        async with self._lock:
            record_id = self._id(record)
            self._procs.pop(record_id, None)
            self._watchers.pop(record_id, None)
            out = self.out_dir(record_id)
            progress, result = self._files(record)
            self.apply_progress(record, progress, result)
            record.exit_code = code
            say = {"out": out, "exit": describe_exit(code)}
            if record.cancel_requested:
                self._final(record, s.CANCELLED, self._say(w.cancelled, record, **say))
            elif self._stopping and result is None:
                record.state, record.pid, record.pid_started = s.PENDING, 0, ""
                record.message = self._say(w.interrupted, record, **say)
                self._save(record)
                log.info(f"{self.noun} interrupted by shutdown", **{self.id_field: record_id})
            elif code == 0 and result is not None:
                self._final(record, s.SUCCEEDED, self._say(w.succeeded, record, **say))
            elif code == 0:
                self._final(record, s.FAILED, self._say(w.no_result, record, **say))
            else:
                reason = failure_reason(progress, out / self.log_name)
                template = w.bad_input if code == 2 else w.crashed
                self._final(record, s.FAILED, self._say(template, record, reason=reason, **say))
            await self._fill()
            self.running_gauge.set(self._running())

    def _find(self, record_id: str) -> R:
        record = self._records.get(record_id)
        if record is None:
            raise self.not_found_error(self.wording.not_found.format(id=record_id))
        return record

    async def start(self, record: R) -> R:
        """Records the job and starts it when there is room (else it waits as PENDING)."""
        async with self._lock:
            while self._id(record) in self._records:
                record = replace(record, **{self.id_field: self.new_id(record)})
            if self._running() >= self.max_concurrent:
                record.message = self._say(self.wording.waiting, record, running=self._running(),
                                           max_concurrent=self.max_concurrent)
            self._records[self._id(record)] = record
            self._save(record)
            await self._fill()
            return replace(record)

    async def get(self, record_id: str) -> R:
        """The job's record; a running one with its progress.json read now."""
        record = self._find(record_id)
        if record.state == self.states.RUNNING:
            self.apply_progress(record, self._files(record)[0], None)
        return replace(record)

    async def list(self) -> list[R]:
        """Every job this service knows."""
        return [await self.get(record_id) for record_id in list(self._records)]

    async def cancel(self, record_id: str) -> R:
        """Pending: cancelled now. Running: SIGTERM, SIGKILL after the grace, then CANCELLED."""
        async with self._lock:
            record = self._find(record_id)
            if record.state in self.final_states:
                raise self.finished_error(self.wording.already_final.format(id=record_id,
                                                                            state=record.state.value.lower()))
            record.cancel_requested = True
            proc = self._procs.get(record_id)
            if proc is None:
                self._final(record, self.states.CANCELLED, "cancelled before it started")
                return replace(record)
            self._save(record)
            watcher = self._watchers.get(record_id)
        await self._terminate(proc)
        if watcher is not None:
            await asyncio.shield(watcher)
        return replace(self._records[record_id])

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.stop_grace_s)
        except TimeoutError:
            log.warning(f"{self.process_noun} process ignored SIGTERM; killing it", pid=proc.pid,
                        grace_s=self.stop_grace_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def close(self) -> None:
        """Service shutdown: stops every process (SIGTERM, then SIGKILL) and records it."""
        async with self._lock:
            self._stopping = True
            procs = list(self._procs.values())
            watchers = list(self._watchers.values())
        await asyncio.gather(*(self._terminate(p) for p in procs))
        await asyncio.gather(*watchers, return_exceptions=True)
        self.running_gauge.set(0)


# --- custom resources in Kubernetes ----------------------------------------------------------------------


async def call_custom_objects(fn: Callable[..., Any], group: str, version: str, namespace: str, plural: str,
                              *args: Any, unavailable: type[Exception],
                              not_found: Callable[[], Exception] | None = None, **kwargs: Any) -> Any:
    """One CustomObjectsApi call in a thread: a 404 raises `not_found()` when given, any other answer
    or an unreachable API raises `unavailable` with what the API said."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return await asyncio.to_thread(fn, group, version, namespace, plural, *args, **kwargs)
    except ApiException as exc:
        if exc.status == 404 and not_found is not None:
            raise not_found() from None
        raise unavailable(f"the Kubernetes API answered {exc.status} {exc.reason}"
                          f"{': ' + exc.body[:300] if isinstance(exc.body, str) else ''}") from None
    except (HTTPError, OSError) as exc:
        raise unavailable(f"the Kubernetes API is unreachable ({type(exc).__name__}: {exc})") from None


async def list_custom_objects(call: Callable[..., Awaitable[Any]], list_fn: Callable[..., Any]) -> list[dict]:
    """Every object of a list call, read in pages of the API's own (`call(list_fn, **kwargs)`)."""
    items: list[dict] = []
    token = None
    while True:
        kwargs = {"limit": 500, **({"_continue": token} if token else {})}
        doc = await call(list_fn, **kwargs)
        items += doc.get("items", [])
        token = (doc.get("metadata") or {}).get("continue")
        if not token:
            return items


def condition_message(status: dict[str, Any], cancel_requested: bool, final: bool) -> str:
    """A resource's message: its status.message, else its newest condition's reason and message; while
    a cancel waits for the operator, that."""
    message = ""
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if isinstance(status.get("message"), str) and status["message"]:
        message = status["message"]
    elif conditions:
        last = max(conditions, key=lambda c: c.get("lastTransitionTime") or "")
        message = ": ".join(x for x in (last.get("reason"), last.get("message")) if x)
    if cancel_requested and not final:
        message = "cancel requested; the operator stops its Job"
    return message


def custom_objects_api(api_url: str, settings_prefix: str) -> Any:
    """A CustomObjectsApi: the given API server, else in-cluster credentials, else ~/.kube/config.
    `settings_prefix` (SD_TRAINER) names the service's settings in the error."""
    from kubernetes import client, config

    if api_url:
        cfg = client.Configuration()
        cfg.host = api_url.rstrip("/")
        return client.CustomObjectsApi(client.ApiClient(cfg))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise RuntimeError(f"{settings_prefix}_LAUNCHER=kubernetes needs the Kubernetes API: run in a pod "
                               "with a service account, give ~/.kube/config, or set "
                               f"{settings_prefix}_KUBE_API_URL ({exc})") from None
    return client.CustomObjectsApi()


class ResourceLauncher(Generic[R]):
    """Jobs as custom resources in one namespace, through the Kubernetes API; the operator runs each as a
    Job and writes its status. A subclass sets the class attributes and builds and reads its resource."""

    name = "kubernetes"
    group: str
    version: str
    plural: str
    states: type[StrEnum]
    missing: str  # a 404's message, with {id} and {namespace}
    already_final: str  # with {id} and {state}
    not_found_error: type[Exception]
    finished_error: type[Exception]
    unavailable_error: type[Exception]
    running_gauge: Any

    def __init__(self, api: Any, namespace: str) -> None:
        self.api = api  # kubernetes.client.CustomObjectsApi
        self.namespace = namespace

    def body(self, record: R) -> dict[str, Any]:
        """The resource a new job creates."""
        raise NotImplementedError

    def record_of(self, obj: dict[str, Any]) -> R:
        """A job read back from its resource."""
        raise NotImplementedError

    async def with_progress(self, record: R) -> R:
        """A job that Get returns, with what else is known of it now (its resource's status by default)."""
        return record

    async def _call(self, fn: Callable[..., Any], *args: Any, record_id: str = "", **kwargs: Any) -> Any:
        def not_found() -> Exception:
            return self.not_found_error(self.missing.format(id=record_id, namespace=self.namespace))

        return await call_custom_objects(fn, self.group, self.version, self.namespace, self.plural, *args,
                                         unavailable=self.unavailable_error,
                                         not_found=not_found if record_id else None, **kwargs)

    async def start(self, record: R) -> R:
        """Creates the resource; the operator makes its Job."""
        created = await self._call(self.api.create_namespaced_custom_object, self.body(record))
        return self.record_of(created) if isinstance(created, dict) and created.get("spec") else replace(record)

    async def get(self, record_id: str) -> R:
        """The job as its resource's status says."""
        obj = await self._call(self.api.get_namespaced_custom_object, record_id, record_id=record_id)
        return await self.with_progress(self.record_of(obj))

    async def list(self) -> list[R]:
        """Every resource in the namespace (read in pages of the API's own)."""
        objects = await list_custom_objects(self._call, self.api.list_namespaced_custom_object)
        records = [self.record_of(o) for o in objects]
        self.running_gauge.set(sum(1 for r in records if r.state == self.states.RUNNING))
        return records

    async def cancel(self, record_id: str) -> R:
        """Sets spec.cancel; the operator deletes the Job and sets phase Cancelled."""
        record = await self.get(record_id)
        if record.state in {self.states.SUCCEEDED, self.states.FAILED, self.states.CANCELLED}:
            raise self.finished_error(self.already_final.format(id=record_id, state=record.state.value.lower()))
        patched = await self._call(self.api.patch_namespaced_custom_object, record_id, {"spec": {"cancel": True}},
                                   record_id=record_id)
        return self.record_of(patched) if isinstance(patched, dict) and patched.get("spec") \
            else await self.get(record_id)

    async def close(self) -> None:
        """Nothing runs in this process: the Jobs outlive it."""
