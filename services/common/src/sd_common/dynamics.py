"""The game's vehicle dynamics and input mapping (web/src/sim/vehicle.ts, input.ts), ported line for line.

The game steps a kinematic bicycle at a fixed 60 Hz from the controls its ControlMapper makes of the raw
input events; this module does the same arithmetic in the same order on Python floats (IEEE float64, as
JavaScript numbers), so that the processor can replay a session's events.jsonl and the synthetic
sessions drive the car the game drives. The shared vectors in web/tests/fixtures/dynamics_vectors.json
hold both to it (services/common/tests/test_dynamics.py, web/tests/dynamicsVectors.test.ts).

Where JavaScript and Python differ the port follows JavaScript: ``%`` is C's fmod (``math.fmod``),
``Math.round`` rounds halves up, ``Math.max``/``Math.min`` rank +0 above -0, ``Math.sign`` keeps -0.
``Math.sin``/``cos``/``tan``/``atan`` become the ``math`` module's (the C library's): the speed,
the gear and the controls never pass through them and agree bit for bit with every engine; the
heading, the wheel angle and the position may differ from a browser's in the last bit of a step
(see docs/verification.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

SIM_DT_S = 1 / 60
SIM_HZ = 60
EVENT_VALUE_DIGITS = 4

_TWO_PI = 2 * math.pi


# --- JavaScript's Math, where Python's builtins differ ----------------------------------------------


def js_round(x: float) -> float:
    """``Math.round``: the nearest integer, halves towards +infinity (``floor(x + 0.5)`` is not it)."""
    f = math.floor(x)
    return float(f + 1) if x - f >= 0.5 else float(f)


def js_max(a: float, b: float) -> float:
    """``Math.max`` of two numbers (+0 ranks above -0)."""
    if a != a or b != b:
        return math.nan
    if a == b:
        return b if math.copysign(1.0, a) < 0 else a
    return a if a > b else b


def js_min(a: float, b: float) -> float:
    """``Math.min`` of two numbers (-0 ranks below +0)."""
    if a != a or b != b:
        return math.nan
    if a == b:
        return a if math.copysign(1.0, a) < 0 else b
    return a if a < b else b


def js_sign(x: float) -> float:
    """``Math.sign``: -1, 1, or x itself for +-0 and NaN."""
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return x


def clamp(v: float, lo: float, hi: float) -> float:
    """geometry.ts ``clamp``."""
    return lo if v < lo else hi if v > hi else v


def wrap_angle(a: float) -> float:
    """geometry.ts ``wrapAngle``: wrapped to (-pi, pi]."""
    r = math.fmod(a, _TWO_PI)
    if r <= -math.pi:
        r += _TWO_PI
    elif r > math.pi:
        r -= _TWO_PI
    return r


def wrap_deg(d: float) -> float:
    """geometry.ts ``wrapDeg``: degrees wrapped to [-180, 180]."""
    r = math.fmod(d, 360)
    if r < -180:
        r += 360
    elif r > 180:
        r -= 360
    return r


# --- vehicle.ts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VehicleParams:
    """vehicle.ts ``VehicleParams``, SI units."""

    wheelbase_m: float
    length_m: float
    width_m: float
    max_steer_rad: float
    steer_rate_radps: float
    max_lateral_accel_mps2: float
    max_accel_mps2: float
    power_per_mass_wpkg: float
    max_brake_mps2: float
    max_speed_mps: float
    max_reverse_speed_mps: float
    drag_per_mass_pm: float
    rolling_resistance_mps2: float


SEDAN = VehicleParams(
    wheelbase_m=2.9, length_m=4.9, width_m=2.0, max_steer_rad=35 * (math.pi / 180), steer_rate_radps=1.6,
    max_lateral_accel_mps2=7.5, max_accel_mps2=4.0, power_per_mass_wpkg=75, max_brake_mps2=8.5, max_speed_mps=45,
    max_reverse_speed_mps=5, drag_per_mass_pm=0.00028, rolling_resistance_mps2=0.12)


@dataclass(frozen=True)
class Controls:
    """The controls of one step: steer in [-1, 1] (negative left), throttle and brake in [0, 1]."""

    steer: float = 0.0
    throttle: float = 0.0
    brake: float = 0.0


@dataclass
class VehicleState:
    """vehicle.ts ``VehicleState``: pose (yaw counter-clockwise from east), signed speed, wheel angle."""

    x: float
    y: float
    yaw: float
    v: float = 0.0
    steer_angle: float = 0.0
    gear: int = 1
    accel: float = 0.0
    brake_latch: bool = False

    def copy(self) -> VehicleState:
        """An independent copy."""
        return replace(self)


def make_vehicle(x: float, y: float, yaw: float) -> VehicleState:
    """A car at rest, in drive, wheels straight."""
    return VehicleState(x, y, yaw)


def steer_limit(p: VehicleParams, v: float) -> float:
    """The largest wheel angle at speed v that keeps lateral acceleration within the limit."""
    v2 = v * v
    if v2 < 1e-6:
        return p.max_steer_rad
    return js_min(p.max_steer_rad, math.atan((p.wheelbase_m * p.max_lateral_accel_mps2) / v2))


def step_vehicle(s: VehicleState, c: Controls, dt: float, p: VehicleParams = SEDAN) -> None:
    """Advances the vehicle by dt seconds under ``c``, in place (vehicle.ts ``stepVehicle``)."""
    steer = clamp(c.steer, -1, 1)
    throttle = clamp(c.throttle, 0, 1)
    brake = clamp(c.brake, 0, 1)

    if abs(s.v) < 0.05:
        if s.gear == 1 and brake > 0.5 and throttle == 0 and not s.brake_latch:
            s.gear = -1
        elif s.gear == -1 and throttle > 0.05:
            s.gear = 1
    elif brake > 0.5 and s.gear == 1:
        s.brake_latch = True
    if brake < 0.2:
        s.brake_latch = False
    drive = throttle if s.gear == 1 else brake
    stop = brake if s.gear == 1 else throttle

    speed = abs(s.v)
    # Floats throughout, so that zeros keep JavaScript's signs (-1 * 0.0 is -0.0; -1 * 0 is 0).
    sign = 1.0 if s.v > 0 else -1.0 if s.v < 0 else 0.0
    power_accel = p.power_per_mass_wpkg / speed if speed > 0.5 else math.inf
    drive_accel = drive * js_min(p.max_accel_mps2, power_accel) * s.gear
    resist = p.drag_per_mass_pm * s.v * speed + (p.rolling_resistance_mps2 if speed > 0.01 else 0.0) * sign
    brake_accel = stop * p.max_brake_mps2
    v = s.v + (drive_accel - resist) * dt
    if sign == 0:
        v = s.gear * js_max(0.0, abs(drive_accel) - brake_accel) * dt
    else:
        vb = v - brake_accel * sign * dt
        v = vb if js_sign(vb) == sign or vb == 0 else 0.0
        if drive == 0 and js_sign(v) != sign:
            v = 0.0
    v = clamp(v, 0.0, p.max_speed_mps) if s.gear == 1 else clamp(v, -p.max_reverse_speed_mps, 0.0)
    s.accel = (v - s.v) / dt

    target = -steer * steer_limit(p, v)
    max_delta = p.steer_rate_radps * dt
    s.steer_angle += clamp(target - s.steer_angle, -max_delta, max_delta)

    lr = p.wheelbase_m / 2
    beta = math.atan(0.5 * math.tan(s.steer_angle))
    vm = (s.v + v) / 2
    s.yaw = wrap_angle(s.yaw + (vm / lr) * math.sin(beta) * dt)
    s.x += vm * math.cos(s.yaw + beta) * dt
    s.y += vm * math.sin(s.yaw + beta) * dt
    s.v = v


# --- input.ts -----------------------------------------------------------------------------------------

STEER_AXIS = "axis0"
THROTTLE_BUTTON = "button7"
BRAKE_BUTTON = "button6"
GAMEPAD_DEAD_ZONE = 0.08
STEER_RAMP = 2.2
STEER_RETURN = 3.5
THROTTLE_RAMP = 1.8
BRAKE_RAMP = 3.0
PEDAL_RELEASE = 5.0


def event_value(v: float) -> float:
    """An event's value as events.jsonl states it (input.ts ``eventValue``): 4 decimals, in [-1, 1]."""
    if not math.isfinite(v):
        return 0.0
    f = 10.0 ** EVENT_VALUE_DIGITS
    r = js_round(v * f) / f
    return 0.0 if r == 0 else clamp(r, -1, 1)


