"""`python -m sd_gateway`: read settings, start HTTP and gRPC, serve until SIGTERM/SIGINT."""

from sd_common.grpc_runtime import run_grpc_service
from sd_common.settings import StoreSettings
from sd_gateway.assembly import build_gateway
from sd_gateway.settings import GatewaySettings


def main() -> None:
    """Entry point of the gateway."""
    run_grpc_service("gateway", GatewaySettings(), lambda rt: build_gateway(rt, StoreSettings()))


if __name__ == "__main__":
    main()
