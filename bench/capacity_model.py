"""The sizing table of docs/capacity.md, computed from measured unit costs.

    python bench/capacity_model.py --load OUT/report.json --session DRIVE_DIR [--players 1000,10000,100000] \
        [--gateway-cpu-ms-per-call MS] [--video-bps 8e6]

`--load` is a report of bench/load_bench.py (a run the stack kept up with, with the game's 60 s drives):
gateway calls per session, gateway CPU per call, processor CPU per minute of play, ingest CPU per
session, processed bytes and database rows per session; options replace any of them. `--session` is a recorded
session folder at the game's resolution and bitrate (video bytes, log bytes per minute). The other unit
costs come from the benchmarks in bench/RESULTS.md and are options here, each defaulting to the number
recorded there (docs/capacity.md says which run). Every row prints the arithmetic behind it.

A concurrent player is one playing right now: the game records the whole drive, in sessions of 60 s
(docs/game.md), so a player uploads one session, one minute of play, per minute.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# Catalog tables whose rows grow with a session's length (a picture hash every 0.25 s, a segment every
# 5 s); every other table gains a fixed number of rows a session.
PER_MINUTE_TABLES = ("catalog_frame_hashes", "catalog_segments")


def session_bytes_per_min(folder: Path) -> tuple[float, float]:
    """(video bytes, every other file's bytes) per minute of play of a recorded session folder."""
    manifest = json.loads((folder / "manifest.json").read_text())
    minutes = float(manifest["duration_s"]) / 60
    video = sum(f["size_bytes"] for f in manifest["files"] if f["path"] == "video.webm")
    other = sum(p.stat().st_size for p in folder.iterdir() if p.name != "video.webm" and p.is_file())
    return video / minutes, other / minutes


def model(a: argparse.Namespace) -> tuple[dict, list[dict]]:
    """The unit costs and one row of the sizing table per player count."""
    load = json.loads(Path(a.load).read_text())
    u, db = load["units"], load["database"]
    calls = u["gateway_api_calls_per_session"]
    gw_requests = sum(u["gateway_http_by_route"].values())
    # the uploads' PUTs (the embedded store's, S3's in a cluster) are counted against the calls: an upper bound
    gw_cpu_ms = a.gateway_cpu_ms_per_call or 1000 * u["cpu_s"]["gateway"] / gw_requests
    proc_s = a.processor_cpu_s_per_min or u["processor_cpu_s_per_play_min"]
    ingest_s = a.ingest_cpu_s_per_session or u["ingest_cpu_s_per_session"]
    drive_min = load["config"]["drive_s"] / 60
    # rows of a 60 s session: the fixed ones as measured, the per-minute ones scaled from the drive's length
    rows_per_session = sum(n if k.split(":")[-1] not in PER_MINUTE_TABLES else n / drive_min
                           for k, n in db["rows_per_session"].items())
    video_bpm, logs_bpm = session_bytes_per_min(Path(a.session))
    measured_video_bpm = video_bpm
    if a.video_bps:
        video_bpm = a.video_bps / 8 * 60
    units = {
        "sessions_per_player_min": 1.0,
        "gateway_calls_per_session": calls,
        "gateway_cpu_ms_per_call": round(gw_cpu_ms, 2),
        "gateway_calls_per_core_s": round(1000 / gw_cpu_ms),
        "processor_cpu_s_per_play_min": proc_s,
        "ingest_cpu_s_per_session": ingest_s,
        "raw_bytes_per_play_min": round(video_bpm + logs_bpm),
        "video_bytes_per_play_min": round(video_bpm),
        "video_bytes_per_play_min_measured": round(measured_video_bpm),
        "log_bytes_per_play_min": round(logs_bpm),
        "processed_bytes_per_play_min": u["processed_bytes_per_play_min"],
        "db_rows_per_session": round(rows_per_session, 1),
        "streams_per_gpu": a.streams_per_gpu,
    }
    rows = []
    for n in a.players:
        sessions_s = n / 60
        gw_cores = sessions_s * calls * gw_cpu_ms / 1000 / a.utilization
        proc_cores = n * proc_s / 60 / a.utilization
        ingest_cores = sessions_s * ingest_s / a.utilization
        write_bps = n * (video_bpm + logs_bpm + u["processed_bytes_per_play_min"]) / 60
        day_bytes = write_bps * 86400 * a.daily_average
        gpus = n * a.diffusion_share / a.streams_per_gpu
        rows.append({
            "players": n,
            "sessions_per_s": sessions_s,
            "gateway_calls_per_s": sessions_s * calls,
            "gateway_cores": gw_cores, "gateway_replicas": max(2, math.ceil(gw_cores / a.gateway_cores_per_replica)),
            "processor_pods": max(1, math.ceil(proc_cores)),
            "ingest_cores": ingest_cores, "ingest_replicas": max(1, math.ceil(ingest_cores / a.ingest_cores_per_replica)),
            "store_write_MBps": write_bps / 1e6, "store_TB_per_day": day_bytes / 1e12,
            "db_rows_per_s": sessions_s * rows_per_session,
            "diffusion_gpus": math.ceil(gpus),
        })
    return units, rows


def markdown(units: dict, rows: list[dict], a: argparse.Namespace) -> str:
    """The table, one column per player count, with each row's arithmetic."""
    head = "| | " + " | ".join(f"{r['players']:,} players" for r in rows) + " | arithmetic |"
    lines = [head, "| --- |" + " ---: |" * len(rows) + " --- |"]

    def row(label: str, key: str, fmt: str, how: str) -> None:
        lines.append(f"| {label} | " + " | ".join(format(r[key], fmt) for r in rows) + f" | {how} |")

    u, util = units, a.utilization
    row("sessions uploaded per second", "sessions_per_s", ",.1f", "players / 60 (one 60 s session a minute)")
    row("gateway API calls per second", "gateway_calls_per_s", ",.0f",
        f"sessions/s x {u['gateway_calls_per_session']} calls a session")
    row("gateway cores", "gateway_cores", ",.1f",
        f"calls/s x {u['gateway_cpu_ms_per_call']} ms CPU a call / {util} utilization")
    row("gateway replicas", "gateway_replicas", ",", f"cores / {a.gateway_cores_per_replica} a replica, at least 2")
    row("processor pods (1 core, 1 session)", "processor_pods", ",",
        f"players x {u['processor_cpu_s_per_play_min']} CPU s a minute of play / 60 / {util}")
    row("ingest cores", "ingest_cores", ",.1f", f"sessions/s x {u['ingest_cpu_s_per_session']} CPU s a session / {util}")
    row("ingest replicas", "ingest_replicas", ",", f"cores / {a.ingest_cores_per_replica} a replica")
    row("object store writes (MB/s)", "store_write_MBps", ",.0f",
        f"players x ({u['raw_bytes_per_play_min'] / 1e6:.1f} MB raw + {u['processed_bytes_per_play_min'] / 1e6:.1f} MB "
        "processed) a minute / 60")
    row("object store growth (TB/day)", "store_TB_per_day", ",.1f",
        f"MB/s x 86,400 s x {a.daily_average} (a day's mean players / peak)")
    row("database rows written per second", "db_rows_per_s", ",.0f",
        f"sessions/s x {u['db_rows_per_session']} rows a 60 s session")
    row("diffusion GPUs", "diffusion_gpus", ",",
        f"players x {a.diffusion_share} with diffusion on / {u['streams_per_gpu']} stream(s) a GPU")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--load", required=True, help="report.json of a bench/load_bench.py run the stack kept up with")
    p.add_argument("--session", required=True, help="a session folder at the game's size and bitrate")
    p.add_argument("--players", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10000, 100000])
    p.add_argument("--processor-cpu-s-per-min", type=float, default=None,
                   help="processor CPU s per minute of play (default: the load report's)")
    p.add_argument("--ingest-cpu-s-per-session", type=float, default=None,
                   help="ingest CPU s per session (default: the load report's)")
    p.add_argument("--gateway-cpu-ms-per-call", type=float, default=None,
                   help="gateway CPU ms per call (default: the load report's gateway CPU over all its requests)")
    p.add_argument("--video-bps", type=float, default=None,
                   help="plan for this video bitrate (the game's configured 8e6 at 720p) instead of the session's own")
    p.add_argument("--streams-per-gpu", type=float, default=1.0, help="diffusion streams one GPU serves (projected)")
    p.add_argument("--diffusion-share", type=float, default=0.1, help="share of players with diffusion on")
    p.add_argument("--utilization", type=float, default=0.6, help="planned CPU utilization (headroom for peaks)")
    p.add_argument("--daily-average", type=float, default=0.4, help="a day's mean concurrent players / the peak")
    p.add_argument("--gateway-cores-per-replica", type=float, default=2.0)
    p.add_argument("--ingest-cores-per-replica", type=float, default=4.0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    units, rows = model(a)
    if a.json:
        print(json.dumps({"units": units, "rows": rows}, indent=1))
    else:
        print(json.dumps(units, indent=1))
        print(markdown(units, rows, a))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
