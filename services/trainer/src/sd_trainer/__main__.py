"""`python -m sd_trainer`: read settings, build the server, serve until SIGTERM/SIGINT."""

from sd_common.grpc_runtime import run_grpc_service
from sd_common.settings import StoreSettings

from sd_trainer.server import register
from sd_trainer.settings import TrainerSettings


def main() -> None:
    """Entry point of the trainer service."""
    run_grpc_service("trainer", TrainerSettings(), lambda rt: register(rt, StoreSettings()))


if __name__ == "__main__":
    main()
