"""`python -m sd_processor`: read settings, build the server, serve until SIGTERM/SIGINT."""

from sd_common.grpc_runtime import GrpcRuntime, run_grpc_service
from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings

from sd_processor.server import register
from sd_processor.settings import ProcessorSettings


def build(rt: GrpcRuntime, store_settings: StoreSettings) -> None:
    """Builds the processor service into ``rt`` over the configured object store."""
    settings: ProcessorSettings = rt.settings  # type: ignore[assignment]
    config = settings.processing_config()  # a bad threshold fails here, at start, not per session
    store = make_store(store_settings)
    register(rt, store, settings, config)
    rt.on_stop(store.close)


def main() -> None:
    """Entry point of the processor service."""
    run_grpc_service("processor", ProcessorSettings(), lambda rt: build(rt, StoreSettings()))


if __name__ == "__main__":
    main()
