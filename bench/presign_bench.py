"""Presigned-URL issuance on one core: the gateway against bare hello-world servers, in one run.

Each server runs in its own process pinned to CPU 0; the load generator runs pinned to CPU 1 with a
fixed number of keep-alive connections. Every case gets the same client, so the ratios compare the
servers; each case also records the server's CPU time per request (from /proc), the share of a
core a request costs whatever else the machine is doing. The gateway runs once per rate-limit store (``SD_GATEWAY_RATE_LIMIT_STORE``): ``memory``
(this replica's buckets) and ``database`` (the shared buckets: one more database statement a call).

Usage: `python bench/presign_bench.py [--seconds 10] [--concurrency 32] [--stores memory,database]
[--profile DIR]`. ``--profile`` records the gateway with py-spy (bench/requirements.txt) during each
of its cases and writes collapsed stacks (one file per case) and a summary of the hottest frames.
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
import shutil
import textwrap
import time
from collections import Counter
from pathlib import Path

import aiohttp
import grpc
import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # tests.pg starts PostgreSQL as the tests do (--stores postgresql)

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
    # the gateway's own stack: asyncio's loop, the httptools parser
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
                loop="asyncio", http="httptools")
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


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def drive(call, seconds: float, concurrency: int, server_pid: int) -> dict:
    """Runs `call()` from `concurrency` workers for `seconds`; returns throughput, latency, and the
    server's CPU time per request (what a core's capacity follows, however busy the machine is)."""
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
    t0, cpu0 = time.perf_counter(), cpu_s(server_pid)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - t0, cpu_s(server_pid) - cpu0
    latencies.sort()
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
            "server_cpu_us_per_request": 1e6 * cpu / max(len(latencies), 1), "server_cpu_share": cpu / elapsed}


def start_gateway(tmp: str, store: str, database_url: str | None = None) -> tuple[subprocess.Popen, int, int]:
    """The gateway on CPU 0 with the local store and every limit out of the way; returns it and its ports.

    ``store`` "postgresql" is the cluster's case: the gateway's database (sessions, players and the
    shared rate-limit buckets) on PostgreSQL at ``database_url``.
    """
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "SD_GATEWAY_HTTP_PORT": str(http_port), "SD_GATEWAY_GRPC_PORT": str(grpc_port),
           "SD_GATEWAY_STATE_DIR": f"{tmp}/gw-{store}", "SD_STORE_ROOT": f"{tmp}/store-{store}",
           "SD_GATEWAY_LOG_LEVEL": "WARNING", "SD_GATEWAY_UPLOAD_CALLS_PER_MINUTE": "1e9",
           "SD_GATEWAY_UPLOAD_CALLS_BURST": "1000000000",
           "SD_GATEWAY_RATE_LIMIT_STORE": "database" if store == "postgresql" else store}
    if store == "postgresql":
        env["SD_GATEWAY_DATABASE_URL"] = database_url
    proc = subprocess.Popen([sys.executable, "-m", "sd_gateway"], env=env, preexec_fn=pinned(SERVER_CPU))
    return proc, http_port, grpc_port


class Profiler:
    """py-spy recording one process during one case, as collapsed stacks (``--profile``)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        if folder is not None:
            if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
                sys.exit("--profile needs py-spy: pip install -r bench/requirements.txt")
            folder.mkdir(parents=True, exist_ok=True)

    def start(self, pid: int, case: str, seconds: float) -> subprocess.Popen | None:
        if self.folder is None:
            return None
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "250", "--gil", "--nonblocking", "--format", "raw",
                                 "--duration", str(int(seconds)), "--output", str(self.folder / f"{case}.txt")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=pinned(CLIENT_CPU))

    def stop(self, proc: subprocess.Popen | None) -> None:
        if proc is not None:
            proc.wait(timeout=60)


def hottest(collapsed: Path, top: int = 25) -> list[tuple[float, str]]:
    """Share of samples in which each frame (function, file) is on the stack, highest first."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = {f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  for f in stack.split(";") if f}
        for f in frames:
            inclusive[f] += n
    return [(n / total, f) for f, n in inclusive.most_common(top)] if total else []


async def bench_gateway(tmp: str, store: str, seconds: float, concurrency: int, profiler: Profiler,
                        results: dict, database_url: str | None = None) -> None:
    """The gateway's HTTP and gRPC cases with one rate-limit store."""
    proc, http_port, grpc_port = start_gateway(tmp, store, database_url)
    try:
        wait_http(f"http://127.0.0.1:{http_port}/healthz")
        tok = httpx.post(f"http://127.0.0.1:{http_port}/v1/players", json={}).json()["device_token"]
        headers = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
        sid = httpx.post(f"http://127.0.0.1:{http_port}/v1/sessions", json={},
                         headers=headers).json()["session_id"]
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as http:
            gw_url = f"http://127.0.0.1:{http_port}/v1/sessions/{sid}/upload-urls"

            async def gw_call() -> bool:
                async with http.post(gw_url, data=UPLOAD_BODY, headers=headers) as r:
                    await r.read()
                    return r.status == 200

            case = f"http_gateway_upload_urls[{store}]"
            spy = profiler.start(proc.pid, case, seconds)
            results[case] = await drive(gw_call, seconds, concurrency, proc.pid)
            profiler.stop(spy)

        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as gch:
            stub = gateway_pb2_grpc.GatewayServiceStub(gch)
            md = (("authorization", f"Bearer {tok}"),)
            req = pb.CreateUploadUrlsRequest(session_id=sid, files=[common_pb2.SessionFile(
                path="video.webm", size_bytes=8_000_000, content_type="video/webm")])

            async def grpc_gw() -> bool:
                await stub.CreateUploadUrls(req, metadata=md)
                return True

            case = f"grpc_gateway_upload_urls[{store}]"
            spy = profiler.start(proc.pid, case, seconds)
            results[case] = await drive(grpc_gw, seconds, concurrency, proc.pid)
            profiler.stop(spy)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


