"""The lower baseline as a Leaderboard 2.0 SENSORS-track agent file: wheel straight, a fixed throttle,
never brakes (sd_evaluator.agents.ConstantThrottleAgent). Its configuration JSON may set `throttle`
(default 0.5); it reads only the speedometer, which the leaderboard requires nothing more than."""

from __future__ import annotations

from typing import Any

import carla

from sd_evaluator.agents import ConstantThrottleAgent, Observation
from sd_evaluator.carla.agent import SENSOR_TICK_S, SPEED_ID, read_agent_config, to_vehicle_control
from sd_evaluator.carla.agent_base import AutonomousAgent, Track


def get_entry_point() -> str:
    """The leaderboard's hook: the name of the agent class in this file."""
    return "ConstantThrottleLeaderboardAgent"


class ConstantThrottleLeaderboardAgent(AutonomousAgent):
    """Drives straight ahead at a constant throttle, whatever happens."""

    def setup(self, path_to_conf_file: str) -> None:
        self.track = Track.SENSORS
        config = read_agent_config(path_to_conf_file) if path_to_conf_file else {}
        self.agent = ConstantThrottleAgent(throttle=float(config.get("throttle", 0.5)))

    def sensors(self) -> list[dict[str, Any]]:
        return [{"type": "sensor.speedometer", "reading_frequency": round(1 / SENSOR_TICK_S), "id": SPEED_ID}]

    def run_step(self, input_data: dict[str, Any], timestamp: float) -> carla.VehicleControl:
        speed = float(input_data[SPEED_ID][1]["speed"]) if SPEED_ID in input_data else 0.0
        return to_vehicle_control(self.agent.act(Observation(image=None, speed_mps=speed, command=4,
                                                             t_s=float(timestamp))))
