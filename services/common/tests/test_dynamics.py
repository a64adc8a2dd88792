"""The Python port of the game's dynamics gives the game's states on the shared vectors.

web/tests/fixtures/dynamics_vectors.json is made by the game's own code (web/tests/dynamicsVectors.ts,
checked by Vitest). What never passes through a trigonometric function (speed, gear, acceleration, brake
latch and the mapped controls) must agree bit for bit on every tick (a SHA-256 over every tick's float64
bytes). sin, cos, tan and atan of V8 and of the C library differ in the last bit on a few per cent of
arguments, so heading, wheel angle and position are held to a stated epsilon on the sampled ticks;
measured, the largest difference is about 3e-14 m and 2e-16 rad (docs/verification.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import pytest
from sd_common.dynamics import (
    SEDAN,
    SIM_DT_S,
    ControlMapper,
    event_value,
    js_max,
    js_min,
    js_round,
    make_vehicle,
    replay,
    steer_limit,
    wrap_angle,
)

FIXTURE = Path(__file__).resolve().parents[3] / "web" / "tests" / "fixtures" / "dynamics_vectors.json"
EPS_POSITION_M = 1e-9
EPS_ANGLE_RAD = 1e-12
TRIG_DEPENDENT = {"x": EPS_POSITION_M, "y": EPS_POSITION_M, "yaw": EPS_ANGLE_RAD, "steerAngle": EPS_ANGLE_RAD}

DOC = json.loads(FIXTURE.read_text())
FIELDS = DOC["fields"]


def _ticks(case: dict) -> list[list[float]]:
    events = [(e["step"], e["device"], e["kind"], e["code"], e["value"]) for e in case["events"]]
    start = make_vehicle(case["start"]["x"], case["start"]["y"], case["start"]["yaw"])
    return [[car.x, car.y, car.yaw, car.v, car.steer_angle, float(car.gear), car.accel, float(car.brake_latch),
             c.steer, c.throttle, c.brake] for _, car, c in replay(start, events, case["steps"])]


def _digest(ticks: list[list[float]], fields: list[str]) -> str:
    idx = [FIELDS.index(f) for f in fields]
    h = hashlib.sha256()
    for t in ticks:
        h.update(struct.pack(f"<{len(idx)}d", *(t[j] for j in idx)))
    return h.hexdigest()


def test_the_fixture_covers_what_it_claims() -> None:
    assert DOC["dt_s"] == SIM_DT_S
    names = {c["name"] for c in DOC["cases"]}
    assert {"keyboard", "gamepad", "top_speed", "reverse", "circles"} <= names
    assert sum(c["steps"] for c in DOC["cases"]) > 20_000 and max(c["steps"] for c in DOC["cases"]) >= 8000
    speeds = [s[1 + FIELDS.index("v")] for c in DOC["cases"] for s in c["samples"]]
    assert max(speeds) == SEDAN.max_speed_mps and min(speeds) == -SEDAN.max_reverse_speed_mps
    kinds = {(e["device"], e["kind"]) for c in DOC["cases"] for e in c["events"]}
    assert kinds == {("keyboard", "keydown"), ("keyboard", "keyup"), ("gamepad", "axis"), ("gamepad", "button")}


@pytest.mark.parametrize("case", DOC["cases"], ids=lambda c: c["name"])
def test_python_gives_the_games_states(case: dict) -> None:
    ticks = _ticks(case)
    assert len(ticks) == case["steps"]
    assert _digest(ticks, DOC["trig_free"]) == case["digest_trig_free"], "speed, gear or controls differ"
    worst = dict.fromkeys(FIELDS, 0.0)
    for sample in case["samples"]:
        mine = ticks[sample[0]]
        for j, name in enumerate(FIELDS):
            worst[name] = max(worst[name], abs(mine[j] - sample[1 + j]))
    for name, eps in TRIG_DEPENDENT.items():
        assert worst[name] <= eps, f"{name} differs by {worst[name]:.3g} (epsilon {eps:g})"
    for name in DOC["trig_free"]:
        assert worst[name] == 0.0, name


def test_javascript_math_semantics() -> None:
    assert js_round(0.49999999999999994) == 0.0 and js_round(2.5) == 3.0 and js_round(-2.5) == -2.0
    assert math.copysign(1, js_max(-0.0, 0.0)) == 1 and math.copysign(1, js_min(0.0, -0.0)) == -1
    assert math.copysign(1, js_max(0.0, -0.0)) == 1 and math.copysign(1, js_min(-0.0, 0.0)) == -1
    assert wrap_angle(-math.pi) == math.pi and wrap_angle(7.0) == pytest.approx(7.0 - 2 * math.pi)
    assert wrap_angle(-7.0) == pytest.approx(-7.0 + 2 * math.pi)  # fmod keeps the sign, Python's % would not
    # The log keeps 4 decimals; the mapper applies exactly the logged value, and applying it again changes nothing.
    for v in (0.123456789, -0.99995, 1.3, -1.7, 0.00004, 0.55555, 0.1 + 0.2):
        q = event_value(v)
        assert q == round(min(1.0, max(-1.0, q)), 4) and event_value(q) == q
    assert event_value(float("nan")) == 0.0 and math.copysign(1, event_value(-0.00001)) == 1


def test_the_mapper_and_the_car_behave() -> None:
    m = ControlMapper()
    m.apply("gamepad", "axis", "axis0", 0.05)  # inside the dead zone
    assert m.step(SIM_DT_S).steer == 0
    m.apply("gamepad", "axis", "axis0", -1)
    assert m.step(SIM_DT_S).steer == -1
    assert steer_limit(SEDAN, 30) < steer_limit(SEDAN, 5) <= SEDAN.max_steer_rad
    start = make_vehicle(0, 0, 0)
    states = [car.copy() for _, car, _ in replay(start, [(0, "gamepad", "button", "button7", 1.0)], 600)]
    assert start.v == 0 and states[-1].v > 20 and abs(states[-1].y) < 1e-9  # straight ahead, 0-20 m/s in 10 s
