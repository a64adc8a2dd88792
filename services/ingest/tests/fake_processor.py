"""A stand-in ProcessorService for the ingest's tests: a real gRPC server with scripted behaviour.

It stands in only until services/processor lands; the end-to-end tests also run the real one.
Each call takes the next step of its script (the last step repeats):

    ok          stream progress, write the output contract under output_uri, end with a result
    fail:CODE   abort with that gRPC status (UNAVAILABLE, INTERNAL, INVALID_ARGUMENT, …)
    hang        send one progress message, then nothing, until cancelled
    slow:S      like ok, but spread over S seconds of progress messages (a window to SIGKILL it in)
    die         write half of the output, then the process exits at once (os._exit)

Every call is appended to ``calls.jsonl`` in ``log_dir`` (session, attempt, step, pid), so tests can
count what the processor really saw. Run as a process:
``python fake_processor.py --port P --script ok --log-dir D`` (store from the SD_STORE_* variables).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import cv2
import grpc
import numpy as np
from scale_diffusion.processor.v1 import processor_pb2 as pb
from scale_diffusion.processor.v1 import processor_pb2_grpc
from sd_common.objectstore import ObjectStore, make_store
from sd_common.settings import StoreSettings

FPS = 30
SEGMENT_FRAMES = 150  # 5 s at 30 fps
OUT_W, OUT_H = 64, 32


def _jpeg(i: int) -> bytes:
    img = np.zeros((OUT_H, OUT_W, 3), np.uint8)
    img[:, :, 0] = (i * 7) % 256
    img[:, :, 1] = 128
    img[: OUT_H // 2, :, 2] = 200
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return buf.tobytes()


async def write_output(store: ObjectStore, request: pb.ProcessSessionRequest, *, stop_after_segments: int | None = None,
                       fingerprint: bool = False, processor_version: str = ""
                       ) -> pb.ProcessSessionResult:
    """Writes the processor's output contract for the raw session, _SUCCESS.json last."""
    raw, out, sid = request.raw_uri, request.output_uri, request.session_id
    manifest = json.loads(await store.get_bytes(raw + "manifest.json", max_bytes=1 << 20))
    lines = (await store.get_bytes(raw + "frames.jsonl", max_bytes=64 << 20)).decode().splitlines()
    frames = [json.loads(line) for line in lines if line.strip()]
    n_full = len(frames) // SEGMENT_FRAMES
    segments = []
    for k in range(n_full + (1 if len(frames) % SEGMENT_FRAMES else 0)):
        part = frames[k * SEGMENT_FRAMES:(k + 1) * SEGMENT_FRAMES]
        accepted = len(part) == SEGMENT_FRAMES
        seg_id = f"route_{sid}_{k:03d}"
        counts: dict[str, int] = {}
        for f in part:
            counts[str(f["command"])] = counts.get(str(f["command"]), 0) + 1
        dist = sum(math.dist((a["vehicle"]["x_m"], a["vehicle"]["y_m"]), (b["vehicle"]["x_m"], b["vehicle"]["y_m"]))
                   for a, b in zip(part, part[1:]))
        duration = len(part) / FPS
        segments.append({
            "segment_id": seg_id, "index": k, "accepted": accepted,
            "reasons": [] if accepted else ["shorter_than_5s"], "frames": len(part), "duration_s": duration,
            "t_start_ms": part[0]["t_capture_ms"], "t_end_ms": part[-1]["t_capture_ms"], "distance_m": dist,
            "mean_speed_mps": sum(f["speed_mps"] for f in part) / len(part), "command_counts": counts})
        if not accepted:
            continue
        if stop_after_segments is not None and k >= stop_after_segments:
            break
        measurements = []
        for i, f in enumerate(part):
            await store.put_bytes(f"{out}{seg_id}/rgb_front/{i:05d}.jpg", _jpeg(i), content_type="image/jpeg")
            measurements.append({
                "frame": i, "x": f["vehicle"]["x_m"], "y": f["vehicle"]["y_m"],
                "theta": math.radians(f["vehicle"]["yaw_deg"]), "speed": f["speed_mps"],
                "steer": f["controls"]["steer"], "throttle": f["controls"]["throttle"],
                "brake": f["controls"]["brake"], "command": f["command"]})
        await store.put_bytes(f"{out}{seg_id}/measurements.json", json.dumps(measurements).encode(),
                              content_type="application/json")
    accepted_n = sum(1 for s in segments if s["accepted"])
    rec = manifest["recording"]
    intr = manifest["camera"]["intrinsics"]
    doc = {"schema_version": 1, "session_id": sid, "player_id": manifest["player_id"],
           "attempt_id": request.attempt_id, "source": {"width": rec["width"], "height": rec["height"]},
           "crop": {"x": 0, "y": 0, "width": rec["width"], "height": rec["height"]},
           "output": {"width": OUT_W, "height": OUT_H},
           "intrinsics": {"fx": intr["fx"], "fy": intr["fy"], "cx": intr["cx"], "cy": intr["cy"],
                          "fov_deg": intr["fov_deg"]},
           "segments": segments}
    if processor_version:
        doc["processor_version"] = processor_version
    if fingerprint:
        # the stand-in's fingerprint: the events' bytes (the same upload under another id repeats it). Off
        # unless asked: the tests that upload one recording under several ids mean them as several drives.
        doc["log_fingerprint"] = hashlib.sha256(
            await store.get_bytes(raw + "events.jsonl", max_bytes=64 << 20)).hexdigest()
    await store.put_bytes(out + "qc_report.json", json.dumps(
        {"session_id": sid, "attempt_id": request.attempt_id, "frames_total": len(frames)}).encode(),
        content_type="application/json")
    await store.put_bytes(out + "segments.json", json.dumps(doc).encode(), content_type="application/json")
    marker = json.dumps({"attempt_id": request.attempt_id, "finished_at": datetime.now(UTC).isoformat(),
                         "segments_accepted": accepted_n}).encode()
    await store.put_bytes(out + "_SUCCESS.json", marker, content_type="application/json")
    return pb.ProcessSessionResult(
        frames_decoded=len(frames), frames_kept=accepted_n * SEGMENT_FRAMES, segments_accepted=accepted_n,
        segments_rejected=len(segments) - accepted_n, qc_report_uri=out + "qc_report.json")


