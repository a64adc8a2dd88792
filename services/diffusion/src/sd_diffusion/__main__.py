"""`python -m sd_diffusion`: read settings, build the server, serve until SIGTERM/SIGINT."""

from sd_common.grpc_runtime import run_grpc_service
from sd_diffusion.server import register
from sd_diffusion.settings import DiffusionSettings


def main() -> None:
    """Entry point of the diffusion service."""
    run_grpc_service("diffusion", DiffusionSettings(), register)


if __name__ == "__main__":
    main()
