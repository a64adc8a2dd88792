"""Runs the whole system locally: six service processes on loopback, embedded defaults."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from sd_common.cli.services import SERVICES, ServiceSpec, health_status, port_is_free, services_at


def stack_env(state_dir: Path, http_port: int, spec: ServiceSpec, base: dict[str, str],
              diffusion_port: int, processor_port: int | None = None) -> dict[str, str]:
    """The environment one service process of the local stack runs with."""
    env = dict(base)
    env.setdefault("SD_STORE_BACKEND", "local")
    env.setdefault("SD_STORE_ROOT", str(state_dir / "store"))
    p = spec.env_prefix
    env[p + "GRPC_PORT"] = str(spec.grpc_port)
    env[p + "METRICS_PORT"] = str(spec.metrics_port)
    env.setdefault(p + "LOG_FORMAT", "console")
    if spec.name == "gateway":
        env.setdefault(p + "HTTP_PORT", str(http_port))
        env.setdefault(p + "STATE_DIR", str(state_dir / "gateway"))
        env.setdefault(p + "DIFFUSION_TARGET", f"127.0.0.1:{diffusion_port}")
        web = Path(__file__).resolve().parents[5] / "web" / "dist"
        if web.is_dir():
            env.setdefault(p + "WEB_DIR", str(web))
    if spec.name == "ingest":
        env.setdefault(p + "STATE_DIR", str(state_dir / "ingest"))
        if processor_port is not None:
            env.setdefault(p + "PROCESSOR_TARGET", f"127.0.0.1:{processor_port}")
    return env


async def _pipe(name: str, stream: asyncio.StreamReader) -> None:
    width = max(len(s.name) for s in SERVICES)
    while line := await stream.readline():
        sys.stdout.write(f"{name:<{width}} | {line.decode(errors='replace')}")
        sys.stdout.flush()


async def run_stack(state_dir: Path, http_port: int, port_offset: int = 0, ready_timeout_s: float = 90.0,
                    stop_event: asyncio.Event | None = None) -> int:
    """Starts every service, waits until all are SERVING, serves until Ctrl-C/SIGTERM, stops all."""
    specs = services_at(port_offset)
    diffusion_port = next(s.grpc_port for s in specs if s.name == "diffusion")
    processor_port = next(s.grpc_port for s in specs if s.name == "processor")
    busy = [(s.name, p) for s in specs for p in (s.grpc_port, s.metrics_port) if not port_is_free(p)]
    if not port_is_free(http_port):
        busy.append(("gateway http", http_port))
    if busy:
        print("cannot start: ports already in use: " + ", ".join(f"{n} {p}" for n, p in busy)
              + " (is another stack running? stop it, or free the ports)", file=sys.stderr)
        return 2
    state_dir.mkdir(parents=True, exist_ok=True)
    procs: dict[str, asyncio.subprocess.Process] = {}
    pipes = []
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for spec in specs:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", spec.module,
                env=stack_env(state_dir, http_port, spec, dict(os.environ), diffusion_port, processor_port),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            procs[spec.name] = proc
            pipes.append(asyncio.create_task(_pipe(spec.name, proc.stdout)))
        deadline = time.monotonic() + ready_timeout_s
        pending = {s.name: f"127.0.0.1:{s.grpc_port}" for s in specs}
        while pending:
            for name, proc in procs.items():
                if proc.returncode is not None:
                    print(f"{name} exited with code {proc.returncode} during startup; see its lines above",
                          file=sys.stderr)
                    return 1
            for name, target in list(pending.items()):
                if await health_status(target, timeout_s=1.0) == "SERVING":
                    del pending[name]
            if time.monotonic() > deadline:
                print(f"not healthy after {ready_timeout_s:.0f} s: {', '.join(pending)}", file=sys.stderr)
                return 1
            if stop.is_set():
                return 130
            await asyncio.sleep(0.2)
        print(f"\nScale Diffusion is up: http://127.0.0.1:{http_port}\n"
              f"  all {len(SERVICES)} services healthy; `sdctl status` checks them; Ctrl-C stops everything\n",
              flush=True)
        waiters = [asyncio.create_task(p.wait()) for p in procs.values()]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            dead = [n for n, p in procs.items() if p.returncode is not None]
            print(f"{', '.join(dead)} stopped unexpectedly; stopping the stack", file=sys.stderr)
            return 1
        return 0
    finally:
        await _stop_all(procs)
        for t in pipes:
            t.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _stop_all(procs: dict[str, asyncio.subprocess.Process], grace_s: float = 15.0) -> None:
    for proc in procs.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs.values())), grace_s)
    except TimeoutError:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
        await asyncio.gather(*(p.wait() for p in procs.values()))
    print("stopped: " + ", ".join(f"{n} ({p.returncode})" for n, p in procs.items()), flush=True)
