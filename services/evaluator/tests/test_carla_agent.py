"""The leaderboard agent files replayed on recorded sensor inputs (no CARLA server, the local base class).

The test records a drive along a synthetic route in the leaderboard's `input_data` layout — BGRA camera
frames rendered by the project's city renderer at the dataset camera's size, GNSS, IMU, speedometer — into
an .npz file, replays it through `CheckpointLeaderboardAgent` (setup from an agent configuration file,
set_global_plan, run_step per tick) and checks each control against the CILRS network's own output on
the prepared frame for the planner's command."""

from __future__ import annotations

import importlib.util
import json
import math

import carla
import numpy as np
import pytest
import torch
from sd_common.session_format.scene import City, Renderer, rotation
from sd_trainer.checkpoints import save_checkpoint
from sd_trainer.config import ROAD_OPTION_TO_BRANCH, TrainConfig
from sd_trainer.model import CILRS
from test_carla_route_planner import LeaderboardRoadOption, carla_map, synthetic_route

from sd_evaluator.agents import AgentError, Control
from sd_evaluator.camera_input import CameraMount, CameraSpec, Crop
from sd_evaluator.carla import agent as agent_module
from sd_evaluator.carla import constant_agent
from sd_evaluator.carla.agent_base import LEADERBOARD_BASE
from sd_evaluator.carla.route_planner import GeoReference, RoutePlanner
from sd_evaluator.carla.runner import model_agent_config

CAMERA = CameraSpec(recording_width=160, recording_height=90, fov_deg=100.0,
                    mount=CameraMount(1.3, 0.2, 2.3, -5.0, 2.0, 0.0), crop=Crop(36, 0, 88, 88),
                    output_width=64, output_height=64, input_width=64, input_height=64)
TINY = {"model": {"backbone": "resnet18", "base_width": 8, "perception_features": 32,
                  "measurements_neurons": [16, 16], "join_neurons": [32], "branch_neurons": [16, 16],
                  "speed_branch_neurons": [16, 16]}}
GEO = GeoReference(49.0, 8.0)
STEPS = 60
DT_S = 0.05


def record_drive(path, points, arc) -> None:
    """Writes `STEPS` ticks of sensor data along the route (4 m/s ... 12 m/s, every 1-3 m: 120 m) to `path`."""
    fx = CAMERA.recording_width / (2 * math.tan(math.radians(CAMERA.fov_deg) / 2))
    renderer = Renderer(City(5), CAMERA.recording_width, CAMERA.recording_height, fx, fx,
                        CAMERA.recording_width / 2, CAMERA.recording_height / 2)
    world_map = carla_map(GEO.lat_ref_deg, GEO.lon_ref_deg)  # CARLA 0.9.16's own world-to-GNSS conversion
    frames, gnss, imu, speeds, world = [], [], [], [], []
    s = 0.0
    for k in range(STEPS):
        speed = 4.0 + 8.0 * k / STEPS
        s += speed * DT_S * 5  # a coarse replay: five ticks of motion between recorded ticks
        x, y = np.interp(s, arc, points[:, 0]), np.interp(s, arc, points[:, 1])
        xa, ya = np.interp(s + 1.0, arc, points[:, 0]), np.interp(s + 1.0, arc, points[:, 1])
        yaw_carla = math.degrees(math.atan2(ya - y, xa - x))
        # The renderer's city frame is right-handed (y north): mirror CARLA's y and yaw.
        bgr = renderer.render(np.array([x, -y, 2.3]), rotation(-yaw_carla, 0.0, 0.0))
        frames.append(np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 255, np.uint8)], axis=2))
        g = world_map.transform_to_geolocation(carla.Location(x=float(x), y=float(y), z=0.5))
        gnss.append([g.latitude, g.longitude, g.altitude])
        world.append([x, y])
        imu.append([0.0, 0.0, 9.81, 0.0, 0.0, 0.0, math.radians(yaw_carla + 90.0)])
        speeds.append(speed)
    np.savez_compressed(path, rgb_front=np.array(frames), gps=np.array(gnss), imu=np.array(imu),
                        speed=np.array(speeds), world=np.array(world))


def replay(path):
    """The recorded ticks in the leaderboard's input_data layout ({id: (frame, data)}), and where the car was."""
    data = np.load(path)
    for k in range(len(data["speed"])):
        yield k * DT_S, {"rgb_front": (k, data["rgb_front"][k]), "gps": (k, data["gps"][k]),
                         "imu": (k, data["imu"][k]), "speed": (k, {"speed": float(data["speed"][k])})}, \
            data["world"][k]


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(4)
    cfg = TrainConfig.from_overrides(TINY)
    state = {"model": CILRS(cfg.model).state_dict(), "config": cfg.to_dict(), "camera": CAMERA.to_dict()}
    return tmp_path / "run" / save_checkpoint(tmp_path / "run", 1, state)


def _config(tmp_path, **entries):
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(entries))
    return str(path)


