"""Runs the whole system locally: six service processes on loopback, embedded defaults, supervised."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sd_common.cli.services import SERVICES, ServiceSpec, health_status, port_is_free, services_at


def stack_env(state_dir: Path, http_port: int, spec: ServiceSpec, base: dict[str, str],
              diffusion_port: int, processor_port: int | None = None,
              ingest_port: int | None = None) -> dict[str, str]:
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
        if ingest_port is not None:  # rewards and wallets (docs/wallets.md)
            env.setdefault(p + "INGEST_TARGET", f"127.0.0.1:{ingest_port}")
        # the game is played from this gateway, so that is where wallets sign in
        env.setdefault(p + "SIWS_DOMAIN", f"127.0.0.1:{http_port}")
        env.setdefault(p + "SIWS_URI", f"http://127.0.0.1:{http_port}")
        web = Path(__file__).resolve().parents[5] / "web" / "dist"
        if web.is_dir():
            env.setdefault(p + "WEB_DIR", str(web))
    if spec.name in ("trainer", "evaluator"):
        env.setdefault(p + "STATE_DIR", str(state_dir / spec.name))
    if spec.name == "ingest":
        env.setdefault(p + "STATE_DIR", str(state_dir / "ingest"))
        if processor_port is not None:
            env.setdefault(p + "PROCESSOR_TARGET", f"127.0.0.1:{processor_port}")
        # wallet links are checked for the gateway's sign-in fields, whatever the gateway was given
        env.setdefault(p + "SIWS_DOMAIN", base.get("SD_GATEWAY_SIWS_DOMAIN", f"127.0.0.1:{http_port}"))
        env.setdefault(p + "SIWS_URI", base.get("SD_GATEWAY_SIWS_URI", f"http://127.0.0.1:{http_port}"))
        if "SD_GATEWAY_SIWS_CHAIN_ID" in base:
            env.setdefault(p + "SIWS_CHAIN_ID", base["SD_GATEWAY_SIWS_CHAIN_ID"])
    return env


async def _pipe(name: str, stream: asyncio.StreamReader) -> None:
    width = max(len(s.name) for s in SERVICES)
    while line := await stream.readline():
        sys.stdout.write(f"{name:<{width}} | {line.decode(errors='replace')}")
        sys.stdout.flush()


@dataclass(frozen=True)
class RestartPolicy:
    """How the stack restarts a service that died: exponential backoff, capped, never giving up.

    A service that ran for ``stable_after_s`` before dying starts again from ``initial_delay_s``; one
    that keeps dying waits twice as long each time, up to ``max_delay_s`` (Kubernetes' CrashLoopBackOff,
    in small).
    """

    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 30.0

    def failures_after_exit(self, consecutive_failures: int, ran_s: float) -> int:
        """The length of the run of quick deaths once a service that was up ``ran_s`` dies."""
        return 1 if ran_s >= self.stable_after_s else consecutive_failures + 1

    def delay_s(self, consecutive_failures: int) -> float:
        """The wait before restart number ``consecutive_failures`` of a run of quick deaths (1, 2, …)."""
        return min(self.max_delay_s, self.initial_delay_s * 2 ** max(consecutive_failures - 1, 0))


@dataclass
class _Service:
    """One supervised service: its current process and its restart history."""

    spec: ServiceSpec
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    consecutive_failures: int = 0
    health_watch: asyncio.Task | None = None


def describe_exit(returncode: int) -> str:
    """"code 1" or "signal SIGKILL": how a process ended, as a person reads it."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


