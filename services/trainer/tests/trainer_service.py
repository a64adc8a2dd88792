"""The trainer service started in the test's event loop on an ephemeral port, with its real gRPC API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from scale_diffusion.trainer.v1 import trainer_pb2 as pb
from scale_diffusion.trainer.v1 import trainer_pb2_grpc
from sd_common.grpc_runtime import GrpcRuntime

from sd_trainer.runs import TrainingRuns
from sd_trainer.server import register
from sd_trainer.settings import TrainerSettings

FINAL = {pb.RUN_STATE_SUCCEEDED, pb.RUN_STATE_FAILED, pb.RUN_STATE_CANCELLED}


@dataclass
class Trainer:
    rt: GrpcRuntime
    runs: TrainingRuns
    stub: trainer_pb2_grpc.TrainerServiceStub
    target: str

    async def wait(self, run_id: str, *states: int, timeout_s: float = 120.0) -> pb.TrainingRun:
        """Polls GetTrainingRun until the run is in one of `states` (default: any final state)."""
        want = set(states) or FINAL
        deadline = time.monotonic() + timeout_s
        while True:
            run = (await self.stub.GetTrainingRun(pb.GetTrainingRunRequest(run_id=run_id))).run
            if run.state in want:
                return run
            assert time.monotonic() < deadline, f"run {run_id} still {pb.RunState.Name(run.state)}: {run}"
            await asyncio.sleep(0.05)

    async def wait_step(self, run_id: str, step: int, timeout_s: float = 120.0) -> pb.TrainingRun:
        """Polls GetTrainingRun until the run reports at least `step`."""
        deadline = time.monotonic() + timeout_s
        while (run := (await self.stub.GetTrainingRun(pb.GetTrainingRunRequest(run_id=run_id))).run).step < step:
            assert run.state not in FINAL and time.monotonic() < deadline, run
            await asyncio.sleep(0.05)
        return run


@asynccontextmanager
async def trainer_service(state_dir: Path, dataset_root: Path | None, **options) -> AsyncIterator[Trainer]:
    """A started trainer; `options` are TrainerSettings fields or SubprocessLauncher options (program, env)."""
    launcher_options = {k: options.pop(k) for k in ("program", "env") if k in options}
    settings = TrainerSettings(grpc_port=0, metrics_port=0, state_dir=state_dir, dataset_root=dataset_root,
                               shutdown_grace_s=1.0, **options)
    rt = GrpcRuntime("trainer", settings)
    runs = register(rt, **launcher_options)
    await rt.start()
    target = f"127.0.0.1:{rt.grpc_port}"
    channel = grpc.aio.insecure_channel(target)
    stopped = False

    async def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            await channel.close()
            await rt.stop()

    async def abandon() -> None:
        """What a SIGKILL of the service leaves: no more API, no supervision, training processes running."""
        nonlocal stopped
        stopped = True
        await channel.close()
        await rt.server.stop(0)
        for task in list(runs.launcher._watchers.values()):
            task.cancel()

    trainer = Trainer(rt, runs, trainer_pb2_grpc.TrainerServiceStub(channel), target)
    trainer.stop = stop  # type: ignore[attr-defined]
    trainer.abandon = abandon  # type: ignore[attr-defined]
    try:
        yield trainer
    finally:
        await stop()
