"""A dataset version made by the real pipeline, and what the processor wrote for it.

The real processor (``python -m sd_processor``, its own process, default 256x256 output) processes
synthetic sessions put into a local store as the gateway's uploads are; the ingest (in process)
catalogs them and makes a dataset version with its LeRobot export. ``expected_episodes`` reads back
what the processor wrote — the JPEG files and measurements.json of each accepted segment — in the
export's episode order, so a check can compare the export with the processor's own output.

Used by test_lerobot_export.py, and by `make lerobot-check` (run as a script: it writes the export and
a reference file for services/ingest/tests/lerobot_load.py, which runs in LeRobot's environment).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))  # conftest.put_session beside this file

from conftest import put_session  # noqa: E402
from sd_common.objectstore import make_store  # noqa: E402
from sd_common.settings import StoreSettings  # noqa: E402
from sd_ingest.assembly import start_ingest  # noqa: E402
from sd_ingest.catalog import SessionState  # noqa: E402
from sd_ingest.settings import IngestSettings  # noqa: E402

# (session id, player id, synth seed): two players, three sessions, so the version has a val split.
SESSIONS = (("real-1", "alice", 11), ("real-2", "bob", 12), ("real-3", "alice", 13))


@dataclass(frozen=True)
class RealExport:
    """Where a version made by the real pipeline lies, and its manifest."""

    store_root: Path
    dataset_id: str
    manifest: dict

    @property
    def root(self) -> Path:
        return self.store_root / "datasets" / self.dataset_id

    @property
    def lerobot_root(self) -> Path:
        return self.root / "lerobot"


@dataclass(frozen=True)
class ExpectedEpisode:
    """What the processor wrote for one accepted segment: JPEG bytes and measurements, in frame order."""

    segment_id: str
    session_id: str
    split: str
    jpegs: list[bytes]
    measurements: list[dict]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_serving(proc: subprocess.Popen, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    out = proc.stdout.read() if proc.poll() is not None else ""
    raise AssertionError(f"the processor did not become healthy within {timeout_s} s:\n{out}")


def make_sessions(out: Path) -> list[Path]:
    """Three synthetic 6 s 320x180 sessions (one whole 5 s segment each)."""
    from sd_common.session_format.synth import SynthConfig, synth_session
    dirs = []
    for sid, _, seed in SESSIONS:
        synth_session(out / sid, SynthConfig(width=320, height=180, duration_s=6.0, seed=seed))
        dirs.append(out / sid / "session")
    return dirs


async def build_real_export(work: Path, session_dirs: list[Path], *, timeout_s: float = 240) -> RealExport:
    """Processes the sessions with the real processor and makes one dataset version (val_fraction 0.34)."""
    work = work.resolve()  # the processor runs in its own working directory
    store_root = work / "store"
    store_env = {"SD_STORE_BACKEND": "local", "SD_STORE_ROOT": str(store_root)}
    port = _free_port()
    log = open(work / "processor.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sd_processor"], cwd=work, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **store_env, "SD_PROCESSOR_GRPC_PORT": str(port),
                                 "SD_PROCESSOR_METRICS_PORT": "0"}, text=True)
    ingest = None
    store = make_store(StoreSettings(backend="local", root=store_root))
    try:
        _wait_serving(proc, port, 60)
        settings = IngestSettings(grpc_port=0, metrics_port=0, state_dir=work / "ingest",
                                  database_url=f"sqlite:///{work / 'catalog.db'}",
                                  processor_target=f"127.0.0.1:{port}", scan_interval_s=0.2, receive_wait_s=0.2)
        ingest = await start_ingest(settings, StoreSettings(backend="local", root=store_root))
        for (sid, player, _), session_dir in zip(SESSIONS, session_dirs, strict=True):
            await put_session(store, session_dir, sid, player)
        deadline = time.monotonic() + timeout_s
        for sid, _, _ in SESSIONS:
            while True:
                rec = ingest.catalog.get_session(sid)
                if rec is not None and rec.state in (SessionState.PROCESSED, SessionState.FAILED,
                                                     SessionState.REJECTED):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{sid} is still {rec.state if rec else None} after {timeout_s} s; "
                                         f"processor log: {work / 'processor.log'}")
                await asyncio.sleep(0.2)
            assert rec.state == SessionState.PROCESSED, (sid, rec)
        record, _ = await ingest.service.create_dataset("real-processor", 0.34, 3)
        manifest = json.loads((store_root / "datasets" / record.dataset_id / "manifest.json").read_bytes())
        return RealExport(store_root, record.dataset_id, manifest)
    finally:
        if ingest is not None:
            await ingest.stop()
        await store.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def expected_episodes(export: RealExport) -> list[ExpectedEpisode]:
    """The processor's own files for every segment of the version, train episodes first (the export's order)."""
    segs = sorted(export.manifest["segments"], key=lambda s: (s["split"] != "train", s["segment_id"]))
    out = []
    for s in segs:
        folder = export.store_root / s["uri"]
        measurements = json.loads((folder / "measurements.json").read_text())
        jpegs = [p.read_bytes() for p in sorted((folder / "rgb_front").glob("*.jpg"))]
        out.append(ExpectedEpisode(s["segment_id"], s["session_id"], s["split"], jpegs, measurements))
    return out


def decode_rgb(jpeg: bytes) -> np.ndarray:
    """Our decoding of a frame: libjpeg through Pillow, RGB, uint8 (height, width, 3)."""
    import io

    from PIL import Image
    with Image.open(io.BytesIO(jpeg)) as img:
        return np.asarray(img.convert("RGB"))


def write_reference(export: RealExport, path: Path) -> None:
    """An .npz of what LeRobot must load: decoded frames, states, actions, commands, indices."""
    eps = expected_episodes(export)
    frames = np.stack([decode_rgb(j) for e in eps for j in e.jpegs])
    ms = [m for e in eps for m in e.measurements]
    np.savez_compressed(
        path, frames=frames,
        state=np.array([[m["x"], m["y"], m["theta"], m["speed"]] for m in ms], np.float32),
        action=np.array([[m["steer"], m["throttle"], m["brake"]] for m in ms], np.float32),
        command=np.array([m["command"] for m in ms], np.int64),
        episode_index=np.concatenate([np.full(len(e.measurements), i, np.int64) for i, e in enumerate(eps)]),
        frame_index=np.concatenate([np.arange(len(e.measurements), dtype=np.int64) for e in eps]),
        fps=np.array(export.manifest["fps"]))


def main() -> None:
    """`python real_export.py OUT`: OUT/lerobot (the export) and OUT/reference.npz (what it must hold)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    a = parser.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    work = a.out / "work"
    work.mkdir(parents=True)
    export = asyncio.run(build_real_export(work, make_sessions(work / "sessions")))
    shutil.copytree(export.lerobot_root, a.out / "lerobot")
    write_reference(export, a.out / "reference.npz")
    print(json.dumps({"dataset_id": export.dataset_id, "lerobot": str(a.out / "lerobot"),
                      "frames": export.manifest["totals"]["frames"], "segments": export.manifest["totals"]["segments"]}))


if __name__ == "__main__":
    main()
