"""`python -m sd_processor`: read settings, build the server, serve until SIGTERM/SIGINT."""

import asyncio

from sd_common.grpc_runtime import GrpcRuntime, run_service
from sd_common.logs import configure_logging
from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings

from sd_processor.server import register
from sd_processor.settings import ProcessorSettings


async def build(settings: ProcessorSettings, store_settings: StoreSettings) -> GrpcRuntime:
    """The runtime with the processor service over the configured object store (not started)."""
    config = settings.processing_config()  # a bad threshold fails here, at start, not per session
    store = make_store(store_settings)
    rt = GrpcRuntime("processor", settings)
    register(rt, store, settings, config)
    rt.on_stop(store.close)
    return rt


async def serve(settings: ProcessorSettings) -> None:
    """Builds the server inside the running event loop and serves until a shutdown signal."""
    await run_service(await build(settings, StoreSettings()))


def main() -> None:
    """Entry point of the processor service."""
    settings = ProcessorSettings()
    configure_logging("processor", settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
