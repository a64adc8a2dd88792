"""Ports for servers the tests start, chosen outside the kernel's ephemeral range.

A port taken with bind(("127.0.0.1", 0)) comes from the ephemeral range, the same range every
outgoing connection of a busy test run draws its local port from: between picking it and the
server binding it, a client socket can take it. Ports outside that range are never handed out
implicitly, so a port found free here stays free until a test server binds it.
"""

from __future__ import annotations

import random
from pathlib import Path

from sd_common.cli.services import port_is_free, services_at


def ephemeral_range() -> tuple[int, int]:
    """The kernel's (low, high) range for implicitly bound ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def is_free(port: int) -> bool:
    """Nothing listens on the port, on any address."""
    return port_is_free(port, "0.0.0.0")


def free_port() -> int:
    """A free TCP port below the ephemeral range."""
    low, _ = ephemeral_range()
    for _ in range(200):
        port = random.randrange(20000, low)
        if is_free(port):
            return port
    raise RuntimeError("no free port found below the ephemeral range")


def stack_port_offset() -> int:
    """A --port-offset for `sdctl stack up` whose ports all avoid the ephemeral range and are free.

    The stack's gRPC ports (50051…) move above the range, its HTTP (8080) and metrics (9101…) ports stay
    below it.
    """
    low, high = ephemeral_range()
    first = max(high + 1 - 50051, 0)
    last = min(low - 9106 - 1, 65535 - 50056)
    if first > last:
        raise RuntimeError(f"no port offset keeps a stack outside the ephemeral range {low}-{high}")
    for _ in range(100):
        offset = random.randrange(first, last + 1, 10) if last - first >= 10 else first
        specs = services_at(offset)
        ports = [8080 + offset] + [p for s in specs for p in (s.grpc_port, s.metrics_port)]
        if all(is_free(p) for p in ports):
            return offset
    raise RuntimeError("no free port offset for a stack")
