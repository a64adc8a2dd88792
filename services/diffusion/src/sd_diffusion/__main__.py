"""`python -m sd_diffusion`: read settings, build the server, serve until SIGTERM/SIGINT."""

import asyncio

from sd_common.grpc_runtime import GrpcRuntime, run_service
from sd_common.logs import configure_logging
from sd_diffusion.server import register
from sd_diffusion.settings import DiffusionSettings


async def serve(settings: DiffusionSettings) -> None:
    """Builds the server inside the running event loop and serves until a shutdown signal."""
    rt = GrpcRuntime("diffusion", settings)
    register(rt)
    await run_service(rt)


def main() -> None:
    """Entry point of the diffusion service."""
    settings = DiffusionSettings()
    configure_logging("diffusion", settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