def test_replayed_sensor_inputs_drive_the_networks_controls(tmp_path, checkpoint):
    points, options, arc = synthetic_route()
    plan_gps = []
    plan_world = []
    for (x, y), option in zip(points, options):
        lat, lon = GEO.to_gnss(x, y)
        plan_gps.append(({"lat": lat, "lon": lon, "z": 0.0}, LeaderboardRoadOption(option)))
        plan_world.append((carla.Transform(carla.Location(x=float(x), y=float(y))), LeaderboardRoadOption(option)))
    recording = tmp_path / "drive.npz"
    record_drive(recording, points, arc)

    assert agent_module.get_entry_point() == "CheckpointLeaderboardAgent" and not LEADERBOARD_BASE
    agent = getattr(agent_module, agent_module.get_entry_point())("localhost", 2000, False)
    # the configuration the runner writes for the model agent
    agent.setup(_config(tmp_path, **model_agent_config(str(checkpoint), CAMERA)))
    sensors = {s["id"]: s for s in agent.sensors()}
    assert sensors["rgb_front"] == CAMERA.carla_sensor("rgb_front")
    assert sensors["rgb_front"]["y"] == -0.2 and sensors["rgb_front"]["yaw"] == -2.0
    assert {s["type"] for s in sensors.values()} == {"sensor.camera.rgb", "sensor.speedometer",
                                                      "sensor.other.gnss", "sensor.other.imu"}
    agent.set_global_plan(plan_gps, plan_world)

    # The expectation, computed apart: the planner on the world plan and the car's true positions, the
    # network on the prepared frames.
    planner = RoutePlanner(plan_world)
    state = torch.load(checkpoint, weights_only=False)
    net = CILRS(TrainConfig.from_overrides(state["config"]).model)
    net.load_state_dict(state["model"])
    net.eval()
    commands = []
    for t, input_data, (x, y) in replay(recording):
        control = agent.run_step(input_data, t)
        assert isinstance(control, carla.VehicleControl)
        command = planner.step(carla.Location(x=float(x), y=float(y)))
        assert agent.last_command == command
        commands.append(command)
        rgb = input_data["rgb_front"][1][:, :, [2, 1, 0]]
        x = torch.from_numpy(CAMERA.prepare(rgb)).permute(2, 0, 1)[None]
        with torch.no_grad():
            raw = net(x, torch.tensor([input_data["speed"][1]["speed"]])).branches[0, ROAD_OPTION_TO_BRANCH[command]]
        expected = Control.clipped(*raw.tolist())
        # carla.VehicleControl keeps float32
        assert (control.steer, control.throttle, control.brake) == pytest.approx(
            (expected.steer, expected.throttle, expected.brake), abs=1e-6)
        assert not control.hand_brake and not control.reverse
    assert {1, 2, 4} <= set(commands)  # the drive passes the left and the right turn
    agent.destroy()


def test_setup_refuses_a_camera_other_than_the_checkpoints(tmp_path, checkpoint):
    agent = agent_module.CheckpointLeaderboardAgent("localhost", 2000, False)
    other = CameraSpec.from_dict({**CAMERA.to_dict(), "recording": {"width": 160, "height": 90, "fov_deg": 90.0}})
    with pytest.raises(AgentError, match="camera differs from the checkpoint's"):
        agent.setup(_config(tmp_path, checkpoint=str(checkpoint), camera=other.to_dict()))
    with pytest.raises(AgentError, match="gnss 'wgs84' is not one of"):
        agent.setup(_config(tmp_path, checkpoint=str(checkpoint), gnss="wgs84"))
    with pytest.raises(AgentError, match="names no `checkpoint`"):
        agent.setup(_config(tmp_path))
    with pytest.raises(AgentError, match="not found"):
        agent.setup(str(tmp_path / "nope.json"))
    agent.setup(_config(tmp_path, checkpoint=str(checkpoint)))
    with pytest.raises(AgentError, match="before set_global_plan"):
        agent.run_step({}, 0.0)


def test_the_constant_throttle_file_drives_straight_at_its_throttle(tmp_path):
    cls = getattr(constant_agent, constant_agent.get_entry_point())
    agent = cls("localhost", 2000, False)
    agent.setup(_config(tmp_path, throttle=0.35))
    assert [s["type"] for s in agent.sensors()] == ["sensor.speedometer"]
    for speed in (0.0, 7.0, 30.0):
        control = agent.run_step({"speed": (1, {"speed": speed})}, 0.1)
        assert (control.steer, control.brake) == (0.0, 0.0) and control.throttle == pytest.approx(0.35)


def test_agent_files_load_by_path_as_the_leaderboard_loads_them():
    """The leaderboard imports `--agent` by file path as a top-level module."""
    for module in (agent_module, constant_agent):
        spec = importlib.util.spec_from_file_location("leaderboard_agent_under_test", module.__file__)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        assert hasattr(loaded, loaded.get_entry_point())
