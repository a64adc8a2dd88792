"""`python -m sd_trainer`: read settings, build the server, serve until SIGTERM/SIGINT."""

import asyncio

from sd_common.grpc_runtime import GrpcRuntime, run_service
from sd_common.logs import configure_logging
from sd_trainer.server import register
from sd_trainer.settings import TrainerSettings


async def serve(settings: TrainerSettings) -> None:
    """Builds the server inside the running event loop and serves until a shutdown signal."""
    rt = GrpcRuntime("trainer", settings)
    register(rt)
    await run_service(rt)


def main() -> None:
    """Entry point of the trainer service."""
    settings = TrainerSettings()
    configure_logging("trainer", settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
