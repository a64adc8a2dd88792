"""A short run of bench/diffusion_bench.py: both parts measure real frames of the real backends."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "diffusion_bench.py"


def _bench():
    spec = importlib.util.spec_from_file_location("diffusion_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_backend_part_times_every_frame_of_each_backend(one_torch_thread):
    bench = _bench()
    look = bench.run_backend("look", 160, 96, 1, frames=6, device="cpu")
    assert look["frames_out"] == 6 and look["latency_ms"]["n"] == 5 and look["fps_out"] > 0
    wan = bench.run_backend("wan", 160, 96, 1, frames=13, device="cpu")  # chunks of 5, 4, 4
    assert "tiny" in wan["label"] and "random weights" in wan["label"]
    assert wan["frames_out"] == 13 and wan["first_frame_s"] > 0 and wan["peak_memory_bytes"] > 0
    # an output waits for its chunk: the first frame of a chunk waits longer than its last
    assert wan["latency_ms"]["max"] > wan["latency_ms"]["p50"] >= 0


async def test_the_stream_part_reports_each_window_of_a_real_stream():
    bench = _bench()
    result = await bench.run_stream("look", 0.05, 160, 96, 30.0)  # one window of 3 s
    (window,) = result["per_minute"]
    assert window["frames_back"] > 20 and window["round_trip_ms"]["n"] > 20
    assert 0 < window["round_trip_ms"]["p50"] < 1000 and window["rss_bytes"] > 0
    assert result["rss_mb_first_last"][0] == result["rss_mb_first_last"][1]  # one window: first is last
