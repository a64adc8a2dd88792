"""`python -m sd_ingest`: read settings, start the ingest, serve until SIGTERM/SIGINT."""

from sd_common.grpc_runtime import run_grpc_service
from sd_common.settings import StoreSettings

from sd_ingest.assembly import build_ingest
from sd_ingest.settings import IngestSettings


def main() -> None:
    """Entry point of the ingest service."""
    run_grpc_service("ingest", IngestSettings(), lambda rt: build_ingest(rt, StoreSettings()))


if __name__ == "__main__":
    main()
