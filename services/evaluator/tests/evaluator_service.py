"""The evaluator service started in the test's event loop on an ephemeral port, with its real gRPC API;
its evaluation processes run the corridor kind through scripted_evaluation.py (corridor.py)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from scale_diffusion.evaluator.v1 import evaluator_pb2 as pb
from scale_diffusion.evaluator.v1 import evaluator_pb2_grpc
from sd_common.grpc_runtime import GrpcRuntime
from sd_common.settings import StoreSettings

from sd_evaluator.runs import Evaluations
from sd_evaluator.server import register
from sd_evaluator.settings import EvaluatorSettings

FINAL = {pb.EVALUATION_STATE_SUCCEEDED, pb.EVALUATION_STATE_FAILED, pb.EVALUATION_STATE_CANCELLED}
PROGRAM = (sys.executable, str(Path(__file__).with_name("scripted_evaluation.py")))


@dataclass
class Evaluator:
    rt: GrpcRuntime
    evaluations: Evaluations
    stub: evaluator_pb2_grpc.EvaluatorServiceStub
    target: str

    async def get(self, evaluation_id: str) -> pb.Evaluation:
        return (await self.stub.GetEvaluation(pb.GetEvaluationRequest(evaluation_id=evaluation_id))).evaluation

    async def wait(self, evaluation_id: str, *states: int, timeout_s: float = 120.0) -> pb.Evaluation:
        """Polls GetEvaluation until it is in one of `states` (default: any final state)."""
        want = set(states) or FINAL
        deadline = time.monotonic() + timeout_s
        while (e := await self.get(evaluation_id)).state not in want:
            assert time.monotonic() < deadline, f"evaluation still {pb.EvaluationState.Name(e.state)}: {e}"
            await asyncio.sleep(0.05)
        return e


def process_env(store_root: Path, step_s: float = 0.0) -> dict[str, str]:
    """The evaluation processes' environment: the test's store, and how slowly the corridor steps."""
    return {**os.environ, "SD_STORE_ROOT": str(store_root), "CORRIDOR_STEP_S": json.dumps(step_s)}


@asynccontextmanager
async def evaluator_service(state_dir: Path, store_root: Path, **options) -> AsyncIterator[Evaluator]:
    """A started evaluator; `options` are EvaluatorSettings fields or SubprocessLauncher options (program, env)."""
    launcher_options = {k: options.pop(k) for k in ("program", "env") if k in options}
    launcher_options.setdefault("program", PROGRAM)
    launcher_options.setdefault("env", process_env(store_root))
    settings = EvaluatorSettings(grpc_port=0, metrics_port=0, state_dir=state_dir, shutdown_grace_s=1.0, **options)
    rt = GrpcRuntime("evaluator", settings)
    evaluations = register(rt, StoreSettings(root=store_root), **launcher_options)
    await rt.start()
    target = f"127.0.0.1:{rt.grpc_port}"
    channel = grpc.aio.insecure_channel(target)
    try:
        yield Evaluator(rt, evaluations, evaluator_pb2_grpc.EvaluatorServiceStub(channel), target)
    finally:
        await channel.close()
        await rt.stop()
