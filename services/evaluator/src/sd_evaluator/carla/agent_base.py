"""The base class of the leaderboard agent files: the Leaderboard 2.0's own `AutonomousAgent` when its
checkout is on the path (the CARLA evaluation image), otherwise a minimal stand-in with the methods the
agents use, so that their core can be imported and tested without the leaderboard (it is not on PyPI)."""

from __future__ import annotations

import enum
from typing import Any

try:  # the real base inside a leaderboard run
    from leaderboard.autoagents.autonomous_agent import AutonomousAgent, Track  # type: ignore[import-not-found]

    LEADERBOARD_BASE = True
except ImportError:
    LEADERBOARD_BASE = False

    class Track(enum.Enum):  # type: ignore[no-redef]
        """The leaderboard's tracks."""

        SENSORS = "SENSORS"
        MAP = "MAP"

    class AutonomousAgent:  # type: ignore[no-redef]
        """Stand-in for leaderboard.autoagents.autonomous_agent.AutonomousAgent (same constructor and hooks)."""

        def __init__(self, carla_host: str, carla_port: int, debug: bool = False):
            self.track = Track.SENSORS
            self._global_plan: list[Any] | None = None
            self._global_plan_world_coord: list[Any] | None = None

        def setup(self, path_to_conf_file: str) -> None:
            pass

        def sensors(self) -> list[dict[str, Any]]:
            return []

        def run_step(self, input_data: dict[str, Any], timestamp: float) -> Any:
            raise NotImplementedError

        def destroy(self) -> None:
            pass

        def set_global_plan(self, global_plan_gps: list[Any], global_plan_world_coord: list[Any]) -> None:
            # The leaderboard's base keeps a downsampled copy; the stand-in keeps the plan as given.
            self._global_plan = list(global_plan_gps)
            self._global_plan_world_coord = list(global_plan_world_coord)

__all__ = ["LEADERBOARD_BASE", "AutonomousAgent", "Track"]