class FakeProcessor(processor_pb2_grpc.ProcessorServiceServicer):
    """Answers ProcessSession by its script; see the module docstring."""

    def __init__(self, store: ObjectStore, script: list[str], log_dir: Path, *, fingerprints: bool = False) -> None:
        self.fingerprints = fingerprints
        self.version = ""  # written into segments.json as processor_version when set
        self.store = store
        self.script = list(script)
        self.calls = 0
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _log(self, request: pb.ProcessSessionRequest, step: str, outcome: str) -> None:
        with open(self.log_dir / "calls.jsonl", "a") as f:
            f.write(json.dumps({"session_id": request.session_id, "attempt_id": request.attempt_id, "step": step,
                                "outcome": outcome, "pid": os.getpid()}) + "\n")

    async def ProcessSession(self, request, context):
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        self._log(request, step, "started")
        kind, _, arg = step.partition(":")
        if kind == "fail":
            self._log(request, step, "failed")
            await context.abort(getattr(grpc.StatusCode, arg or "UNAVAILABLE"), f"scripted failure {arg}")
        yield pb.ProcessSessionResponse(stage=pb.PROCESSING_STAGE_VALIDATE, frames_done=0, frames_total=1)
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "die":
            await write_output(self.store, request, stop_after_segments=0)
            os._exit(17)
        if kind == "slow":
            seconds = float(arg or 5)
            ticks = max(1, int(seconds / 0.25))
            for i in range(ticks):
                await asyncio.sleep(seconds / ticks)
                yield pb.ProcessSessionResponse(stage=pb.PROCESSING_STAGE_ALIGN, frames_done=i, frames_total=ticks)
        result = await write_output(self.store, request, fingerprint=self.fingerprints,
                                    processor_version=self.version)
        self._log(request, step, "ok")
        yield pb.ProcessSessionResponse(stage=pb.PROCESSING_STAGE_DONE, frames_done=1, frames_total=1, result=result)


def calls(log_dir: Path) -> list[dict]:
    """Every call logged in ``log_dir`` so far."""
    path = Path(log_dir) / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def start_fake_processor(store: ObjectStore, script: list[str], log_dir: Path, port: int = 0, *,
                               fingerprints: bool = False):
    """Starts the fake in this event loop; returns (server, port, servicer)."""
    server = grpc.aio.server()
    servicer = FakeProcessor(store, script, log_dir, fingerprints=fingerprints)
    processor_pb2_grpc.add_ProcessorServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound, servicer


async def _main(args: argparse.Namespace) -> None:
    store = make_store(StoreSettings())
    server, port, _ = await start_fake_processor(store, args.script.split(","), Path(args.log_dir), args.port)
    print(f"fake processor listening on {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)
    await store.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--script", default="ok")
    p.add_argument("--log-dir", required=True)
    asyncio.run(_main(p.parse_args()))
    sys.exit(0)