async def run_stack(state_dir: Path, http_port: int, port_offset: int = 0, ready_timeout_s: float = 90.0,
                    stop_event: asyncio.Event | None = None, restart: RestartPolicy = RestartPolicy()) -> int:
    """Starts every service, waits until all are SERVING, then supervises them: a service that dies
    is restarted with backoff while the others keep serving. Ctrl-C/SIGTERM stops everything."""
    specs = services_at(port_offset)
    diffusion_port = next(s.grpc_port for s in specs if s.name == "diffusion")
    processor_port = next(s.grpc_port for s in specs if s.name == "processor")
    ingest_port = next(s.grpc_port for s in specs if s.name == "ingest")
    busy = [(s.name, p) for s in specs for p in (s.grpc_port, s.metrics_port) if not port_is_free(p)]
    if not port_is_free(http_port):
        busy.append(("gateway http", http_port))
    if busy:
        print("cannot start: ports already in use: " + ", ".join(f"{n} {p}" for n, p in busy)
              + " (is another stack running? stop it, or free the ports)", file=sys.stderr)
        return 2
    state_dir.mkdir(parents=True, exist_ok=True)
    services = {spec.name: _Service(spec, stack_env(state_dir, http_port, spec, dict(os.environ), diffusion_port,
                                                    processor_port, ingest_port)) for spec in specs}
    pipes: list[asyncio.Task] = []
    supervisors: list[asyncio.Task] = []
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def spawn(svc: _Service) -> None:
        svc.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", svc.spec.module, env=svc.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        svc.started_at = time.monotonic()
        pipes.append(asyncio.create_task(_pipe(svc.spec.name, svc.proc.stdout)))
        print(f"{svc.spec.name} started (pid {svc.proc.pid})", flush=True)

    try:
        for svc in services.values():
            await spawn(svc)
        deadline = time.monotonic() + ready_timeout_s
        pending = {s.name: f"127.0.0.1:{s.grpc_port}" for s in specs}
        while pending:
            for name, svc in services.items():
                if svc.proc.returncode is not None:
                    print(f"{name} exited with {describe_exit(svc.proc.returncode)} during startup; "
                          "see its lines above", file=sys.stderr)
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
              f"  all {len(SERVICES)} services healthy; `sdctl status` checks them; a service that dies is "
              "restarted; Ctrl-C stops everything\n", flush=True)
        supervisors = [asyncio.create_task(_supervise(svc, stop, restart, spawn)) for svc in services.values()]
        await stop.wait()
        return 0
    finally:
        stop.set()
        await _stop_all(services, supervisors)
        for t in pipes:
            t.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _supervise(svc: _Service, stop: asyncio.Event, policy: RestartPolicy,
                     spawn: Callable[[_Service], Awaitable[None]]) -> None:
    """Restarts the service each time it dies, with backoff, until the stack stops."""
    name = svc.spec.name
    while True:
        returncode = await svc.proc.wait()
        if stop.is_set():
            return
        ran_s = time.monotonic() - svc.started_at
        svc.consecutive_failures = policy.failures_after_exit(svc.consecutive_failures, ran_s)
        delay_s = policy.delay_s(svc.consecutive_failures)
        print(f"{name} exited with {describe_exit(returncode)} after {ran_s:.1f} s; restarting in {delay_s:g} s "
              f"(restart {svc.restarts + 1}; the other services keep serving)", file=sys.stderr, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay_s)
        if stop.is_set():
            return
        svc.restarts += 1
        await spawn(svc)
        if stop.is_set():
            return  # the stack's shutdown stops this one too
        svc.health_watch = asyncio.create_task(_report_healthy(svc, svc.proc, svc.restarts))


async def _report_healthy(svc: _Service, proc: asyncio.subprocess.Process, restart: int) -> None:
    """Says when a restarted service answers its health check again."""
    target = f"127.0.0.1:{svc.spec.grpc_port}"
    while proc.returncode is None:
        if await health_status(target, timeout_s=1.0) == "SERVING":
            print(f"{svc.spec.name} is healthy again (restart {restart}, pid {proc.pid})", flush=True)
            return
        await asyncio.sleep(0.2)


async def _stop_all(services: dict[str, _Service], supervisors: list[asyncio.Task], grace_s: float = 15.0) -> None:
    async def stop_running() -> None:
        procs = [svc.proc for svc in services.values() if svc.proc is not None and svc.proc.returncode is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), grace_s)
        except TimeoutError:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in procs))

    await stop_running()
    await asyncio.gather(*supervisors, return_exceptions=True)  # each returns now that the stack stops
    await stop_running()  # a service that was being restarted at that moment
    print("stopped: " + ", ".join(f"{n} ({s.proc.returncode})" for n, s in services.items() if s.proc is not None),
          flush=True)
