"""`python -m sd_evaluator`: read settings, build the server, serve until SIGTERM/SIGINT."""

from sd_common.grpc_runtime import run_grpc_service
from sd_common.settings import StoreSettings

from sd_evaluator.server import register
from sd_evaluator.settings import EvaluatorSettings


def main() -> None:
    """Entry point of the evaluator service."""
    run_grpc_service("evaluator", EvaluatorSettings(), lambda rt: register(rt, StoreSettings()))


if __name__ == "__main__":
    main()
