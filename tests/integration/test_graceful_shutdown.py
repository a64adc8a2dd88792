"""SIGTERM lets an upload already in flight finish, then the gateway exits cleanly."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx

from tests.ports import free_port


async def test_in_flight_upload_finishes_after_sigterm(tmp_path):
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "SD_GATEWAY_HTTP_PORT": str(http_port), "SD_GATEWAY_GRPC_PORT": str(grpc_port),
           "SD_GATEWAY_STATE_DIR": str(tmp_path / "gw"), "SD_STORE_ROOT": str(tmp_path / "store"),
           "SD_GATEWAY_SHUTDOWN_GRACE_S": "10", "SD_GATEWAY_LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "sd_gateway"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(100):
                try:
                    await http.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            tok = (await http.post("/v1/players", json={})).json()["device_token"]
            h = {"Authorization": f"Bearer {tok}"}
            sid = (await http.post("/v1/sessions", json={}, headers=h)).json()["session_id"]
            size = 20 * 65536
            t = (await http.post(f"/v1/sessions/{sid}/upload-urls", headers=h,
                                 json={"files": [{"path": "events.jsonl", "size_bytes": size}]})).json()["targets"][0]
            started = asyncio.Event()

            async def slow_body():
                for i in range(20):
                    if i == 2:
                        started.set()
                    yield b"e" * 65536
                    await asyncio.sleep(0.1)  # about 2 s in all

            upload = asyncio.create_task(http.put(t["url"], content=slow_body(), headers=t["headers"]))
            await started.wait()
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            resp = await upload
            assert resp.status_code == 200, resp.text
            assert time.monotonic() - t0 > 0.5  # it really was still in flight when the signal came
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0, out
        assert (tmp_path / "store" / "raw" / sid / "events.jsonl").stat().st_size == size
        # once stopped, nothing listens
        try:
            httpx.get(base + "/healthz", timeout=1)
            raise AssertionError("gateway still answering after shutdown")
        except httpx.TransportError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
