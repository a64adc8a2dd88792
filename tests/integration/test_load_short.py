"""The load test in small (bench/load_bench.py): a few Locust players through the real stack's HTTP API.

Three players drive short synthetic sessions for 12 s and upload each as the game does, while the
stack's ingest and processor work; every accepted upload must end PROCESSED, dispatched once, and the
report must carry each number docs/capacity.md reads. Locust (gevent) runs in its own process.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses and its pool's worker processes look it up by name
    spec.loader.exec_module(module)
    return module


def test_players_uploads_are_each_processed_once_and_reported(tmp_path, capsys):
    bench = _module("load_bench")
    report = bench.run(tmp_path / "load", players=3, minutes=0.2, processors=1, spawn_rate=3, drive_s=4.0,
                       pool=3, drain_s=60, sample_s=0.5, pool_root=tmp_path / "pool",
                       env_extra={"SD_INGEST_SCAN_INTERVAL_S": "0.3"})
    s = report["sessions"]
    assert report["locust_exit_code"] == 0, (tmp_path / "load" / "locust.log").read_text()[-3000:]
    assert s["completed"] >= 3 and s["accepted"] == s["completed"]
    assert s["processed"] == s["accepted"] and s["failed"] == 0 and s["not_final"] == 0
    assert s["attempts_max"] == 1 and s["processed_transitions"] == s["processed"]
    assert s["processed_exactly_once"] is True
    assert s["drives_repeated"] == s["completed"] - 3  # a pool of 3, each driven once before any again

    # every completed session the players logged is in the catalog as PROCESSED, and nothing else is
    events = [json.loads(line) for line in (tmp_path / "load" / "events.jsonl").read_text().splitlines()]
    completed = {e["session_id"] for e in events if e["kind"] == "completed"}
    assert len(completed) == s["completed"]

    http = {r["name"]: r for r in report["latency"]["http"]}
    for call in ("POST /v1/players", "POST /v1/sessions", "POST /v1/sessions/{id}/upload-urls", "PUT upload URL",
                 "POST /v1/sessions/{id}/complete"):
        assert http[call]["requests"] >= 1 and http[call]["failures"] == 0 and http[call]["p95_ms"] > 0, call
    # the game's order: 5 files a drive (4 listed in the manifest, then the manifest itself)
    assert http["PUT upload URL"]["requests"] == 5 * http["POST /v1/sessions/{id}/complete"]["requests"]
    assert http["POST /v1/sessions/{id}/complete"]["requests"] == s["completed"]

    lat = report["latency"]["complete_to_processed_s"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"] < 60
    assert report["latency"]["processing_s"]["count"] == s["processed"]
    assert report["latency"]["validation_s"]["count"] >= s["processed"]
    q = report["queue"]
    done = [row["processed"] for row in q["timeline"]]
    assert len(done) >= 10 and done[0] == 0 and done[-1] == s["processed"] and done == sorted(done)
    assert q["timeline"][-1]["backlog"] == 0 and q["peak_backlog"] >= 0 and set(q["peak_by_state"]) == {
        "receiving", "complete", "validated", "processing"}
    u = report["units"]
    assert u["gateway_requests_per_session"] >= 8  # me, session, urls, 5 PUTs, complete, me (+ outcome polls)
    assert u["cpu_s"]["processor"] > 0 and u["processor_cpu_s_per_play_min"] > 0
    assert u["raw_bytes_per_play_min"] > 0 and u["processed_bytes_per_play_min"] > 0
    assert report["throughput"]["processed_per_min_overall"] > 0
    assert u["gateway_api_calls_per_session"] >= 5 and u["store_puts_per_session"] == 5  # the PUTs: S3's in a cluster
    rows = report["database"]["rows_per_session"]  # one row per session in each catalog, five objects
    assert rows["gateway/gateway.db:sessions"] == 1 and rows["ingest/catalog.db:catalog_sessions"] == 1
    assert rows["ingest/catalog.db:catalog_objects"] == 5 and report["database"]["bytes_per_play_min"] > 0
    assert "| completion → PROCESSED (s) |" in bench.markdown(report, "python bench/load_bench.py")

    # the sizing model reads this report: its unit costs are the report's, its rows scale with the players
    (tmp_path / "report.json").write_text(json.dumps(report))
    drive = next(p for p in sorted((tmp_path / "pool").glob("*/seed-*")) if (p / "manifest.json").is_file())
    capsys.readouterr()
    assert _module("capacity_model").main(["--load", str(tmp_path / "report.json"), "--session", str(drive),
                                           "--players", "1000,10000", "--json"]) == 0
    sized = json.loads(capsys.readouterr().out)
    assert sized["units"]["processor_cpu_s_per_play_min"] == u["processor_cpu_s_per_play_min"]
    assert sized["units"]["gateway_calls_per_session"] == u["gateway_api_calls_per_session"]
    small, big = sized["rows"]
    assert big["processor_pods"] >= 9 * small["processor_pods"] and big["diffusion_gpus"] == 10 * small["diffusion_gpus"]
