"""Load test: many simulated players through the real HTTP API while ingest and processors work.

Starts the local stack as `make run` does (`sdctl stack up`, on free ports, state in --out), with
--processors processor processes (the stack's own and more beside it, every one on the ingest's
processor target), and runs Locust (bench/load/locustfile.py) in its own process: --players players,
each driving one synthetic session after another in real time and uploading it as the game does.
Meanwhile it reads every service's Prometheus metrics each --sample-s seconds. Once Locust stops it
waits for every completed upload to be final in the catalog, then reports:

- sessions per minute end to end (processed, and minutes of play processed per minute);
- each HTTP call's latency as the players saw it (Locust's stats), the time from an accepted
  completion to PROCESSED (the catalog's time of the move against the player's clock, one machine),
  and the ingest's own validation and dispatch times;
- where the queue builds: the catalog's sessions by state and the dispatch backlog over time;
- unit costs for docs/capacity.md: gateway requests per session, CPU seconds of each service per
  session and per minute of play, bytes stored per minute of play (raw and processed).

    python bench/load_bench.py --players 30 --minutes 3 --processors 2 --out .run/load

The drives come from a pool of distinct synthetic sessions (--pool of them, cached under
.run/load-pool); each is uploaded once before any is uploaded again (a repeat is a replay to the
catalog: its segments are rejected, but it is processed all the same). `--write-results` adds the run's
tables to this benchmark's section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.stack starts the stack exactly as the stack tests do

LOCUSTFILE = REPO / "bench" / "load" / "locustfile.py"
POOL_ROOT = REPO / ".run" / "load-pool"
RESULTS_MD = REPO / "bench" / "RESULTS.md"
SECTION = "## Load test: players through the HTTP API"
END = "<!-- end of bench/load_bench.py output -->"
STATES = ("receiving", "complete", "validated", "processing", "processed", "rejected", "failed")
FINAL = {"CATALOG_STATE_PROCESSED", "CATALOG_STATE_FAILED", "CATALOG_STATE_REJECTED"}
SERVICES = ("gateway", "ingest", "processor")


def game_bitrate(width: int, height: int) -> int:
    """The game's recording bitrate (web/src/media/recorder.ts bitrateFor): 8 Mbps at 720p, at least 2.5 Mbps."""
    return max(2_500_000, round(8e6 * width * height / (1280 * 720)))


# ---- the pool of drives -----------------------------------------------------------------------------

def _make_drive(folder: str, width: int, height: int, duration_s: float, seed: int, bitrate: int) -> str:
    from sd_common.session_format.synth import SynthConfig, synth_session
    out = Path(folder)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    synth_session(tmp, SynthConfig(width=width, height=height, duration_s=duration_s, seed=seed, bitrate=bitrate))
    (tmp / "session").rename(out)
    shutil.rmtree(tmp)
    return str(out)


def make_pool(count: int, width: int, height: int, duration_s: float, bitrate: int,
              root: Path = POOL_ROOT, workers: int = 2) -> Path:
    """A folder holding distinct synthetic sessions seed-0001…seed-`count` (made once, kept for later runs).

    The folder may hold more from an earlier, larger run: Locust takes the first `count` (SD_LOAD_POOL_SIZE).
    """
    pool = root / f"{width}x{height}-{duration_s:g}s-{bitrate}bps"
    pool.mkdir(parents=True, exist_ok=True)
    missing = [str(pool / f"seed-{seed:04d}") for seed in range(1, count + 1)
               if not (pool / f"seed-{seed:04d}" / "manifest.json").is_file()]
    if missing:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            list(ex.map(_make_drive, missing, *zip(*[(width, height, duration_s, int(f.rsplit("-", 1)[1]), bitrate)
                                                      for f in missing])))
    return pool


# ---- metrics ----------------------------------------------------------------------------------------

def scrape(url: str, timeout_s: float = 2.0) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus text page: {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == val for k, val in labels.items()))


