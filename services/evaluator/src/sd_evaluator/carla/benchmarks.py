"""CARLA benchmarks: a named route file inside a leaderboard checkout, and the protocol that scores it.

The route files are the leaderboards' own, read from a local checkout (`SD_EVALUATOR_LEADERBOARD_ROOT`):
Bench2Drive's fork of the leaderboard (github.com/Thinklab-SJTU/Bench2Drive, folder `leaderboard/`) for
its 220 routes and its Dev10 subset, the CARLA Leaderboard 2.0 checkout for its Town13 validation routes.
Nothing here is downloaded or copied into the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sd_evaluator.route_file import RouteFile, RouteFileError, read_route_file
from sd_evaluator.scoring import Protocol


class BenchmarkError(ValueError):
    """An unknown benchmark, or one whose leaderboard checkout or route file is missing (named)."""


@dataclass(frozen=True)
class LeaderboardBenchmark:
    """A route file of a leaderboard checkout (path relative to its root) and how its runs are scored."""

    name: str
    route_file: str
    protocol: Protocol
    # The routes the protocol divides by (Bench2Drive's DS is a sum over 220); None: the file's count.
    expected_routes: int | None = None
    description: str = ""

    def route_path(self, leaderboard_root: str | Path | None) -> Path:
        """The route file inside the checkout; BenchmarkError names what is missing."""
        if leaderboard_root is None or str(leaderboard_root) == "":
            raise BenchmarkError(f"benchmark {self.name} needs a leaderboard checkout: set "
                                 f"SD_EVALUATOR_LEADERBOARD_ROOT to the folder holding {self.route_file}")
        root = Path(leaderboard_root)
        if not root.is_dir():
            raise BenchmarkError(f"benchmark {self.name}: the leaderboard checkout {root} does not exist")
        path = root / self.route_file
        if not path.is_file():
            raise BenchmarkError(f"benchmark {self.name}: {path} is missing; is {root} the right checkout "
                                 f"({self.description or 'a leaderboard checkout'})?")
        return path

    def read_routes(self, leaderboard_root: str | Path | None) -> RouteFile:
        """The benchmark's route file, read and checked."""
        path = self.route_path(leaderboard_root)
        try:
            routes = read_route_file(path)
        except RouteFileError as e:
            raise BenchmarkError(f"benchmark {self.name}: {e}") from None
        if self.expected_routes is not None and len(routes.routes) != self.expected_routes:
            raise BenchmarkError(f"benchmark {self.name}: {path} has {len(routes.routes)} routes, the protocol "
                                 f"expects {self.expected_routes}")
        return routes


BENCH2DRIVE = "Bench2Drive's leaderboard folder"
BENCHMARKS: dict[str, LeaderboardBenchmark] = {b.name: b for b in (
    LeaderboardBenchmark("bench2drive-220", "data/bench2drive220.xml", Protocol.BENCH2DRIVE, 220,
                         f"{BENCH2DRIVE}: the 220 evaluation routes"),
    LeaderboardBenchmark("bench2drive-dev10", "data/drivetransformer_bench2drive_dev10.xml", Protocol.BENCH2DRIVE,
                         10, f"{BENCH2DRIVE}: the 10-route development subset"),
    LeaderboardBenchmark("lb2-town13", "data/routes_validation.xml", Protocol.LEADERBOARD_2_0, None,
                         "the CARLA Leaderboard 2.0 checkout: its Town13 validation routes"),
)}


def resolve(name: str) -> LeaderboardBenchmark:
    """The CARLA benchmark of this name; BenchmarkError lists the known ones."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise BenchmarkError(f"unknown CARLA benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}") from None