def _approach(v: float, target: float, up: float, down: float) -> float:
    if target > v:
        return js_min(target, v + up)
    return js_max(target, v - down)


class ControlMapper:
    """input.ts ``ControlMapper``: raw events to per-step controls (keyboard ramps, gamepad dead zone)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.axes: dict[str, float] = {}
        self.buttons: dict[str, float] = {}
        self._kb_steer = 0.0
        self._kb_throttle = 0.0
        self._kb_brake = 0.0
        self.last = Controls()

    def apply(self, device: str, kind: str, code: str, value: float) -> None:
        """Applies one raw event to the held state."""
        if device == "keyboard":
            if kind == "keydown":
                self.keys.add(code)
            elif kind == "keyup":
                self.keys.discard(code)
        elif kind == "axis":
            self.axes[code] = event_value(value)
        elif kind == "button":
            self.buttons[code] = event_value(value)

    def step(self, dt: float) -> Controls:
        """Controls for the next step of dt seconds."""
        k = self.keys
        left = "KeyA" in k or "ArrowLeft" in k
        right = "KeyD" in k or "ArrowRight" in k
        up = "KeyW" in k or "ArrowUp" in k
        down = "KeyS" in k or "ArrowDown" in k or "Space" in k
        steer_target = (1 if right else 0) - (1 if left else 0)
        returning = steer_target == 0 or js_sign(steer_target) != js_sign(self._kb_steer)
        rate = (STEER_RETURN if returning else STEER_RAMP) * dt
        self._kb_steer = _approach(self._kb_steer, steer_target, rate, rate)
        self._kb_throttle = _approach(self._kb_throttle, 1 if up else 0, THROTTLE_RAMP * dt, PEDAL_RELEASE * dt)
        self._kb_brake = _approach(self._kb_brake, 1 if down else 0, BRAKE_RAMP * dt, PEDAL_RELEASE * dt)

        raw_axis = self.axes.get(STEER_AXIS, 0)
        pad_steer = 0 if abs(raw_axis) < GAMEPAD_DEAD_ZONE else \
            js_sign(raw_axis) * (abs(raw_axis) - GAMEPAD_DEAD_ZONE) / (1 - GAMEPAD_DEAD_ZONE)
        pad_throttle = self.buttons.get(THROTTLE_BUTTON, 0)
        pad_brake = self.buttons.get(BRAKE_BUTTON, 0)
        self.last = Controls(
            steer=float(clamp(pad_steer if pad_steer != 0 else self._kb_steer, -1, 1)),
            throttle=float(clamp(js_max(self._kb_throttle, pad_throttle), 0, 1)),
            brake=float(clamp(js_max(self._kb_brake, pad_brake), 0, 1)),
        )
        return self.last


# --- replaying a list of events ----------------------------------------------------------------------


def step_of_sim_ms(sim_t_ms: float) -> int:
    """The index of the step that starts at a logged simulation time (logged to 3 decimals)."""
    return int(round(sim_t_ms * SIM_HZ / 1000.0))


def replay(start: VehicleState, events: list[tuple[int, str, str, str, float]], steps: int,
           params: VehicleParams = SEDAN):
    """Yields (step index, state after it, controls it applied) for ``steps`` steps from ``start``.

    Each event is applied before the step of its index, in list order, as World.input before World.step.
    The state yielded is the same object each time: copy it to keep it.
    """
    mapper = ControlMapper()
    car = start.copy()
    k = 0
    for i in range(steps):
        while k < len(events) and events[k][0] <= i:
            _, device, kind, code, value = events[k]
            mapper.apply(device, kind, code, value)
            k += 1
        controls = mapper.step(SIM_DT_S)
        step_vehicle(car, controls, SIM_DT_S, params)
        yield i, car, controls
