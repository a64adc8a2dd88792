"""Presigned-URL issuance on one core: the gateway against bare hello-world servers, in one run.

Each server runs in its own process pinned to CPU 0; the load generator runs pinned to CPU 1 with a
fixed number of keep-alive connections. Every case gets the same client, so the ratios compare the
servers. Usage: `python bench/presign_bench.py [--seconds 10] [--concurrency 32]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp
import grpc
import httpx

from scale_diffusion.common.v1 import common_pb2
from scale_diffusion.gateway.v1 import gateway_pb2 as pb
from scale_diffusion.gateway.v1 import gateway_pb2_grpc

SERVER_CPU, CLIENT_CPU = 0, 1

HELLO_ASGI = textwrap.dedent('''
    import json, sys, uvicorn
    BODY = json.dumps({"targets": [{"path": "video.webm", "url": "http://127.0.0.1/x"}]}).encode()
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": BODY})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
''')

HELLO_GRPC = textwrap.dedent('''
    import asyncio, sys, grpc
    async def hello(request, context):
        return request
    async def main():
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler("bench.Hello", {
            "Echo": grpc.unary_unary_rpc_method_handler(hello, request_deserializer=None, response_serializer=None)})
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port("127.0.0.1:" + sys.argv[1])
        await server.start()
        await server.wait_for_termination()
    asyncio.run(main())
''')


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def drive(call, seconds: float, concurrency: int) -> dict:
    """Runs `call()` from `concurrency` workers for `seconds`; returns throughput and latency stats."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            ok = await call()
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    for _ in range(min(concurrency, 4)):  # warm up connections and caches
        await call()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))]}


async def run(seconds: float, concurrency: int) -> dict:
    os.sched_setaffinity(0, {CLIENT_CPU})
    procs = []
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            # bare ASGI hello-world
            asgi_port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", HELLO_ASGI, str(asgi_port)], preexec_fn=pinned(SERVER_CPU)))
            # bare gRPC hello-world
            hello_port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", HELLO_GRPC, str(hello_port)], preexec_fn=pinned(SERVER_CPU)))
            # the gateway, local store, limits out of the way
            http_port, grpc_port = free_port(), free_port()
            env = {**os.environ, "SD_GATEWAY_HTTP_PORT": str(http_port), "SD_GATEWAY_GRPC_PORT": str(grpc_port),
                   "SD_GATEWAY_STATE_DIR": f"{tmp}/gw", "SD_STORE_ROOT": f"{tmp}/store",
                   "SD_GATEWAY_LOG_LEVEL": "WARNING", "SD_GATEWAY_UPLOAD_CALLS_PER_MINUTE": "1e9",
                   "SD_GATEWAY_UPLOAD_CALLS_BURST": "1000000000"}
            procs.append(subprocess.Popen([sys.executable, "-m", "sd_gateway"], env=env, preexec_fn=pinned(SERVER_CPU)))
            wait_http(f"http://127.0.0.1:{asgi_port}/")
            wait_http(f"http://127.0.0.1:{http_port}/healthz")

            tok = httpx.post(f"http://127.0.0.1:{http_port}/v1/players", json={}).json()["device_token"]
            headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
            sid = httpx.post(f"http://127.0.0.1:{http_port}/v1/sessions", json={},
                             headers=headers).json()["session_id"]
            # aiohttp: a client fast enough that one core of load saturates one core of server
            conn = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(connector=conn) as http:
                body = json.dumps({"files": [{"path": "video.webm", "size_bytes": 8_000_000,
                                              "content_type": "video/webm"}]}).encode()
                gw_url = f"http://127.0.0.1:{http_port}/v1/sessions/{sid}/upload-urls"
                hello_url = f"http://127.0.0.1:{asgi_port}/v1/sessions/{sid}/upload-urls"

                async def post(url: str) -> bool:
                    async with http.post(url, data=body, headers=headers) as r:
                        await r.read()
                        return r.status == 200

                async def gw_call() -> bool:
                    return await post(gw_url)

                async def hello_call() -> bool:
                    return await post(hello_url)

                results["http_hello"] = await drive(hello_call, seconds, concurrency)
                results["http_gateway_upload_urls"] = await drive(gw_call, seconds, concurrency)

            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as gch, \
                    grpc.aio.insecure_channel(f"127.0.0.1:{hello_port}") as hch:
                stub = gateway_pb2_grpc.GatewayServiceStub(gch)
                md = (("authorization", f"Bearer {tok}"),)
                req = pb.CreateUploadUrlsRequest(session_id=sid, files=[common_pb2.SessionFile(
                    path="video.webm", size_bytes=8_000_000, content_type="video/webm")])
                echo = hch.unary_unary("/bench.Hello/Echo")
                payload = req.SerializeToString()

                async def grpc_gw() -> bool:
                    await stub.CreateUploadUrls(req, metadata=md)
                    return True

                async def grpc_hello() -> bool:
                    await echo(payload)
                    return True

                results["grpc_hello"] = await drive(grpc_hello, seconds, concurrency)
                results["grpc_gateway_upload_urls"] = await drive(grpc_gw, seconds, concurrency)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=20)
    for proto in ("http", "grpc"):
        g, h = results[f"{proto}_gateway_upload_urls"], results[f"{proto}_hello"]
        results[f"{proto}_ratio"] = {"throughput_vs_hello": g["rps"] / h["rps"], "p99_vs_hello": g["p99_ms"] / h["p99_ms"]}
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs: one for the servers, one for the load generator")
    results = asyncio.run(run(a.seconds, a.concurrency))
    print(f"{'case':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for k, v in results.items():
        if "rps" in v:
            print(f"{k:<28} {v['rps']:8.0f} {v['p50_ms']:8.2f} {v['p99_ms']:8.2f} {v['errors']:7d}")
    for proto in ("http", "grpc"):
        r = results[f"{proto}_ratio"]
        print(f"{proto}: gateway/hello throughput {r['throughput_vs_hello']:.2f}x, p99 {r['p99_vs_hello']:.2f}x")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
