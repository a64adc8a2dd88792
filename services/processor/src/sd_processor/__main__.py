"""`python -m sd_processor`: read settings, build the server, serve until SIGTERM/SIGINT."""

import asyncio

from sd_common.grpc_runtime import GrpcRuntime, run_service
from sd_common.logs import configure_logging
from sd_processor.server import register
from sd_processor.settings import ProcessorSettings


async def serve(settings: ProcessorSettings) -> None:
    """Builds the server inside the running event loop and serves until a shutdown signal."""
    rt = GrpcRuntime("processor", settings)
    register(rt)
    await run_service(rt)


def main() -> None:
    """Entry point of the processor service."""
    settings = ProcessorSettings()
    configure_logging("processor", settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
