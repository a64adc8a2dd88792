"""gRPC servicer of the trainer service: proto in, TrainingRuns call, proto out (errors map via ``ERRORS``)."""

from __future__ import annotations

from scale_diffusion.trainer.v1 import trainer_pb2 as pb
from scale_diffusion.trainer.v1 import trainer_pb2_grpc
from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings

from sd_trainer.errors import ERRORS
from sd_trainer.runs import (
    KubernetesLauncher,
    Run,
    RunState,
    SubprocessLauncher,
    TrainingRuns,
    dataset_in_folder,
    dataset_in_store,
    kubernetes_api,
)
from sd_trainer.settings import TrainerSettings

SERVICE_NAME = "scale_diffusion.trainer.v1.TrainerService"

STATE = {state: pb.RunState.Value(f"RUN_STATE_{state.value}") for state in RunState}


def run_pb(run: Run) -> pb.TrainingRun:
    """A run as the API shows it."""
    return pb.TrainingRun(run_id=run.run_id, dataset_id=run.dataset_id, state=STATE[run.state], step=run.step,
                          train_loss=run.train_loss, val_loss=run.val_loss, checkpoint_uri=run.checkpoint_uri,
                          message=run.message)


class TrainerService(trainer_pb2_grpc.TrainerServiceServicer):
    """The trainer API over TrainingRuns."""

    def __init__(self, runs: TrainingRuns) -> None:
        self._runs = runs

    async def StartTrainingRun(self, request, context):
        return pb.StartTrainingRunResponse(run=run_pb(await self._runs.start(request.dataset_id, request.config_json)))

    async def GetTrainingRun(self, request, context):
        return pb.GetTrainingRunResponse(run=run_pb(await self._runs.get(request.run_id)))

    async def ListTrainingRuns(self, request, context):
        runs, nxt = await self._runs.list(request.dataset_id, request.page_size, request.page_token)
        return pb.ListTrainingRunsResponse(runs=[run_pb(r) for r in runs], next_page_token=nxt)

    async def CancelTrainingRun(self, request, context):
        return pb.CancelTrainingRunResponse(run=run_pb(await self._runs.cancel(request.run_id)))


def build_runs(rt, store_settings: StoreSettings | None = None, **launcher_options) -> TrainingRuns:
    """The runs of this service from its settings: the launcher, the dataset check, and their lifecycle
    in ``rt`` (records read before serving, runs settled and started once it serves, stopped at shutdown)."""
    settings: TrainerSettings = rt.settings
    if settings.dataset_root is not None:
        dataset_exists = dataset_in_folder(settings.dataset_root)
    else:
        store = make_store(store_settings or StoreSettings())
        rt.on_stop(store.close)
        dataset_exists = dataset_in_store(store)
    if settings.launcher == "kubernetes":
        launcher = KubernetesLauncher(kubernetes_api(settings.kube_api_url), settings.namespace)
    else:
        launcher = SubprocessLauncher(settings.state_dir, max_concurrent=settings.max_concurrent_runs,
                                      stop_grace_s=settings.stop_grace_s, max_resumes=settings.max_resumes,
                                      dataset_root=settings.dataset_root, **launcher_options)
        launcher.load()
        rt.host("runs", launcher.open, launcher.close)
    return TrainingRuns(launcher, dataset_exists)


def register(rt, store_settings: StoreSettings | None = None, **launcher_options) -> TrainingRuns:
    """Adds the trainer API to a GrpcRuntime; its errors answer from the trainer's table."""
    runs = build_runs(rt, store_settings, **launcher_options)
    rt.map_errors(ERRORS)
    rt.add(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, TrainerService(runs), SERVICE_NAME)
    return runs
