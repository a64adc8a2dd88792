"""Diffusion benchmark: how fast each backend turns frames, and whether a long stream stays flat.

Two parts, each run in this process:

* ``backend``: each backend called directly (no WebRTC) on a moving, barcoded synthetic scene, at each
  size and step count asked for. Per output frame: latency from the push of its input to its return;
  throughput (output frames per second of wall time); the first frame's time (building the stream's
  state to the first output); peak memory (torch's peak on a GPU, the process's peak RSS on the CPU).
  The wan backend runs with random weights (timings do not depend on weight values): the full 1.3B
  architecture on a GPU, the tiny test configuration on the CPU, labelled as such. The turbo backend
  runs the SD-Turbo-class model in ``--model-dir``, or without one its tiny random test model.
* ``stream``: the real service in this process on loopback and one browser-like aiortc peer sending a
  barcoded scene at 30 fps for ``--minutes``; frame age (the service's, input arrival to send) and the
  lag of each returned frame behind the newest sent, per minute, and the process's RSS per minute: the
  first minute against the last says whether latency or memory creep.

  python bench/diffusion_bench.py backend --backends look,wan --sizes 832x480,512x512 --steps 1,2
  python bench/diffusion_bench.py stream --backend look --minutes 5 --size 640x360
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "services" / "diffusion" / "tests"))  # the tests' browser-like peer

from diffusion_peers import Player, connect, scene  # noqa: E402


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _pcts(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0, "n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "max": round(float(a.max()), 2), "n": len(a)}


def _build(name: str, steps: int, device: str, model_dir: str | None = None):
    from sd_diffusion.backends import make_backend

    if name == "look":
        return make_backend("look"), "look (classical transform, not a diffusion model)"
    if name == "wan":
        import torch

        from sd_diffusion.backends.wan import WanBackend, WanConfig

        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        # Random weights: the full 1.3B architecture on a GPU; on the CPU the tests' tiny one (with a RoPE
        # table long enough for 832 px). make_backend refuses 1.3B without weights, so it is built here.
        config = WanConfig(device=device, num_steps=steps) if on_gpu else \
            WanConfig.tiny(num_steps=steps, rope_max_seq_len=64)
        backend = WanBackend(config)
        preset = "1.3B" if on_gpu else "tiny (CPU test configuration)"
        return backend, f"wan {preset}, random weights, {steps} steps, {backend.info.device}"
    if name == "turbo":
        # An SD-Turbo-class model from --model-dir (stabilityai/sd-turbo's layout); without one, the tests'
        # tiny random model, on any device.
        if model_dir:
            backend = make_backend("turbo", model_dir=model_dir, num_steps=steps, device=device)
            return backend, f"turbo {model_dir}, {steps} steps, {backend.info.device}"
        backend = make_backend("turbo", preset="tiny", num_steps=steps, device=device)
        return backend, f"turbo tiny (the test configuration), random weights, {steps} steps, {backend.info.device}"
    raise SystemExit(f"unknown backend {name!r} (look, wan, turbo)")


def run_backend(name: str, width: int, height: int, steps: int, frames: int, device: str,
                model_dir: str | None = None) -> dict:
    """One backend at one size and step count: per-frame latency, throughput, first frame, peak memory."""
    from sd_diffusion.backends import ChunkedBackend

    cuda = False
    try:
        import torch

        cuda = torch.cuda.is_available() and device != "cpu"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        torch = None
    started = time.perf_counter()
    backend, label = _build(name, steps, device, model_dir)
    built_s = time.perf_counter() - started
    inputs = [scene(i, width, height) for i in range(min(frames, 64))]
    t0 = time.perf_counter()
    state = backend.new_stream(width, height, "a rainy evening street in New York, photorealistic")
    pushed: dict[int, float] = {}
    latencies_ms: list[float] = []
    first_out_s = None
    out_count = 0
    chunked = isinstance(backend, ChunkedBackend)
    for i in range(frames):
        frame = inputs[i % len(inputs)]
        pushed[i] = time.perf_counter()
        ready = backend.push(state, frame, i) if chunked else [(i, backend.process(state, frame, i))]
        if cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        for k, _ in ready:
            latencies_ms.append((now - pushed.pop(k)) * 1000.0)
            out_count += 1
            if first_out_s is None:
                first_out_s = now - t0
    wall = time.perf_counter() - t0
    warm = latencies_ms[len(latencies_ms) // 5:]  # the first fifth: warm-up (allocation, autotuning)
    peak = int(torch.cuda.max_memory_allocated()) if cuda else _peak_rss_bytes()
    return {"backend": name, "label": label, "size": f"{width}x{height}", "steps": steps, "frames_in": frames,
            "frames_out": out_count, "fps_out": round(out_count / wall, 2) if wall > 0 else 0.0,
            "latency_ms": _pcts(warm), "first_frame_s": round(first_out_s or 0.0, 3),
            "build_s": round(built_s, 2), "peak_memory_bytes": peak,
            "peak_memory_kind": "torch.cuda.max_memory_allocated" if cuda else "process peak RSS"}


async def run_stream(backend: str, minutes: float, width: int, height: int, fps: float) -> dict:
    """The real service and one peer for `minutes`: frame age, lag and RSS per minute."""
    import grpc

    from sd_common.grpc_runtime import GrpcRuntime
    from sd_diffusion.server import register
    from sd_diffusion.settings import DiffusionSettings
    from scale_diffusion.diffusion.v1 import diffusion_pb2 as pb
    from scale_diffusion.diffusion.v1 import diffusion_pb2_grpc

    rt = GrpcRuntime("diffusion", DiffusionSettings(grpc_port=0, metrics_port=0, backend=backend,
                                                    wan_preset="tiny", turbo_preset="tiny", shutdown_grace_s=1.0))
    register(rt)
    port = await rt.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = diffusion_pb2_grpc.DiffusionServiceStub(channel)
    player = Player(width, height, fps=fps)
    per_minute: list[dict] = []
    try:
        await connect(stub, player)
        await player.first_frame.wait()
        start = time.monotonic()
        seen = 0
        for m in range(int(np.ceil(minutes))):
            began = time.monotonic()
            end = start + min(minutes, m + 1) * 60.0
            while time.monotonic() < end:
                await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
            got = player.received[seen:]
            seen = len(player.received)
            ages = [(at - player.track.sent[fid]) * 1000.0 for fid, at, _ in got
                    if fid is not None and fid in player.track.sent]
            lags = [newest - fid for fid, _, newest in got if fid is not None]
            (s,) = (await stub.GetStats(pb.GetStatsRequest(), timeout=5)).streams
            per_minute.append({"minute": m + 1, "frames_back": len(got),
                               "fps_back": round(len(got) / max(1e-6, time.monotonic() - began), 2),
                               "round_trip_ms": _pcts(ages), "lag_frames": _pcts([float(x) for x in lags]),
                               "service_frame_age_p95_ms": round(s.frame_age.p95_ms, 2),
                               "stage_p95_ms": {k: round(v.p95_ms, 2) for k, v in sorted(s.stages.items())},
                               "inputs_dropped_total": s.inputs_dropped, "rss_bytes": _rss_bytes()})
            print(json.dumps(per_minute[-1]), flush=True)
    finally:
        await player.close()
        await channel.close()
        await rt.stop()
    first, last = per_minute[0], per_minute[-1]
    return {"backend": backend, "size": f"{width}x{height}", "fps_sent": fps, "minutes": minutes,
            "per_minute": per_minute,
            "round_trip_p95_ms_first_last": [first["round_trip_ms"]["p95"], last["round_trip_ms"]["p95"]],
            "rss_mb_first_last": [round(first["rss_bytes"] / 2**20, 1), round(last["rss_bytes"] / 2**20, 1)]}


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    b = sub.add_parser("backend", help="each backend called directly")
    b.add_argument("--backends", default="look,wan")
    b.add_argument("--sizes", default="832x480,512x512")
    b.add_argument("--steps", default="1,2")
    b.add_argument("--frames", type=int, default=60)
    b.add_argument("--device", default="auto")
    b.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    b.add_argument("--model-dir", help="the turbo backend's weights (stabilityai/sd-turbo's layout); "
                                       "without it, its tiny random test model")
    s = sub.add_parser("stream", help="the real service and one peer over loopback WebRTC")
    s.add_argument("--backend", default="look")
    s.add_argument("--minutes", type=float, default=5.0)
    s.add_argument("--size", default="640x360")
    s.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args(argv)
    meta = {"command": " ".join(["python", "bench/diffusion_bench.py", *(argv or sys.argv[1:])]),
            "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}"}
    if a.part == "backend":
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        results = []
        for name in a.backends.split(","):
            for size in a.sizes.split(","):
                for steps in ([1] if name == "look" else [int(x) for x in a.steps.split(",")]):
                    r = run_backend(name, *_size(size), steps, a.frames, a.device, a.model_dir)
                    print(json.dumps(r), flush=True)
                    results.append(r)
        out = {**meta, "backend": results}
    else:
        out = {**meta, "stream": asyncio.run(run_stream(a.backend, a.minutes, *_size(a.size), a.fps))}
        print(json.dumps({k: v for k, v in out["stream"].items() if k != "per_minute"}))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
