"""`python -m sd_processor`: read settings, build the server, serve until SIGTERM/SIGINT."""

import asyncio

from sd_common.grpc_runtime import GrpcRuntime, run_service
from sd_common.logs import configure_logging
from sd_processor.server import register
from sd_processor.settings import ProcessorSettings


def main() -> None:
    """Entry point of the processor service."""
    settings = ProcessorSettings()
    configure_logging("processor", settings.log_format, settings.log_level)
    rt = GrpcRuntime("processor", settings)
    register(rt)
    asyncio.run(run_service(rt))


if __name__ == "__main__":
    main()
