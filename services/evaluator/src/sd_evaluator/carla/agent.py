"""The Leaderboard 2.0 SENSORS-track agent of a trained checkpoint (`--agent` of leaderboard_evaluator).

Sensors: one front RGB camera with the dataset's size, field of view and mount (`CameraSpec.carla_sensor`),
the speedometer, and GNSS + IMU for the route planner, all allowed on the SENSORS track. Each step:
the camera's BGRA picture to RGB, the speed, the navigation command from the planner at the GNSS
position, and `CheckpointAgent.act` -> `carla.VehicleControl`. Nothing else changes the control.

The agent configuration (`--agent-config`) is a JSON file (docs/evaluation.md, "The CARLA agent"):
`{"checkpoint": path, store key or s3:// URI, "camera": CameraSpec.to_dict() (optional; must equal the
checkpoint's), "device": "cpu" | "cuda", "reached_radius_m": 7.5, "lookahead_m": 50.0,
"gnss": "carla-0.9.16" | "leaderboard"}`. `gnss` says how the GNSS sensor's readings relate to the route:
CARLA 0.9.16's sensor projects with a transverse Mercator whose latitude grows towards +y, while the
leaderboard converts its route with a Mercator whose latitude grows towards -y (as CARLA 0.9.15's sensor
did). With "carla-0.9.16" (the default: the `carla` package this project depends on) the planner follows
the world-coordinate plan and reads the GNSS through the sensor's projection around the map's
geo-reference, recovered from the plan's two forms; with "leaderboard" it follows the GNSS plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import carla
import numpy as np

from sd_evaluator.agents import AgentError, Observation
from sd_evaluator.camera_input import CameraSpec
from sd_evaluator.carla.agent_base import AutonomousAgent, Track
from sd_evaluator.carla.route_planner import RoutePlanner, TransverseMercator, reference_from_plan
from sd_evaluator.policy import CheckpointAgent

CAMERA_ID = "rgb_front"
SPEED_ID = "speed"
GNSS_ID = "gps"
IMU_ID = "imu"
SENSOR_TICK_S = 0.05  # the leaderboard's 20 Hz
# The leaderboard refuses a sensor mounted farther than this from the car's origin.
MAX_SENSOR_RADIUS_M = 3.0
GNSS_CONVENTIONS = ("carla-0.9.16", "leaderboard")


def get_entry_point() -> str:
    """The leaderboard's hook: the name of the agent class in this file."""
    return "CheckpointLeaderboardAgent"


def read_agent_config(path: str | Path) -> dict[str, Any]:
    """The agent configuration JSON; AgentError names a missing file or key."""
    try:
        config = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AgentError(f"agent configuration {path} not found") from None
    except json.JSONDecodeError as e:
        raise AgentError(f"agent configuration {path} is not JSON: {e}") from None
    if not isinstance(config, dict):
        raise AgentError(f"agent configuration {path} must be a JSON object")
    return config


def rgb_of(bgra: np.ndarray) -> np.ndarray:
    """RGB uint8 H x W x 3 from the CARLA camera's BGRA H x W x 4 picture."""
    if bgra.ndim != 3 or bgra.shape[2] != 4:
        raise AgentError(f"the camera sent a {bgra.shape} picture, not H x W x 4 BGRA")
    return np.ascontiguousarray(bgra[:, :, 2::-1])


def to_vehicle_control(control: Any) -> carla.VehicleControl:
    """CARLA's control of an agents.Control."""
    return carla.VehicleControl(throttle=float(control.throttle), steer=float(control.steer),
                                brake=float(control.brake), hand_brake=False, reverse=False)


