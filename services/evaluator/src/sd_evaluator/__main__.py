"""`python -m sd_evaluator`: read settings, build the server, serve until SIGTERM/SIGINT."""

import asyncio

from sd_common.grpc_runtime import GrpcRuntime, run_service
from sd_common.logs import configure_logging
from sd_evaluator.server import register
from sd_evaluator.settings import EvaluatorSettings


def main() -> None:
    """Entry point of the evaluator service."""
    settings = EvaluatorSettings()
    configure_logging("evaluator", settings.log_format, settings.log_level)
    rt = GrpcRuntime("evaluator", settings)
    register(rt)
    asyncio.run(run_service(rt))


if __name__ == "__main__":
    main()
