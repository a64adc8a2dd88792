"""What every sdctl command that talks to a service over gRPC shares: the target, the call, the output."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict

from sd_common.cli.services import services_at

Stub = TypeVar("Stub")


def service_target(service: str, explicit: str | None, port_offset: int = 0) -> str:
    """HOST:PORT of `service`: the flag's value, else $SD_<SERVICE>_TARGET (shifted by the offset),
    else the local stack's port for it (shifted by the offset)."""
    if explicit:
        return explicit
    env = os.environ.get(f"SD_{service.upper()}_TARGET")
    if env:
        host, _, port = env.rpartition(":")
        return f"{host}:{int(port) + port_offset}"
    return f"127.0.0.1:{next(s.grpc_port for s in services_at(port_offset) if s.name == service)}"


def call_service(service: str, target: str, stub_class: Callable[[grpc.Channel], Stub],
                 fn: Callable[[Stub], Any]) -> Any | None:
    """fn(stub) on a channel to `target`; on an RPC error prints what the service answered and returns None."""
    with grpc.insecure_channel(target) as channel:
        try:
            return fn(stub_class(channel))
        except grpc.RpcError as exc:
            print(f"sdctl: {service} at {target} answered {exc.code().name}: {exc.details()}", file=sys.stderr)
            return None


def message_dict(message) -> dict:
    """A response as a JSON-ready dict with the proto's field names and every field present."""
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def target_of(a: argparse.Namespace, service: str) -> str:
    """service_target from a command's `--<service>` and `--port-offset` arguments."""
    return service_target(service, getattr(a, service, None), getattr(a, "port_offset", 0))


def add_target_arguments(p: argparse.ArgumentParser, service: str) -> None:
    """The options every command of `service` takes: `--<service>` (its target), `--port-offset`, `--json`."""
    p.add_argument(f"--{service}", help=f"{service} gRPC target (default $SD_{service.upper()}_TARGET, "
                                        f"else the local stack's {service})")
    p.add_argument("--port-offset", type=int, default=0, help="as for `sdctl stack up --port-offset`")
    p.add_argument("--json", action="store_true", help="print JSON")
