"""`python -m sd_evaluator`: read settings, build the server, serve until SIGTERM/SIGINT."""

import asyncio

from sd_common.grpc_runtime import GrpcRuntime, run_service
from sd_common.logs import configure_logging
from sd_evaluator.server import register
from sd_evaluator.settings import EvaluatorSettings


async def serve(settings: EvaluatorSettings) -> None:
    """Builds the server inside the running event loop and serves until a shutdown signal."""
    rt = GrpcRuntime("evaluator", settings)
    register(rt)
    await run_service(rt)


def main() -> None:
    """Entry point of the evaluator service."""
    settings = EvaluatorSettings()
    configure_logging("evaluator", settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
