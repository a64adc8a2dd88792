"""`sdctl stack up` brings all six services up healthy, takes an upload, and stops cleanly on Ctrl-C."""

import json
import signal
import subprocess
import urllib.request

import pytest

from tests.stack import BIN, start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop(signal.SIGKILL)


def test_stack_is_healthy_and_takes_an_upload(stack, synthetic_session_dir):
    assert stack.url == f"http://127.0.0.1:{8080 + stack.offset}"
    status = subprocess.run([str(BIN / "sdctl"), "status", "--json", "--port-offset", str(stack.offset)],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)
    assert {r["service"] for r in rows} == {"gateway", "ingest", "processor", "diffusion", "trainer", "evaluator"}
    assert all(r["status"] == "SERVING" for r in rows)
    up = subprocess.run([str(BIN / "sdctl"), "upload", str(synthetic_session_dir), "--gateway", stack.url],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    result = json.loads(up.stdout)
    assert result["accepted"] is True
    stored = stack.state / "store" / "raw" / result["session_id"]
    assert (stored / "video.webm").is_file() and (stored / "manifest.json").is_file()
    page = urllib.request.urlopen(stack.url + "/", timeout=10).read().decode()
    assert "Scale Diffusion" in page


def test_ctrl_c_stops_every_service(stack):
    assert stack.stop(signal.SIGINT) == 0, stack.output
    stopped = stack.output.split("stopped:", 1)[1]
    for name in ("gateway", "ingest", "processor", "diffusion", "trainer", "evaluator"):
        assert f"{name} (0)" in stopped, stopped
