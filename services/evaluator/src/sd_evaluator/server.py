"""gRPC servicer of the evaluator service: proto in, Evaluations call, proto out (errors map via ``ERRORS``)."""

from __future__ import annotations

from scale_diffusion.evaluator.v1 import evaluator_pb2 as pb
from scale_diffusion.evaluator.v1 import evaluator_pb2_grpc
from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings

from sd_evaluator.agents import MODEL
from sd_evaluator.errors import ERRORS
from sd_evaluator.runs import (
    Evaluation,
    Evaluations,
    EvaluationState,
    KubernetesLauncher,
    SubprocessLauncher,
    checkpoint_in_store,
    kubernetes_api,
)
from sd_evaluator.settings import EvaluatorSettings

SERVICE_NAME = "scale_diffusion.evaluator.v1.EvaluatorService"

STATE = {state: pb.EvaluationState.Value(f"EVALUATION_STATE_{state.value}") for state in EvaluationState}


def evaluation_pb(e: Evaluation) -> pb.Evaluation:
    """An evaluation as the API shows it: the model's scores on top, every agent's beside them."""
    summaries = [pb.AgentSummary(agent=s.agent, state=s.state, driving_score=s.driving_score,
                                 route_completion=s.route_completion, infraction_penalty=s.infraction_penalty,
                                 km_driven=s.km_driven, routes_completed=s.routes_done, routes_total=s.routes_total,
                                 infractions_per_km=s.infractions_per_km,
                                 bench2drive_driving_score=s.bench2drive_driving_score,
                                 bench2drive_success_rate=s.bench2drive_success_rate) for s in e.scores]
    model = e.agent_scores(MODEL)
    msg = pb.Evaluation(evaluation_id=e.evaluation_id, checkpoint_uri=e.checkpoint_uri, routes=e.route_file,
                        state=STATE[e.state], message=e.message, benchmark=e.benchmark, agents=e.agents,
                        agents_summary=summaries, progress=e.fraction_done, current_agent=e.current_agent,
                        report_uri=e.report_uri, created_at=e.created_at, finished_at=e.finished_at)
    if model is not None:
        msg.driving_score, msg.route_completion = model.driving_score, model.route_completion
        msg.infraction_penalty, msg.route_km = model.infraction_penalty, model.km_driven
        msg.routes_completed, msg.routes_total = model.routes_done, model.routes_total
    return msg


class EvaluatorService(evaluator_pb2_grpc.EvaluatorServiceServicer):
    """The evaluator API over Evaluations."""

    def __init__(self, evaluations: Evaluations) -> None:
        self._evaluations = evaluations

    async def StartEvaluation(self, request, context):
        e = await self._evaluations.start(request.checkpoint_uri, request.benchmark or request.routes,
                                          list(request.agents))
        return pb.StartEvaluationResponse(evaluation=evaluation_pb(e))

    async def GetEvaluation(self, request, context):
        return pb.GetEvaluationResponse(evaluation=evaluation_pb(await self._evaluations.get(request.evaluation_id)))

    async def ListEvaluations(self, request, context):
        evaluations, nxt = await self._evaluations.list(request.page_size, request.page_token)
        return pb.ListEvaluationsResponse(evaluations=[evaluation_pb(e) for e in evaluations], next_page_token=nxt)

    async def CancelEvaluation(self, request, context):
        e = await self._evaluations.cancel(request.evaluation_id)
        return pb.CancelEvaluationResponse(evaluation=evaluation_pb(e))


def build_evaluations(rt, store_settings: StoreSettings | None = None, **launcher_options) -> Evaluations:
    """The evaluations of this service from its settings: the launcher, the checkpoint check, and their
    lifecycle in ``rt`` (records read before serving, settled and started once it serves, stopped at shutdown)."""
    settings: EvaluatorSettings = rt.settings
    store_settings = store_settings or StoreSettings()
    store = make_store(store_settings)
    rt.on_stop(store.close)
    resolve_benchmark = launcher_options.pop("resolve_benchmark", None)
    if settings.launcher == "kubernetes":
        def uri(key: str) -> str:
            return f"s3://{store_settings.bucket}/{key}" if store_settings.backend == "s3" else key
        launcher = KubernetesLauncher(kubernetes_api(settings.kube_api_url), settings.namespace,
                                      settings.carla_image, store=store, store_uri=uri)
    else:
        launcher = SubprocessLauncher(settings.state_dir, max_concurrent=settings.max_concurrent_evaluations,
                                      stop_grace_s=settings.stop_grace_s, max_restarts=settings.max_restarts,
                                      carla_host=settings.carla_host, carla_port=settings.carla_port,
                                      **launcher_options)
        launcher.load()
        rt.host("evaluations", launcher.open, launcher.close)
    return Evaluations(launcher, checkpoint_in_store(store, store_settings.bucket), resolve_benchmark)


def register(rt, store_settings: StoreSettings | None = None, **launcher_options) -> Evaluations:
    """Adds the evaluator API to a GrpcRuntime; its errors answer from the evaluator's table."""
    evaluations = build_evaluations(rt, store_settings, **launcher_options)
    rt.map_errors(ERRORS)
    rt.add(evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server, EvaluatorService(evaluations), SERVICE_NAME)
    return evaluations
