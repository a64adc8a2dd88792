"""`python -m sd_operator`: read settings, start kopf inside the service runtime, serve until SIGTERM/SIGINT."""

from sd_common.grpc_runtime import run_grpc_service

from sd_operator.runtime import register
from sd_operator.settings import OperatorSettings


def main() -> None:
    """Entry point of the operator."""
    settings = OperatorSettings()
    run_grpc_service("operator", settings, lambda rt: register(rt, settings))


if __name__ == "__main__":
    main()
