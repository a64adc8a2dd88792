"""The browser tests' stack and the scripted drive, once per test session: the game's own tests and the
loop's short test use the same stack and the same recorded drive."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.game import (ARTIFACTS, DIFFUSION_DELAY_MS, DRIVE_S, HOSTED_DELAY_MS, HOSTED_KEY, MISSING, MULTIPART_BYTES, PROCESSED_TIMEOUT_S, SIZE, WEB,
                            build_web)
from tests.ports import free_port
from tests.stack import start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if MISSING is not None:  # only under CI=true, where the test must not skip
        pytest.fail(f"browser test needs: {MISSING}")
    build_web()
    state = tmp_path_factory.mktemp("game-stack")
    # The hosted provider's local stand-in (sd_diffusion.mirage_standin), for the hosted drive: it loses
    # the barcode, as a generative model repainting those pixels does, and answers HOSTED_DELAY_MS late.
    port = free_port()
    standin = subprocess.Popen([sys.executable, "-m", "sd_diffusion.mirage_standin", "--port", str(port),
                                "--api-key", HOSTED_KEY, "--barcode", "lose", "--delay-ms", str(HOSTED_DELAY_MS)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert "Mirage stand-in at" in standin.stdout.readline(), "the hosted stand-in did not start"
    env = dict(os.environ, SD_STORE_MULTIPART_THRESHOLD_BYTES=str(MULTIPART_BYTES),
               SD_STORE_MULTIPART_PART_BYTES=str(MULTIPART_BYTES), SD_DIFFUSION_LOOK_DELAY_MS=str(DIFFUSION_DELAY_MS),
               SD_GATEWAY_HOSTED_DIFFUSION="mirage", SD_GATEWAY_MIRAGE_API_KEY=HOSTED_KEY,
               SD_GATEWAY_MIRAGE_API_URL=f"http://127.0.0.1:{port}",
               SD_GATEWAY_MIRAGE_REALTIME_URL=f"ws://127.0.0.1:{port}/v1/stream")
    try:
        running = start_stack(state, env)
        yield {"url": running.url, "state": state, "offset": running.offset}
        running.stop(signal.SIGTERM, timeout_s=30)
    finally:
        standin.terminate()
        standin.wait(timeout=10)


@pytest.fixture(scope="session")
def drive(stack):
    """One scripted drive through the browser, followed to its processed outcome and the contributions
    page; returns the game's result and the stored session."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    started = time.monotonic()
    # After the upload the browser stays on the result screen until it shows the processed outcome,
    # then opens the contributions page and links a wallet there (web/e2e/drive.mjs).
    limit_s = 240 + PROCESSED_TIMEOUT_S
    run = subprocess.run(["node", str(WEB / "e2e" / "drive.mjs"), "--url", stack["url"], "--out", str(ARTIFACTS),
                          "--seed", "7", "--duration", str(DRIVE_S), "--size", f"{SIZE[0]}x{SIZE[1]}",
                          "--wait-outcome", "--contributions", "--link-wallet", "--timeout", str(int(limit_s))],
                         capture_output=True, text=True, timeout=limit_s + 30, check=False)
    log = (ARTIFACTS / "console.log").read_text() if (ARTIFACTS / "console.log").exists() else ""
    assert run.returncode == 0, f"the scripted drive failed:\n{run.stdout}\n{run.stderr}\n{log[-4000:]}"
    result = json.loads((ARTIFACTS / "result.json").read_text())
    sid = result["result"]["sessionId"]
    return {"result": result, "sid": sid, "session": stack["state"] / "store" / "raw" / sid,
            "store": stack["state"] / "store", "drive_s": time.monotonic() - started}


