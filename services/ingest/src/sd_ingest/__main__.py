"""`python -m sd_ingest`: read settings, start the ingest, serve until SIGTERM/SIGINT."""

import asyncio

import structlog
from sd_common.grpc_runtime import wait_for_shutdown_signal
from sd_common.logs import configure_logging
from sd_common.settings import StoreSettings

from sd_ingest.assembly import start_ingest
from sd_ingest.settings import IngestSettings


async def _serve(settings: IngestSettings) -> None:
    ingest = await start_ingest(settings, StoreSettings())
    await wait_for_shutdown_signal()
    structlog.get_logger().info("shutting down", grace_s=settings.shutdown_grace_s)
    await ingest.stop()


def main() -> None:
    """Entry point of the ingest service."""
    settings = IngestSettings()
    configure_logging("ingest", settings.log_format, settings.log_level)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