class CheckpointLeaderboardAgent(AutonomousAgent):
    """The trained model on the leaderboard's SENSORS track."""

    def setup(self, path_to_conf_file: str) -> None:
        self.track = Track.SENSORS
        self.config = read_agent_config(path_to_conf_file)
        if not self.config.get("checkpoint"):
            raise AgentError(f"agent configuration {path_to_conf_file} names no `checkpoint`")
        self.policy = CheckpointAgent.load(self.config["checkpoint"], device=self.config.get("device", "cpu"))
        if self.config.get("camera") is not None and CameraSpec.from_dict(self.config["camera"]) != self.policy.camera:
            raise AgentError("the agent configuration's camera differs from the checkpoint's; the dataset's "
                             "camera is the checkpoint's")
        self.camera = self.policy.camera
        m = self.camera.mount
        if (m.x_m**2 + m.y_m**2 + m.z_m**2) ** 0.5 > MAX_SENSOR_RADIUS_M:
            raise AgentError(f"the dataset's camera is mounted {m.to_dict()}, more than the leaderboard's "
                             f"{MAX_SENSOR_RADIUS_M} m from the car's origin: its sensor would be refused")
        self.gnss = self.config.get("gnss", GNSS_CONVENTIONS[0])
        if self.gnss not in GNSS_CONVENTIONS:
            raise AgentError(f"agent configuration: gnss {self.gnss!r} is not one of {list(GNSS_CONVENTIONS)}")
        self.planner: RoutePlanner | None = None
        self.dense_plan_gps: list[Any] | None = None
        self.dense_plan_world: list[Any] | None = None
        self.last_command: int | None = None

    def sensors(self) -> list[dict[str, Any]]:
        return [
            self.camera.carla_sensor(CAMERA_ID),
            {"type": "sensor.speedometer", "reading_frequency": round(1 / SENSOR_TICK_S), "id": SPEED_ID},
            {"type": "sensor.other.gnss", "x": 0.0, "y": 0.0, "z": 0.0, "id": GNSS_ID},
            {"type": "sensor.other.imu", "x": 0.0, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0, "yaw": 0.0,
             "id": IMU_ID},
        ]

    def set_global_plan(self, global_plan_gps: list[Any], global_plan_world_coord: list[Any]) -> None:
        # The base keeps a downsampled plan (one point in 200 on the leaderboard); the planner needs the
        # dense one so that short turns keep their own command.
        self.dense_plan_gps = list(global_plan_gps)
        self.dense_plan_world = list(global_plan_world_coord)
        super().set_global_plan(global_plan_gps, global_plan_world_coord)
        self.planner = None

    def run_step(self, input_data: dict[str, Any], timestamp: float) -> carla.VehicleControl:
        if self.planner is None:
            self.planner = self._make_planner()
        missing = [k for k in (CAMERA_ID, SPEED_ID, GNSS_ID) if k not in input_data]
        if missing:
            raise AgentError(f"input data lacks sensors {missing}")
        image = rgb_of(input_data[CAMERA_ID][1])
        speed = float(input_data[SPEED_ID][1]["speed"])
        self.last_command = self.planner.step(input_data[GNSS_ID][1])
        control = self.policy.act(Observation(image=image, speed_mps=speed, command=self.last_command,
                                              t_s=float(timestamp)))
        return to_vehicle_control(control)

    def _make_planner(self) -> RoutePlanner:
        if not self.dense_plan_gps:
            raise AgentError("run_step before set_global_plan: the agent has no route")
        radius = float(self.config.get("reached_radius_m", 7.5))
        lookahead = float(self.config.get("lookahead_m", 50.0))
        if self.gnss == "leaderboard":
            return RoutePlanner(self.dense_plan_gps, reached_radius_m=radius, lookahead_m=lookahead)
        ref = reference_from_plan(self.dense_plan_gps, self.dense_plan_world)
        return RoutePlanner(self.dense_plan_world, reached_radius_m=radius, lookahead_m=lookahead,
                            gnss_projection=TransverseMercator(ref.lat_ref_deg, ref.lon_ref_deg))

    def destroy(self) -> None:
        self.policy = None