@pytest.fixture(scope="session")
def processed(drive):
    """The processor's _SUCCESS.json for the drive; fails if it does not appear in time.

    The later drives wait for it: on a 2-core machine a drive recorded while the processor decodes
    the first session starves the browser's video encoder, which then loses the last frame.
    """
    done = drive["store"] / "processed" / drive["sid"] / "_SUCCESS.json"
    deadline = time.monotonic() + PROCESSED_TIMEOUT_S
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(1)
    if not done.exists():
        pytest.fail(f"no processed/{drive['sid']}/_SUCCESS.json appeared within {PROCESSED_TIMEOUT_S:.0f} s of the "
                    "upload: the processor did not process the session (SD_E2E_PROCESSED_TIMEOUT_S sets the limit)")
    print(f"\nprocessed {PROCESSED_TIMEOUT_S - (deadline - time.monotonic()):.0f} s after the drive's checks began")
    return done


@pytest.fixture(scope="session")
def second_drive(stack, processed):
    """A second, 10 s plain drive (another seed), so that a version of both has a validation session;
    it waits for the first drive's processing (see `processed`)."""
    return _short_drive(stack, "second", "8", "10")


@pytest.fixture(scope="session")
def diffusion_drive(stack, processed):
    """A 6 s drive with the diffusion view on: the offer goes through the gateway to the stack's
    diffusion service (the CPU look backend, made to take DIFFUSION_DELAY_MS per frame), which streams
    back; it waits for the first drive's processing (see `processed`)."""
    return _short_drive(stack, "diffusion", "10", "6", "--diffusion")


@pytest.fixture(scope="session")
def lost_diffusion_drive(stack, processed):
    """A 12 s drive with the diffusion view on whose stream the diffusion service ends a few seconds in
    (CloseStream, as when its pod goes away): the game must go on with the plain render. Returns the
    drive and the service's stats once the drive ended."""
    import grpc
    from scale_diffusion.diffusion.v1 import diffusion_pb2 as pb
    from scale_diffusion.diffusion.v1 import diffusion_pb2_grpc

    out = ARTIFACTS / "diffusion-lost"
    drive = subprocess.Popen(["node", str(WEB / "e2e" / "drive.mjs"), "--url", stack["url"], "--out", str(out),
                              "--seed", "12", "--duration", "12", "--size", f"{SIZE[0]}x{SIZE[1]}", "--diffusion"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    closed: dict = {}
    with grpc.insecure_channel(f"127.0.0.1:{50054 + stack['offset']}") as channel:
        stub = diffusion_pb2_grpc.DiffusionServiceStub(channel)
        deadline = time.monotonic() + 120
        while not closed and drive.poll() is None and time.monotonic() < deadline:
            for st in stub.GetStats(pb.GetStatsRequest(), timeout=10).streams:
                # the countdown (3 s) sends at most ~15 frames at this backend's 5 fps: 40 is well into the drive
                if st.state == "streaming" and st.frames_out >= 40:
                    stub.CloseStream(pb.CloseStreamRequest(stream_id=st.stream_id), timeout=10)
                    closed = {"stream_id": st.stream_id, "frames_out": st.frames_out}
                    break
            time.sleep(0.2)
        stdout, stderr = drive.communicate(timeout=180)
        after = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert drive.returncode == 0, f"{stdout}\n{stderr}"
    assert closed, "the drive ended before its stream had sent 40 frames"
    result = json.loads((out / "result.json").read_text())
    return {"result": result, "sid": result["result"]["sessionId"], "closed": closed, "after": after}


@pytest.fixture(scope="session")
def hosted_drive(stack, processed):
    """An 8 s drive streamed to the hosted provider's stand-in (`?diffusion=mirage`): the gateway mints
    the token, the game signals with the provider itself; the barcode does not survive the model."""
    return _short_drive(stack, "hosted", "14", "8", "--diffusion", "--diffusion-provider", "mirage")


def _short_drive(stack, name: str, seed: str, duration_s: str, *flags: str) -> dict:
    out = ARTIFACTS / name
    run = subprocess.run(["node", str(WEB / "e2e" / "drive.mjs"), "--url", stack["url"], "--out", str(out),
                          "--seed", seed, "--duration", duration_s, "--size", f"{SIZE[0]}x{SIZE[1]}", *flags],
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    result = json.loads((out / "result.json").read_text())
    return {"result": result, "sid": result["result"]["sessionId"]}
