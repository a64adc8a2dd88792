"""`python -m sd_gateway`: read settings, start HTTP and gRPC, serve until SIGTERM/SIGINT."""

import asyncio

import structlog

from sd_common.grpc_runtime import wait_for_shutdown_signal
from sd_common.logs import configure_logging
from sd_common.settings import StoreSettings
from sd_gateway.assembly import start_gateway
from sd_gateway.settings import GatewaySettings


async def _serve(settings: GatewaySettings) -> None:
    gw = await start_gateway(settings, StoreSettings())
    await wait_for_shutdown_signal()
    structlog.get_logger().info("shutting down", grace_s=settings.shutdown_grace_s)
    await gw.stop()


def main() -> None:
    """Entry point of the gateway."""
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_format, settings.log_level)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
