"""`python -m sd_diffusion`: read settings, build the server, serve until SIGTERM/SIGINT."""

import structlog

from sd_common.grpc_runtime import run_grpc_service
from sd_diffusion.backends import BackendError
from sd_diffusion.server import register
from sd_diffusion.settings import DiffusionSettings


def main() -> None:
    """Entry point of the diffusion service; a backend that cannot be built (missing weights, no GPU)
    ends it with one log line saying why and exit status 2, not a traceback."""
    try:
        run_grpc_service("diffusion", DiffusionSettings(), register)
    except BackendError as exc:
        structlog.get_logger().error("the diffusion backend cannot start", error=str(exc))
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
