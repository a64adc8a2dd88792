"""`sdctl stack up` brings all six services up healthy, takes an upload, and stops cleanly on Ctrl-C."""

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ports import stack_port_offset

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    offset = stack_port_offset()
    state = tmp_path_factory.mktemp("stack")
    proc = subprocess.Popen([str(BIN / "sdctl"), "stack", "up", "--state-dir", str(state),
                             "--port-offset", str(offset)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if line.startswith("Scale Diffusion is up:"):
            break
    else:
        proc.kill()
    if not any(line.startswith("Scale Diffusion is up:") for line in lines):
        proc.kill()
        raise AssertionError("stack did not come up:\n" + "".join(lines) + proc.stdout.read())
    url = lines[-1].split(": ", 1)[1].strip()
    yield {"proc": proc, "offset": offset, "url": url, "state": state}
    if proc.poll() is None:
        proc.kill()


def test_stack_is_healthy_and_takes_an_upload(stack, synthetic_session_dir):
    assert stack["url"] == f"http://127.0.0.1:{8080 + stack['offset']}"
    status = subprocess.run([str(BIN / "sdctl"), "status", "--json", "--port-offset", str(stack["offset"])],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)
    assert {r["service"] for r in rows} == {"gateway", "ingest", "processor", "diffusion", "trainer", "evaluator"}
    assert all(r["status"] == "SERVING" for r in rows)
    up = subprocess.run([str(BIN / "sdctl"), "upload", str(synthetic_session_dir), "--gateway", stack["url"]],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    result = json.loads(up.stdout)
    assert result["accepted"] is True
    stored = stack["state"] / "store" / "raw" / result["session_id"]
    assert (stored / "video.webm").is_file() and (stored / "manifest.json").is_file()
    page = urllib.request.urlopen(stack["url"] + "/", timeout=10).read().decode()
    assert "Scale Diffusion" in page


def test_ctrl_c_stops_every_service(stack):
    proc = stack["proc"]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped:" in out
    stopped = out.split("stopped:", 1)[1]
    for name in ("gateway", "ingest", "processor", "diffusion", "trainer", "evaluator"):
        assert f"{name} (0)" in stopped, stopped
