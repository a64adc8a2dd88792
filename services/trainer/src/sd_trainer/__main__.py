"""`python -m sd_trainer`: read settings, build the server, serve until SIGTERM/SIGINT."""

import asyncio

from sd_common.grpc_runtime import GrpcRuntime, run_service
from sd_common.logs import configure_logging
from sd_trainer.server import register
from sd_trainer.settings import TrainerSettings


def main() -> None:
    """Entry point of the trainer service."""
    settings = TrainerSettings()
    configure_logging("trainer", settings.log_format, settings.log_level)
    rt = GrpcRuntime("trainer", settings)
    register(rt)
    asyncio.run(run_service(rt))


if __name__ == "__main__":
    main()
