"""End to end on the local stack (`sdctl stack up`): upload through the gateway → the ingest sees the
store's event → a processor writes segments and a QC report → `sdctl dataset create` lists them.

Two cases: ``real`` uses the stack's own processor (services/processor); ``fake`` points the stack's
ingest at the ingest's scripted stand-in (services/ingest/tests/fake_processor.py, its own process),
which isolates the ingest's side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.stack import BIN, start_stack

FAKE = Path(__file__).resolve().parents[2] / "services" / "ingest" / "tests" / "fake_processor.py"


@pytest.fixture(scope="module")
def session_6s(tmp_path_factory) -> Path:
    from sd_common.session_format.synth import SynthConfig, synth_session
    out = tmp_path_factory.mktemp("synth6-stack")
    synth_session(out, SynthConfig(width=256, height=144, duration_s=6.0, seed=31))
    return out / "session"


@pytest.fixture(params=["fake", "real"])
def stack(request, tmp_path_factory):
    state = tmp_path_factory.mktemp("stack-pipeline")
    env = {**os.environ, "SD_INGEST_RETRY_BACKOFF_S": "0.5", "SD_INGEST_MAX_ATTEMPTS": "2",
           "SD_INGEST_SCAN_INTERVAL_S": "0.3", "SD_INGEST_RECEIVE_WAIT_S": "0.5"}
    fake = None
    if request.param == "fake":
        port = free_port()
        fake = subprocess.Popen([sys.executable, str(FAKE), "--port", str(port), "--script", "ok", "--log-dir",
                                 str(state / "fake-processor")], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "SD_STORE_BACKEND": "local", "SD_STORE_ROOT": str(state / "store")})
        assert "listening" in fake.stdout.readline()
        env["SD_INGEST_PROCESSOR_TARGET"] = f"127.0.0.1:{port}"  # the stack keeps a given target
    running = start_stack(state, env)
    yield {"offset": running.offset, "url": running.url, "state": state, "processor": request.param}
    running.stop()
    if fake:
        fake.kill()
        fake.wait()


def _sdctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sdctl"), *args], capture_output=True, text=True, timeout=timeout)


def test_an_upload_becomes_processed_segments_and_a_dataset(stack, session_6s):
    off = str(stack["offset"])
    up = _sdctl("upload", str(session_6s), "--gateway", stack["url"])
    assert up.returncode == 0, up.stdout + up.stderr
    sid = json.loads(up.stdout)["session_id"]

    deadline = time.monotonic() + 120
    while True:
        shown = _sdctl("catalog", "show", sid, "--port-offset", off)
        session = json.loads(shown.stdout) if shown.returncode == 0 else None
        state = session["catalog_state"] if session else None
        if state in ("CATALOG_STATE_PROCESSED", "CATALOG_STATE_FAILED", "CATALOG_STATE_REJECTED"):
            break
        assert time.monotonic() < deadline, f"session {sid} is still {state} after 120 s"
        time.sleep(0.5)
    assert state == "CATALOG_STATE_PROCESSED", session
    assert session["segments_accepted"] >= 1

    out = stack["state"] / "store" / "processed" / sid
    assert (out / "qc_report.json").is_file() and (out / "segments.json").is_file()
    segments = json.loads((out / "segments.json").read_text())
    accepted = [s for s in segments["segments"] if s["accepted"]]
    assert len(accepted) == session["segments_accepted"]
    first = out / accepted[0]["segment_id"]
    assert (first / "rgb_front" / "00000.jpg").is_file() and (first / "measurements.json").is_file()
    assert (stack["state"] / "store" / "raw" / sid / "video.webm").is_file()  # raw upload kept

    made = _sdctl("dataset", "create", "--port-offset", off, "--name", "e2e", "--json")
    assert made.returncode == 0, made.stderr
    dataset = json.loads(made.stdout)["dataset"]
    assert dataset["segments"] >= len(accepted)
    listed = _sdctl("dataset", "list", "--port-offset", off, "--json")
    assert dataset["dataset_id"] in {d["dataset_id"] for d in json.loads(listed.stdout)}
    root = stack["state"] / "store" / "datasets" / dataset["dataset_id"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert {s["segment_id"] for s in manifest["segments"]} >= {s["segment_id"] for s in accepted}
    assert (root / "lerobot" / "meta" / "info.json").is_file()