def histogram_delta(first: dict, last: dict, name: str, **labels: str) -> dict:
    """Count, mean and bucket quantiles (p50, p95) of a histogram between two scrapes."""
    count = total(last, name + "_count", **labels) - total(first, name + "_count", **labels)
    sum_s = total(last, name + "_sum", **labels) - total(first, name + "_sum", **labels)
    buckets: dict[float, float] = {}
    for (n, ls), v in last.items():
        d = dict(ls)
        if n == name + "_bucket" and all(d.get(k) == val for k, val in labels.items()):
            le = float(d["le"])
            buckets[le] = buckets.get(le, 0.0) + v - first.get((n, ls), 0.0)

    def quantile(q: float) -> float | None:
        if count <= 0:
            return None
        for le in sorted(buckets):
            if buckets[le] >= q * count:
                return le
        return None

    return {"count": int(count), "mean_s": sum_s / count if count else None,
            "p50_le_s": quantile(0.5), "p95_le_s": quantile(0.95)}


@dataclass
class Sampler:
    """Every `every_s` on a thread: the catalog's sessions by state (ListCatalogSessions) and the services'
    /metrics, which keeps the queue's shape over time and the CPU the services used.

    The ingest's own gauges (sd_ingest_sessions, sd_ingest_dispatch_backlog) are refreshed only every 5 s,
    so the states are counted from the catalog; the gauge's backlog is kept beside them.
    """

    urls: dict[str, list[str]]  # service → metrics URLs (one per process)
    ingest_target: str
    every_s: float = 1.0
    t0: float = field(default_factory=time.time)
    timeline: list[dict] = field(default_factory=list)
    first: dict[str, list[dict]] = field(default_factory=dict)
    last: dict[str, list[dict]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def read(self) -> dict[str, list[dict]]:
        got = {}
        for svc, urls in self.urls.items():
            got[svc] = []
            for u in urls:
                try:
                    got[svc].append(scrape(u))
                except OSError:
                    got[svc].append({})
        return got

    def start(self) -> None:
        self.first = self.last = self.read()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        now = self.read()
        if all(all(x) for x in now.values()):
            self.last = now
        row = {"t_s": round(time.time() - self.t0, 1)}
        try:
            states = [s["catalog_state"] for s in catalog(self.ingest_target)]
        except Exception:  # the ingest is briefly busy: skip this sample
            return
        for st in STATES:
            row[st] = states.count("CATALOG_STATE_" + st.upper())
        row["backlog"] = row["validated"] + row["processing"]
        ingest = now["ingest"][0] if now["ingest"] else {}
        row["backlog_gauge"] = int(total(ingest, "sd_ingest_dispatch_backlog"))
        row["in_flight"] = int(total(ingest, "sd_ingest_dispatch_in_flight"))
        self.timeline.append(row)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)
        self._sample()

    def cpu_s(self, svc: str) -> float:
        """CPU seconds the service's processes used between the first and the last scrape."""
        return sum(total(b, "process_cpu_seconds_total") - total(a, "process_cpu_seconds_total")
                   for a, b in zip(self.first[svc], self.last[svc]))


# ---- the stack --------------------------------------------------------------------------------------

@dataclass
class Stack:
    running: object  # tests.stack.RunningStack
    extra: list[subprocess.Popen]
    metrics: dict[str, list[str]]
    ingest_target: str

    def stop(self) -> None:
        for p in self.extra:
            p.send_signal(signal.SIGTERM)
        for p in self.extra:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.running.stop(signal.SIGTERM, timeout_s=60)


def _wait_serving(target: str, timeout_s: float = 60) -> None:
    from sd_common.cli.services import health_status
    deadline = time.monotonic() + timeout_s
    while asyncio.run(health_status(target, timeout_s=1.0)) != "SERVING":
        if time.monotonic() > deadline:
            raise RuntimeError(f"processor {target} not serving after {timeout_s:.0f} s")
        time.sleep(0.3)


