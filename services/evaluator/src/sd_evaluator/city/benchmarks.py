"""Named city benchmarks: which city, how many routes, how long, how much traffic, drawn from one seed.

A benchmark is fully reproducible from its fields: route i is drawn by the game from `route_seed(i)`,
which depends only on the benchmark's seed and i, so the same benchmark drives the same routes with
the same traffic on every machine (docs/evaluation.md, "Our city").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# The game's simulation runs at 60 Hz; an agent acting every 3 ticks acts at 20 Hz, as CARLA's
# leaderboard runs its agents.
SIM_HZ = 60
DEFAULT_STEP_TICKS = 3
DEFAULT_CITY = "east-village"
# Seeds the game accepts (it clamps to [0, 2^31 - 1]).
_SEED_MODULUS = 2**31 - 1


class BenchmarkError(ValueError):
    """An unknown benchmark name or a benchmark whose fields cannot be driven."""


@dataclass(frozen=True)
class CityBenchmark:
    """Routes in one city of the game: route i is drawn from `route_seed(i)` with these settings."""

    name: str
    city: str
    seed: int
    routes: int
    route_min_m: float
    route_max_m: float
    cars: int
    pedestrians: int
    render_width: int = 320
    render_height: int = 180
    step_ticks: int = DEFAULT_STEP_TICKS

    def __post_init__(self) -> None:
        if self.routes < 1:
            raise BenchmarkError(f"{self.name}: a benchmark needs at least one route, got {self.routes}")
        if not 0 < self.route_min_m <= self.route_max_m:
            raise BenchmarkError(
                f"{self.name}: route lengths must satisfy 0 < min <= max, got {self.route_min_m}..{self.route_max_m} m"
            )
        if self.step_ticks < 1:
            raise BenchmarkError(f"{self.name}: step_ticks must be at least 1, got {self.step_ticks}")
        if self.cars < 0 or self.pedestrians < 0:
            raise BenchmarkError(f"{self.name}: traffic counts cannot be negative")

    @property
    def agent_hz(self) -> float:
        """How often the agent acts, per second of simulation."""
        return SIM_HZ / self.step_ticks

    def route_seed(self, index: int) -> int:
        """The game seed of route `index`: a digest of the benchmark's seed and the index."""
        if not 0 <= index < self.routes:
            raise BenchmarkError(f"{self.name}: route index {index} is not in [0, {self.routes})")
        digest = hashlib.sha256(f"city-route:{self.seed}:{index}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % _SEED_MODULUS

    def route_id(self, index: int) -> str:
        """The route's id in result files, in the leaderboard's form."""
        return f"RouteScenario_{index}_rep0"

    def reset_options(self, index: int) -> dict[str, float | int]:
        """What the game's agent mode `reset` gets for route `index`."""
        return {
            "seed": self.route_seed(index),
            "route_min_m": self.route_min_m,
            "route_max_m": self.route_max_m,
            "cars": self.cars,
            "peds": self.pedestrians,
        }


BENCHMARKS: dict[str, CityBenchmark] = {
    b.name: b
    for b in (
        # 20 routes in the default city, with the game's default traffic.
        CityBenchmark("city-20", DEFAULT_CITY, seed=20261201, routes=20, route_min_m=300, route_max_m=600,
                      cars=40, pedestrians=40),
        # The first six routes of city-20 (same seed, lengths and traffic, so route i is city-20's route i):
        # the loop benchmark's data-scaling curve evaluates three models beside the baselines on it in one
        # sitting of a 2-core machine, where a model route of city-20 costs 3-5 minutes of wall time.
        CityBenchmark("city-6", DEFAULT_CITY, seed=20261201, routes=6, route_min_m=300, route_max_m=600,
                      cars=40, pedestrians=40),
        # One short route with light traffic, for tests and a quick look. Its seed gives a route on which
        # the constant-throttle agent runs a red light and hits a pedestrian and cars, so one short run
        # exercises most of the infraction mapping.
        CityBenchmark("city-smoke", DEFAULT_CITY, seed=21, routes=1, route_min_m=100, route_max_m=180,
                      cars=12, pedestrians=12),
    )
}


def is_city_benchmark(name: str) -> bool:
    """True for the names this module resolves (`city-*`)."""
    return name.startswith("city-")


def city_benchmark(name: str) -> CityBenchmark:
    """The named city benchmark; an unknown name is a BenchmarkError listing the known ones."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise BenchmarkError(
            f"unknown city benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}"
        ) from None
