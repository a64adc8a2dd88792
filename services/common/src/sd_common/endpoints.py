"""The pods behind a target setting: `host:port` entries as they are, `dns:///name:port` entries resolved.

A Kubernetes headless Service answers a DNS query with one address per ready pod, so resolving it
lists the pods; resolving again every `resolve_every_s` finds pods that came (a scale-up) or went.
A resolution that fails keeps the last known pods through the DNS hiccup. The gateway places
diffusion streams on these pods and the ingest spreads sessions over the processors this way.
"""

from __future__ import annotations

import asyncio
import socket
import time

import structlog

DNS_PREFIX = "dns:///"
log = structlog.get_logger()


def parse_targets(value: str | None, what: str = "target") -> list[str]:
    """The entries of a comma-separated target setting, in order, without blanks or repeats.

    ValueError names an entry that is neither `host:port` nor `dns:///name:port`.
    """
    entries = [e.strip() for e in (value or "").split(",") if e.strip()]
    for e in entries:
        name = e[len(DNS_PREFIX):] if e.startswith(DNS_PREFIX) else e
        host, sep, port = name.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{what} {e!r} is not host:port or dns:///name:port")
    return list(dict.fromkeys(entries))


class EndpointResolver:
    """Entries of a target setting → the pod targets they name now (DNS answers cached)."""

    def __init__(self, entries: list[str], *, resolve_every_s: float = 10.0, what: str = "pods") -> None:
        self.entries = entries
        self._resolve_every_s = resolve_every_s
        self._what = what
        self._resolved: dict[str, tuple[float, list[str]]] = {}  # dns entry -> (when, pod targets)

    async def pods(self) -> list[str]:
        """Every pod target, in the entries' order, without repeats."""
        out: list[str] = []
        for entry in self.entries:
            out += await self._resolve(entry) if entry.startswith(DNS_PREFIX) else [entry]
        return list(dict.fromkeys(out))

    async def _resolve(self, entry: str) -> list[str]:
        now = time.monotonic()
        cached = self._resolved.get(entry)
        if cached and now - cached[0] < self._resolve_every_s:
            return cached[1]
        host, _, port = entry[len(DNS_PREFIX):].rpartition(":")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning(f"{self._what} could not be resolved", target=entry, error=str(exc))
            return cached[1] if cached else []
        addresses = dict.fromkeys(info[4][0] for info in infos)
        pods = [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]
        self._resolved[entry] = (now, pods)
        return pods
