"""`python -m sd_ingest`: read settings, build the server, serve until SIGTERM/SIGINT."""

import asyncio

from sd_common.grpc_runtime import GrpcRuntime, run_service
from sd_common.logs import configure_logging
from sd_ingest.server import register
from sd_ingest.settings import IngestSettings


async def serve(settings: IngestSettings) -> None:
    """Builds the server inside the running event loop and serves until a shutdown signal."""
    rt = GrpcRuntime("ingest", settings)
    register(rt)
    await run_service(rt)


def main() -> None:
    """Entry point of the ingest service."""
    settings = IngestSettings()
    configure_logging("ingest", settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
