"""`sdctl stack up` supervises: a processor killed with SIGKILL mid-session is restarted and healthy
again while the others keep serving, and its session is retried and finishes; a service that keeps
dying waits longer each time (capped); Ctrl-C still stops all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import httpx
from scale_diffusion.ingest.v1 import ingest_pb2

from sd_common.cli.stack import RestartPolicy, describe_exit

from tests.ingest_access import catalog_session
from tests.stack import BIN, RunningStack, start_stack


def _wait_output(stack: RunningStack, pattern: str, count: int = 1, timeout_s: float = 90) -> list[re.Match]:
    """Waits until the stack's output holds ``count`` matches of ``pattern``; returns them all."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = list(re.finditer(pattern, stack.output))
        if len(found) >= count:
            return found
        assert stack.proc.poll() is None, "the stack exited:\n" + stack.output
        assert time.monotonic() < deadline, f"no {count}x {pattern!r} within {timeout_s} s:\n" + stack.output
        time.sleep(0.1)


def _pid(stack: RunningStack, name: str, nth: int = 1) -> int:
    return int(_wait_output(stack, rf"(?m)^{name} started \(pid (\d+)\)$", nth)[nth - 1][1])


def test_a_killed_service_is_restarted_with_backoff_while_the_others_keep_serving(tmp_path, long_session_dir):
    stack = start_stack(tmp_path / "stack")
    try:
        others = {n: _pid(stack, n) for n in ("gateway", "ingest", "diffusion", "trainer", "evaluator")}
        up = subprocess.run([str(BIN / "sdctl"), "upload", str(long_session_dir), "--gateway", stack.url],
                            capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        sid = json.loads(up.stdout)["session_id"]
        # the processor dies in the middle of that session
        _wait_output(stack, rf"processor +\| .*processing .*session_id={sid}")
        os.kill(_pid(stack, "processor"), signal.SIGKILL)
        answered = []
        with httpx.Client(base_url=stack.url, timeout=5) as http:
            deadline = time.monotonic() + 90
            while "processor is healthy again (restart 1" not in stack.output:
                assert time.monotonic() < deadline, stack.output
                answered.append(http.get("/healthz").status_code)  # the gateway serves throughout
                time.sleep(0.2)
        assert answered and set(answered) == {200}
        assert "processor exited with signal SIGKILL" in stack.output
        assert int(re.search(r"processor is healthy again \(restart 1, pid (\d+)\)", stack.output)[1]) \
            == _pid(stack, "processor", 2)
        # nothing else was restarted, and every service answers its health check
        assert {n: _pid(stack, n) for n in others} == others
        assert all(stack.output.count(f"{n} started (pid") == 1 for n in others), stack.output
        # the session it was processing is retried on the restarted processor and finishes
        deadline = time.monotonic() + 120
        while (s := catalog_session(50052 + stack.offset, sid)) is None or s.catalog_state not in (
                ingest_pb2.CATALOG_STATE_PROCESSED, ingest_pb2.CATALOG_STATE_FAILED):
            assert time.monotonic() < deadline, stack.output
            time.sleep(0.2)
        assert s.catalog_state == ingest_pb2.CATALOG_STATE_PROCESSED and s.attempts == 2, s
        status = subprocess.run([str(BIN / "sdctl"), "status", "--json", "--port-offset", str(stack.offset)],
                                capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and all(r["status"] == "SERVING" for r in json.loads(status.stdout)), \
            status.stdout + status.stderr

        # a crash loop: the trainer dies right after each start; each wait doubles (1, 2, 4 s)
        for nth in (1, 2, 3):
            os.kill(_pid(stack, "trainer", nth), signal.SIGKILL)
        exits = _wait_output(stack, r"trainer exited with signal SIGKILL after [\d.]+ s; restarting in ([\d.]+) s "
                                    r"\(restart (\d)", 3)
        assert [(float(m[1]), int(m[2])) for m in exits] == [(1.0, 1), (2.0, 2), (4.0, 3)]
        _wait_output(stack, r"trainer is healthy again \(restart 3, pid \d+\)")
    finally:
        code = stack.stop(signal.SIGINT)
    assert code == 0, stack.output
    stopped = stack.output.rsplit("stopped:", 1)[1]
    for name in ("gateway", "ingest", "processor", "diffusion", "trainer", "evaluator"):
        assert f"{name} (0)" in stopped, stopped


def test_the_backoff_doubles_up_to_its_cap_and_starts_over_after_a_stable_run():
    policy = RestartPolicy()  # what `sdctl stack up` uses
    failures, delays = 0, []
    for _ in range(8):  # a service that dies 2 s after every start
        failures = policy.failures_after_exit(failures, ran_s=2.0)
        delays.append(policy.delay_s(failures))
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.failures_after_exit(failures, ran_s=policy.stable_after_s) == 1  # it had been up a while
    assert policy.delay_s(1) == 1
    assert (describe_exit(-9), describe_exit(0), describe_exit(3)) == ("signal SIGKILL", "code 0", "code 3")
