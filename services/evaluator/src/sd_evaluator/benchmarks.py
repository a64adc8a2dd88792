"""Benchmark names: which routes an evaluation drives, in our city or on a CARLA route file.

`resolve(name)` looks the name up in each kind's table: the city's (`sd_evaluator.city.benchmarks.
BENCHMARKS`: `city-20`, `city-smoke` …) and CARLA's (`sd_evaluator.carla.benchmarks.
BENCHMARKS`: Bench2Drive's 220, its Dev10, Town13 routes). Each table is imported only when
a name is looked up, so the process that resolves a city name does not import CARLA's modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

CITY = "city"
CARLA = "carla"


class UnknownBenchmark(ValueError):
    """A name no benchmark table knows; the message lists the names that exist."""


def _table(module: str, attribute: str) -> Callable[[], Mapping[str, Any]]:
    def load() -> Mapping[str, Any]:
        return getattr(importlib.import_module(module), attribute)

    return load


# kind -> the loader of its table {name: benchmark}. The evaluation process runs each kind with the runner
# evaluate.RUNNERS has for it.
SOURCES: dict[str, Callable[[], Mapping[str, Any]]] = {
    CITY: _table("sd_evaluator.city.benchmarks", "BENCHMARKS"),
    CARLA: _table("sd_evaluator.carla.benchmarks", "BENCHMARKS"),
}


@dataclass(frozen=True)
class ResolvedBenchmark:
    """A benchmark found by name: its kind (a key of SOURCES) and the kind's own benchmark object."""

    name: str
    kind: str
    spec: Any

    @property
    def expected_routes(self) -> int | None:
        """Routes a complete run of it has, when the benchmark says (Bench2Drive: 220), else None."""
        value = getattr(self.spec, "expected_routes", None)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def known() -> dict[str, list[str]]:
    """The names of every kind's benchmarks; a kind whose modules are missing lists nothing."""
    names: dict[str, list[str]] = {}
    for kind, load in SOURCES.items():
        try:
            names[kind] = sorted(load())
        except ModuleNotFoundError:
            names[kind] = []
    return names


def resolve(name: str) -> ResolvedBenchmark:
    """The benchmark with this name, or UnknownBenchmark listing the known names."""
    missing = []
    for kind, load in SOURCES.items():
        try:
            table = load()
        except ModuleNotFoundError as exc:
            missing.append(f"{kind} ({exc})")
            continue
        if name in table:
            return ResolvedBenchmark(name, kind, table[name])
    listed = "; ".join(f"{kind}: {', '.join(names) or 'none'}" for kind, names in known().items())
    why = f" (benchmark tables not installed: {', '.join(missing)})" if missing else ""
    raise UnknownBenchmark(f"unknown benchmark {name!r}; known benchmarks are {listed}{why}")
