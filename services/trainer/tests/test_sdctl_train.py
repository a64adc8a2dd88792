"""`sdctl train start|show|list|cancel` against a real trainer service over gRPC, and the foreground
command's checks before it trains (the foreground run itself is in test_runs_training.py)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from test_server import scripted
from trainer_service import trainer_service

SDCTL = str(Path(sys.executable).parent / "sdctl")


async def sdctl(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(SDCTL, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_start_follow_show_list_and_cancel_over_grpc(tmp_path, tiny_version):
    async with trainer_service(tmp_path / "trainer", tiny_version.root, **scripted(steps=6, step_s=0.05)) as t:
        code, out, err = await sdctl("train", "start", "--dataset", tiny_version.dataset_id, "--config-json",
                                     '{"max_steps": 6}', "--follow", "--interval-s", "0.1", "--trainer", t.target)
        assert code == 0, err
        assert "SUCCEEDED" in out and "step=6" in out and "checkpoint " in out and "step-000000006.pt" in out
        assert "6/6" in err  # the progress bar reached the end
        run_id = out.split()[0]

        # $SD_TRAINER_TARGET plus --port-offset finds the service, as for the other sdctl commands
        host, port = t.target.rsplit(":", 1)
        env = {**os.environ, "SD_TRAINER_TARGET": f"{host}:{int(port) - 7}"}
        code, out, err = await sdctl("train", "show", run_id, "--json", "--port-offset", "7", env=env)
        assert code == 0, err
        shown = json.loads(out)
        assert shown["run_id"] == run_id and shown["state"] == "RUN_STATE_SUCCEEDED" and shown["step"] == "6"

        code, out, err = await sdctl("train", "start", "--dataset", tiny_version.dataset_id, "--json",
                                     "--config-json", '{"max_steps": 1000000}', "--trainer", t.target)
        assert code == 0, err
        second = json.loads(out)["run_id"]
        code, out, err = await sdctl("train", "list", "--trainer", t.target, "--json")
        assert [r["run_id"] for r in json.loads(out)] == [second, run_id]
        code, out, err = await sdctl("train", "list", "--trainer", t.target, "--dataset", "e" * 64)
        assert code == 0 and "no training runs yet" in out
        code, out, err = await sdctl("train", "cancel", second, "--trainer", t.target)
        assert code == 0 and "CANCELLED" in out, out + err
        code, out, err = await sdctl("train", "cancel", second, "--trainer", t.target)
        assert code == 1 and "FAILED_PRECONDITION" in err and "already cancelled" in err
        code, out, err = await sdctl("train", "show", "tr-nope", "--trainer", t.target)
        assert code == 1 and "NOT_FOUND" in err


async def test_bad_input_is_refused_before_anything_runs(tmp_path, tiny_version):
    async with trainer_service(tmp_path / "trainer", tiny_version.root, **scripted()) as t:
        code, _, err = await sdctl("train", "start", "--dataset", tiny_version.dataset_id, "--config-json",
                                   '{"modle": {}}', "--trainer", t.target)
        assert code == 2 and "unknown config key 'modle'" in err
        code, _, err = await sdctl("train", "start", "--dataset", "0" * 64, "--trainer", t.target)
        assert code == 1 and "NOT_FOUND" in err and "has no manifest" in err
        assert list((tmp_path / "trainer" / "runs").iterdir()) == []
    out_dir = tmp_path / "fg"
    code, _, err = await sdctl("train", "--dataset", tiny_version.dataset_id, "--config-json", '{"max_steps": -}',
                               "--out", str(out_dir))
    assert code == 2 and "config_json: config overrides are not valid JSON" in err and not out_dir.exists()
    code, _, err = await sdctl("train", "--dataset", "xyz", "--out", str(out_dir))
    assert code == 2 and "dataset_id 'xyz'" in err and not out_dir.exists()
    code, _, err = await sdctl("train")
    assert code == 2 and "give --dataset" in err