UPLOAD_BODY = json.dumps({"files": [{"path": "video.webm", "size_bytes": 8_000_000,
                                     "content_type": "video/webm"}]}).encode()


async def run(seconds: float, concurrency: int, stores: list[str], profiler: Profiler) -> dict:
    os.sched_setaffinity(0, {CLIENT_CPU})
    procs = []
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            asgi_port, hello_port = free_port(), free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", HELLO_ASGI, str(asgi_port)], preexec_fn=pinned(SERVER_CPU)))
            procs.append(subprocess.Popen([sys.executable, "-c", HELLO_GRPC, str(hello_port)], preexec_fn=pinned(SERVER_CPU)))
            wait_http(f"http://127.0.0.1:{asgi_port}/")
            # aiohttp: a client fast enough that one core of load saturates one core of server
            conn = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(connector=conn) as http:
                hello_url = f"http://127.0.0.1:{asgi_port}/v1/sessions/s/upload-urls"

                # the same request as the gateway's (a device token is about 190 characters)
                hello_headers = {"Authorization": "Bearer " + "x" * 190, "Content-Type": "application/json"}

                async def hello_call() -> bool:
                    async with http.post(hello_url, data=UPLOAD_BODY, headers=hello_headers) as r:
                        await r.read()
                        return r.status == 200

                results["http_hello"] = await drive(hello_call, seconds, concurrency, procs[0].pid)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{hello_port}") as hch:
                echo = hch.unary_unary("/bench.Hello/Echo")
                payload = pb.CreateUploadUrlsRequest(session_id="s", files=[common_pb2.SessionFile(
                    path="video.webm", size_bytes=8_000_000, content_type="video/webm")]).SerializeToString()

                async def grpc_hello() -> bool:
                    await echo(payload)
                    return True

                results["grpc_hello"] = await drive(grpc_hello, seconds, concurrency, procs[1].pid)
            for store in stores:
                if store == "postgresql":
                    # started after this process moved to the client's core: the server inherits it, so
                    # the gateway's core is the gateway's alone (in a cluster the database is elsewhere)
                    from tests.pg import start_postgres

                    with start_postgres() as pg:
                        await bench_gateway(tmp, store, seconds, concurrency, profiler, results, pg.new_database())
                else:
                    await bench_gateway(tmp, store, seconds, concurrency, profiler, results)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=20)
    ratios = {}
    for store in stores:
        for proto in ("http", "grpc"):
            g, h = results[f"{proto}_gateway_upload_urls[{store}]"], results[f"{proto}_hello"]
            ratios[f"{proto}[{store}]"] = {"throughput_vs_hello": g["rps"] / h["rps"],
                                           "cpu_capacity_vs_hello": h["server_cpu_us_per_request"]
                                           / g["server_cpu_us_per_request"],
                                           "p99_vs_hello": g["p99_ms"] / h["p99_ms"], "p99_ms": g["p99_ms"]}
    results["ratios"] = ratios
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--stores", default="memory,database",
                   help="rate-limit stores to run the gateway with: memory, database (SQLite), postgresql "
                        "(the gateway's whole database on a PostgreSQL this bench starts)")
    p.add_argument("--profile", type=Path, help="record the gateway's cases with py-spy into this folder")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs: one for the servers, one for the load generator")
    stores = [s.strip() for s in a.stores.split(",") if s.strip()]
    if not stores or set(stores) - {"memory", "database", "postgresql"}:
        sys.exit("--stores: one or more of memory, database, postgresql")
    profiler = Profiler(a.profile)
    results = asyncio.run(run(a.seconds, a.concurrency, stores, profiler))
    print(f"{'case':<36} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'cpu us/req':>11} {'cpu share':>9}")
    for k, v in results.items():
        if "rps" in v:
            print(f"{k:<36} {v['rps']:8.0f} {v['p50_ms']:8.2f} {v['p99_ms']:8.2f} {v['errors']:7d} "
                  f"{v['server_cpu_us_per_request']:11.0f} {v['server_cpu_share']:9.2f}")
    for k, r in results["ratios"].items():
        print(f"{k:<18} gateway/hello throughput {r['throughput_vs_hello']:.2f}x, per-CPU capacity "
              f"{r['cpu_capacity_vs_hello']:.2f}x, p99 {r['p99_vs_hello']:.2f}x ({r['p99_ms']:.1f} ms)")
    print("cpu share: the server's CPU time over the case's wall time; well under 1.0 means the server was "
          "waiting (for the client, or for a machine busy with other work), so read the CPU columns too")
    if a.profile:
        for case in [k for k in results if "gateway" in k]:
            lines = [f"{share:6.1%}  {frame}" for share, frame in hottest(a.profile / f"{case}.txt", top=60)]
            (a.profile / f"{case}.top.txt").write_text("\n".join(lines) + "\n")
        print(f"profiles: {a.profile}/*.txt (collapsed stacks), *.top.txt (hottest frames, inclusive)")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