def start(state: Path, processors: int, env_extra: dict[str, str] | None = None) -> Stack:
    """The local stack with `processors` processor processes; every metrics URL the sampler reads."""
    from tests.ports import free_port
    from tests.stack import start_stack
    state.mkdir(parents=True, exist_ok=True)
    extra_ports = [(free_port(), free_port()) for _ in range(processors - 1)]
    base = {**os.environ,
            # every simulated player comes from 127.0.0.1: the per-address limit on new players would
            # stop all but the first 20
            "SD_GATEWAY_PLAYERS_PER_MINUTE_PER_IP": "100000", "SD_GATEWAY_PLAYERS_BURST_PER_IP": "100000",
            "SD_INGEST_CONCURRENCY": str(max(2, processors)), **(env_extra or {})}

    def env(offset: int) -> dict[str, str]:
        targets = [f"127.0.0.1:{50053 + offset}"] + [f"127.0.0.1:{g}" for g, _ in extra_ports]
        return {**base, "SD_INGEST_PROCESSOR_TARGET": ",".join(targets)}

    extra = []
    for grpc_port, metrics_port in extra_ports:
        penv = {**base, "SD_STORE_BACKEND": "local", "SD_STORE_ROOT": str(state / "store"),
                "SD_PROCESSOR_GRPC_PORT": str(grpc_port), "SD_PROCESSOR_METRICS_PORT": str(metrics_port),
                "SD_PROCESSOR_LOG_FORMAT": "console"}
        log = (state / f"processor-{grpc_port}.log").open("w")
        extra.append(subprocess.Popen([sys.executable, "-m", "sd_processor"], env=penv, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
    try:
        for grpc_port, _ in extra_ports:
            _wait_serving(f"127.0.0.1:{grpc_port}")
        running = start_stack(state, env)
    except BaseException:
        for p in extra:
            p.kill()
            p.wait()
        raise
    off = running.offset
    metrics = {"gateway": [f"http://127.0.0.1:{9101 + off}/metrics"],
               "ingest": [f"http://127.0.0.1:{9102 + off}/metrics"],
               "processor": [f"http://127.0.0.1:{9103 + off}/metrics"]
               + [f"http://127.0.0.1:{m}/metrics" for _, m in extra_ports]}
    return Stack(running, extra, metrics, f"127.0.0.1:{50052 + off}")


def catalog(target: str) -> list[dict]:
    """Every session in the ingest's catalog (ListCatalogSessions), as dicts."""
    import grpc
    from sd_common.cli.grpc_client import message_dict
    from scale_diffusion.ingest.v1 import ingest_pb2 as pb
    from scale_diffusion.ingest.v1 import ingest_pb2_grpc
    out, token = [], ""
    with grpc.insecure_channel(target) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        while True:
            r = stub.ListCatalogSessions(pb.ListCatalogSessionsRequest(page_size=500, page_token=token), timeout=30)
            out += [message_dict(x) for x in r.sessions]
            token = r.next_page_token
            if not token:
                return out


# ---- the run ----------------------------------------------------------------------------------------

def run_locust(url: str, pool: Path, pool_size: int, out: Path, players: int, spawn_rate: float, run_s: float,
               play_s: float | None, stop_timeout_s: float) -> subprocess.CompletedProcess:
    """Locust, headless, in its own process (gevent patches everything it imports; nothing here)."""
    env = {**os.environ, "SD_LOAD_POOL": str(pool), "SD_LOAD_POOL_SIZE": str(pool_size),
           "SD_LOAD_EVENTS": str(out / "events.jsonl"),
           "SD_LOAD_PLAY_S": "" if play_s is None else str(play_s)}
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
           "-u", str(players), "-r", str(spawn_rate), "-t", f"{int(math.ceil(run_s))}s",
           "--stop-timeout", str(int(math.ceil(stop_timeout_s))), "--json-file", str(out / "locust_stats"),
           "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    with (out / "locust.log").open("w") as log:
        return subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=run_s + stop_timeout_s + 120)


def locust_stats(path: Path) -> list[dict]:
    """Locust's final per-request stats (its --json-file), one dict per request name, then one "all" row.

    Percentiles come from Locust's own response-time counts (rounded as Locust rounds them).
    """
    entries = json.loads(path.read_text())

    def row(name: str, method: str, es: list[dict]) -> dict:
        times: dict[float, int] = {}
        for e in es:
            for ms, n in e["response_times"].items():
                times[float(ms)] = times.get(float(ms), 0) + n
        n = sum(times.values())

        def pct(q: float) -> float | None:
            seen = 0
            for ms in sorted(times):
                seen += times[ms]
                if seen >= q * n:
                    return ms
            return None

        reqs = sum(e["num_requests"] for e in es)
        span = max((e["last_request_timestamp"] or 0) for e in es) - min(e["start_time"] for e in es)
        return {"name": name, "method": method, "requests": reqs, "failures": sum(e["num_failures"] for e in es),
                "rps": round(reqs / span, 2) if span > 0 else None, "p50_ms": pct(0.5), "p95_ms": pct(0.95),
                "p99_ms": pct(0.99), "max_ms": max((e["max_response_time"] or 0) for e in es),
                "mean_ms": round(sum(e["total_response_time"] for e in es) / reqs, 1) if reqs else None}

    rows = [row(e["name"], e["method"], [e]) for e in sorted(entries, key=lambda e: e["name"])]
    return rows + ([row("all", "", entries)] if entries else [])


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _ts(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def database_rows(state: Path) -> dict[str, dict]:
    """Rows per table and file size of each SQLite database the stack wrote (the gateway's, the catalog)."""
    import sqlite3
    out = {}
    for db in sorted(state.glob("*/*.db")):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = [t for (t,) in con.execute("select name from sqlite_master where type='table'")]
            rows = {t: con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}
        finally:
            con.close()
        out[f"{db.parent.name}/{db.name}"] = {"bytes": db.stat().st_size, "rows": {t: n for t, n in rows.items() if n}}
    return out


def _dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0


def run(out: Path, *, players: int, minutes: float, processors: int = 1, spawn_rate: float | None = None,
        width: int = 256, height: int = 144, drive_s: float = 15.0, pool: int = 40, play_s: float | None = None,
        bitrate: int | None = None, drain_s: float = 300.0, sample_s: float = 1.0,
        env_extra: dict[str, str] | None = None, pool_root: Path = POOL_ROOT) -> dict:
    """One load run; returns the report (also written to out/report.json)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("events.jsonl",):
        (out / stale).unlink(missing_ok=True)
    bitrate = bitrate or game_bitrate(width, height)
    t = time.monotonic()
    pool_dir = make_pool(pool, width, height, drive_s, bitrate, root=pool_root)
    pool_s = time.monotonic() - t
    stack = start(out / "stack", processors, env_extra)
    try:
        sampler = Sampler(stack.metrics, stack.ingest_target, every_s=sample_s)
        sampler.start()
        run_s = minutes * 60
        started = time.time()
        proc = run_locust(stack.running.url, pool_dir, pool, out, players, spawn_rate or max(1.0, players / 10),
                          run_s, play_s, stop_timeout_s=(play_s if play_s is not None else drive_s) + 60)
        locust_done = time.time()
        events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()] \
            if (out / "events.jsonl").is_file() else []
        completed = {e["session_id"]: e for e in events if e["kind"] == "completed"}
        accepted = {sid for sid, e in completed.items() if e["accepted"]}
        deadline = time.monotonic() + drain_s
        while True:
            sessions = {s["session_id"]: s for s in catalog(stack.ingest_target)}
            pending = [sid for sid in accepted if sessions.get(sid, {}).get("catalog_state") not in FINAL]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        drained = time.time()
        sampler.stop()
        report = _report(out, stack, sampler, proc.returncode, events, completed, accepted, sessions, pending,
                         started=started, locust_done=locust_done, drained=drained,
                         config={"players": players, "minutes": minutes, "processors": processors,
                                 "spawn_rate": spawn_rate or max(1.0, players / 10), "size": f"{width}x{height}",
                                 "drive_s": drive_s, "play_s": play_s, "bitrate_bps": bitrate, "pool": pool,
                                 "pool_made_s": round(pool_s, 1), "sample_s": sample_s, "cpus": os.cpu_count(),
                                 "loadavg_at_start": os.getloadavg()[0]})
    finally:
        stack.stop()
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _report(out: Path, stack: Stack, sampler: Sampler, locust_rc: int, events: list[dict], completed: dict,
            accepted: set, sessions: dict, pending: list, *, started: float, locust_done: float,
            drained: float, config: dict) -> dict:
    outcome_seen = {e["session_id"]: e for e in events if e["kind"] == "outcome"}
    mine = {sid: sessions[sid] for sid in accepted if sid in sessions}
    processed = {sid: s for sid, s in mine.items() if s["catalog_state"] == "CATALOG_STATE_PROCESSED"}
    e2e = [_ts(s["updated_at"]) - completed[sid]["at"] for sid, s in processed.items()]
    seen_s = [outcome_seen[sid]["at"] - completed[sid]["at"] for sid in outcome_seen]
    in_run = [sid for sid, s in processed.items() if _ts(s["updated_at"]) <= locust_done]
    run_min = (locust_done - started) / 60
    played_min = sum(completed[sid]["duration_s"] for sid in processed) / 60
    ingest_first, ingest_last = sampler.first["ingest"][0], sampler.last["ingest"][0]
    transitions = (total(ingest_last, "sd_ingest_session_transitions_total", state="PROCESSED")
                   - total(ingest_first, "sd_ingest_session_transitions_total", state="PROCESSED"))
    stats = locust_stats(out / "locust_stats.json") if (out / "locust_stats.json").is_file() else []
    agg = next((r for r in stats if r["name"] == "all"), {"requests": 0, "failures": 0})
    by_name = [r for r in stats if r["name"] != "all"]
    created = next((r["requests"] for r in by_name if r["name"] == "POST /v1/sessions"), 0)
    store = stack.running.state / "store"
    raw_bytes = sum(_dir_bytes(store / "raw" / sid) for sid in processed)
    processed_bytes = sum(_dir_bytes(store / "processed" / sid) for sid in processed)
    cpu = {svc: round(sampler.cpu_s(svc), 1) for svc in SERVICES}
    gw_first, gw_last = sampler.first["gateway"][0], sampler.last["gateway"][0]
    routes: dict[str, int] = {}
    for (n, ls), v in gw_last.items():
        if n == "sd_http_requests_total":
            d = dict(ls)
            key = f"{d.get('method')} {d.get('route')}"
            routes[key] = routes.get(key, 0) + int(v - gw_first.get((n, ls), 0.0))
    store_puts = sum(v for k, v in routes.items() if k.startswith("PUT /v1/store"))
    api_calls = sum(v for k, v in routes.items() if not k.startswith("PUT /v1/store") and "/healthz" not in k
                    and "metrics" not in k)
    dbs = database_rows(stack.running.state)
    peak = max(sampler.timeline, key=lambda r: r["backlog"], default={})
    waiting = {st: max((r[st] for r in sampler.timeline), default=0)
               for st in ("receiving", "complete", "validated", "processing")}
    validation = histogram_delta(ingest_first, ingest_last, "sd_ingest_validation_seconds")
    dispatch = histogram_delta(ingest_first, ingest_last, "sd_ingest_dispatch_seconds", outcome="processed")
    mean_e2e = statistics.fmean(e2e) if e2e else None
    return {
        "config": config,
        "locust_exit_code": locust_rc,
        "run_s": round(locust_done - started, 1), "drain_s": round(drained - locust_done, 1),
        "sessions": {
            "created": created, "completed": len(completed), "accepted": len(accepted),
            "processed": len(processed),
            "failed": sum(1 for s in mine.values() if s["catalog_state"] == "CATALOG_STATE_FAILED"),
            "rejected": sum(1 for s in mine.values() if s["catalog_state"] == "CATALOG_STATE_REJECTED"),
            "not_final": len(pending),
            "attempts_max": max((int(s.get("attempts", 0)) for s in processed.values()), default=0),
            "processed_transitions": int(transitions),
            "processed_exactly_once": bool(processed) and len(processed) == len(accepted) and not pending
            and all(int(s.get("attempts", 0)) == 1 for s in processed.values()) and int(transitions) == len(processed),
            "drives_repeated": max(0, len(completed) - config["pool"]),
            "segments_accepted": sum(int(s.get("segments_accepted", 0)) for s in processed.values()),
            "segments_rejected": sum(int(s.get("segments_rejected", 0)) for s in processed.values()),
        },
        "throughput": {
            "completed_per_min": round(len(completed) / run_min, 2) if run_min else None,
            "processed_per_min_during_run": round(len(in_run) / run_min, 2) if run_min else None,
            "processed_per_min_overall": round(len(processed) / ((drained - started) / 60), 2),
            "play_min_processed_per_min": round(played_min / ((max((_ts(s["updated_at"]) for s in processed.values()),
                                                                    default=drained) - started) / 60), 2)
            if processed else None,
        },
        "latency": {
            "complete_to_processed_s": {"p50": _r(_pct(e2e, 0.5)), "p95": _r(_pct(e2e, 0.95)),
                                        "max": _r(max(e2e, default=None)), "mean": _r(mean_e2e)},
            "outcome_final_seen_by_player_s": {"count": len(seen_s), "p50": _r(_pct(seen_s, 0.5)),
                                               "p95": _r(_pct(seen_s, 0.95))},
            "validation_s": validation, "processing_s": dispatch,
            "waiting_s_mean": _r(mean_e2e - (validation["mean_s"] or 0) - (dispatch["mean_s"] or 0))
            if mean_e2e is not None else None,
            "http": by_name, "http_all": agg,
        },
        "queue": {
            "peak_backlog": peak.get("backlog", 0), "peak_at_s": peak.get("t_s"),
            "backlog_at_locust_stop": next((r["backlog"] for r in reversed(sampler.timeline)
                                            if r["t_s"] <= locust_done - sampler.t0), 0),
            "peak_by_state": waiting, "timeline": sampler.timeline,
        },
        "units": {
            "gateway_requests_per_session": round(agg["requests"] / len(completed), 2) if completed else None,
            "gateway_requests_per_play_min": round(agg["requests"] / (sum(e["duration_s"] for e in completed.values())
                                                                       / 60), 1) if completed else None,
            "gateway_failures": agg["failures"],
            "gateway_http_by_route": routes,
            # in the cluster the uploads' PUTs go to S3, not the gateway: these are the gateway's own calls
            "gateway_api_calls_per_session": round(api_calls / len(completed), 2) if completed else None,
            "store_puts_per_session": round(store_puts / len(completed), 2) if completed else None,
            "cpu_s": cpu,
            "gateway_cpu_ms_per_request": round(1000 * cpu["gateway"] / agg["requests"], 2) if agg["requests"] else None,
            "ingest_cpu_s_per_session": round(cpu["ingest"] / len(processed), 3) if processed else None,
            "processor_cpu_s_per_play_min": round(cpu["processor"] / played_min, 2) if played_min else None,
            "raw_bytes_per_play_min": round(raw_bytes / played_min) if played_min else None,
            "processed_bytes_per_play_min": round(processed_bytes / played_min) if played_min else None,
            "play_min_processed": round(played_min, 2),
        },
        "database": {
            "files": dbs,
            "rows_per_session": {f"{db}:{t}": round(n / len(processed), 1) for db, d in dbs.items()
                                 for t, n in d["rows"].items()} if processed else {},
            "bytes_per_play_min": round(sum(d["bytes"] for d in dbs.values()) / played_min) if played_min else None,
        },
    }


def _r(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


# ---- the table for RESULTS.md -----------------------------------------------------------------------

def markdown(report: dict, command: str, heading: str = SECTION) -> str:
    """The run as a section (or, with another heading, a subsection) of bench/RESULTS.md."""
    c, s, th, lat, q, u = (report[k] for k in ("config", "sessions", "throughput", "latency", "queue", "units"))
    lines = [
        f"{heading} — `{command}`", "",
        f"{datetime.now():%Y-%m-%d}: {c['players']} players for {c['minutes']:g} min, {c['processors']} processor(s), "
        f"{c['size']} drives of {c['drive_s']:g} s at {c['bitrate_bps'] / 1e6:g} Mbps (the game's rate for that size), "
        f"a pool of {c['pool']} distinct drives; {c['cpus']} cores shared by Locust and every service.", "",
        "| sessions | completed | processed | failed | not final | attempts max | processed exactly once |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {s['created']} | {s['completed']} | {s['processed']} | {s['failed']} | {s['not_final']} | "
        f"{s['attempts_max']} | {'yes' if s['processed_exactly_once'] else 'no'} |", "",
        f"Throughput: {th['completed_per_min']} uploads completed a minute, {th['processed_per_min_during_run']} "
        f"processed a minute while the players played ({th['processed_per_min_overall']} over the run and its drain); "
        f"{th['play_min_processed_per_min']} minutes of play processed per minute.", "",
        "| stage | p50 | p95 | mean |", "| --- | ---: | ---: | ---: |",
        f"| completion → PROCESSED (s) | {lat['complete_to_processed_s']['p50']} | "
        f"{lat['complete_to_processed_s']['p95']} | {lat['complete_to_processed_s']['mean']} |",
        f"| ingest validation (s, bucket bound) | {lat['validation_s']['p50_le_s']} | {lat['validation_s']['p95_le_s']} | "
        f"{_r(lat['validation_s']['mean_s'])} |",
        f"| processing, dispatch to answer (s, bucket bound) | {lat['processing_s']['p50_le_s']} | "
        f"{lat['processing_s']['p95_le_s']} | {_r(lat['processing_s']['mean_s'])} |",
        f"| waiting (the rest, mean s) | | | {lat['waiting_s_mean']} |",
        f"| outcome final as the player's poll saw it (s) | {lat['outcome_final_seen_by_player_s']['p50']} | "
        f"{lat['outcome_final_seen_by_player_s']['p95']} | |", "",
        "| HTTP call (Locust) | requests | failures | p50 ms | p95 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in [*lat["http"], {**lat["http_all"], "name": "all calls"}]:
        lines.append(f"| {r['name']} | {r['requests']} | {r['failures']} | "
                     f"{_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | {_fmt(r['p99_ms'])} |")
    lines += [
        "",
        f"Queue: the dispatch backlog peaked at {q['peak_backlog']} (at {q['peak_at_s']} s) and was "
        f"{q['backlog_at_locust_stop']} when the players stopped; the most sessions at once in RECEIVING (files "
        f"arriving, or complete and not yet checked) {q['peak_by_state']['receiving']}, in COMPLETE (waiting for "
        f"validation) {q['peak_by_state']['complete']}, in VALIDATED (waiting for a processor) "
        f"{q['peak_by_state']['validated']}, in PROCESSING {q['peak_by_state']['processing']}.", "",
        "| unit cost | value |", "| --- | ---: |",
        f"| gateway requests per session | {u['gateway_requests_per_session']} |",
        f"| gateway requests per minute of play | {u['gateway_requests_per_play_min']} |",
        f"| of which the gateway's own API calls per session (the rest are the uploads' PUTs, S3's in the cluster) | "
        f"{u['gateway_api_calls_per_session']} |",
        f"| gateway CPU ms per request (uploads' bytes included: the embedded store) | {u['gateway_cpu_ms_per_request']} |",
        f"| ingest CPU s per session | {u['ingest_cpu_s_per_session']} |",
        f"| processor CPU s per minute of play ({c['size']}) | {u['processor_cpu_s_per_play_min']} |",
        f"| raw bytes per minute of play | {u['raw_bytes_per_play_min']:,} |" if u["raw_bytes_per_play_min"] else "",
        f"| processed bytes per minute of play | {u['processed_bytes_per_play_min']:,} |"
        if u["processed_bytes_per_play_min"] else "",
        f"| database rows written per session (gateway + catalog) | "
        f"{round(sum(report['database']['rows_per_session'].values()), 1)} |",
        f"| database bytes per minute of play (SQLite files) | {report['database']['bytes_per_play_min']:,} |"
        if report["database"]["bytes_per_play_min"] else "",
        f"| CPU s over the run: gateway / ingest / processors | {u['cpu_s']['gateway']} / {u['cpu_s']['ingest']} / "
        f"{u['cpu_s']['processor']} |",
    ]
    tl = q["timeline"]
    step = max(1, len(tl) // 12)
    lines += ["", "Backlog over time (every ~{:.0f} s):".format(step * c.get("sample_s", 1.0)), "",
              "| t s | receiving | complete | validated | processing | processed | backlog |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in tl[::step]:
        lines.append(f"| {r['t_s']:g} | {r['receiving']} | {r['complete']} | {r['validated']} | {r['processing']} | {r['processed']} | "
                     f"{r['backlog']} |")
    return "\n".join(line for line in lines if line is not None) + "\n"


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def write_results(report: dict, command: str) -> None:
    """Adds the run to this benchmark's section of RESULTS.md, as its last subsection (the section is made
    when there is none); earlier runs and their readings stay."""
    md = RESULTS_MD.read_text()
    if SECTION in md and END in md:
        head, rest = md.split(END, 1)
        text = markdown(report, command, heading=f"### Run of {datetime.now():%Y-%m-%d %H:%M}")
        md = head.rstrip("\n") + "\n\n" + text + END + rest
    else:
        md = md.rstrip("\n") + "\n\n" + markdown(report, command) + END + "\n"
    RESULTS_MD.write_text(md)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--players", type=int, default=30)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--processors", type=int, default=1)
    p.add_argument("--spawn-rate", type=float, default=None, help="players started a second (default players/10)")
    p.add_argument("--size", default="256x144", help="drive resolution WxH")
    p.add_argument("--drive-s", type=float, default=15.0, help="length of each synthetic drive")
    p.add_argument("--play-s", type=float, default=None, help="how long a player takes per drive (default its length)")
    p.add_argument("--pool", type=int, default=40, help="distinct drives (made once, kept in .run/load-pool)")
    p.add_argument("--bitrate", type=int, default=None, help="video bits/s (default: the game's for the size)")
    p.add_argument("--drain-s", type=float, default=300.0)
    p.add_argument("--out", type=Path, default=REPO / ".run" / "load")
    p.add_argument("--write-results", action="store_true", help="add the run to its section of bench/RESULTS.md")
    a = p.parse_args(argv)
    w, h = (int(x) for x in a.size.split("x"))
    report = run(a.out, players=a.players, minutes=a.minutes, processors=a.processors, spawn_rate=a.spawn_rate,
                 width=w, height=h, drive_s=a.drive_s, pool=a.pool, play_s=a.play_s, bitrate=a.bitrate,
                 drain_s=a.drain_s)
    command = "python bench/load_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    command = command.replace(str(a.out), "OUT")
    print(markdown(report, command))
    if a.write_results:
        write_results(report, command)
    return 0 if report["sessions"]["processed_exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
