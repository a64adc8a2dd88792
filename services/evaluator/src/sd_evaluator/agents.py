"""What drives in an evaluation: the agent interface, and the two agents that need no model.

An agent sees what a SENSORS-track agent sees — the front camera's picture, the speedometer and the
route's navigation command — and answers with a control. Every evaluation runs three agents side by
side (docs/evaluation.md, "Agents"): the trained model, the game's own autopilot (privileged: it reads
the simulation, so it is an upper bound, and it only exists in the city) and a constant-throttle agent
that drives straight ahead (a lower bound). The model agent is `sd_evaluator.policy.CheckpointAgent`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

# Names of the agents in reports, result folders and the API, in the order reports list them.
MODEL = "model"
AUTOPILOT = "autopilot"
CONSTANT = "constant-throttle"
AGENT_NAMES: tuple[str, ...] = (MODEL, AUTOPILOT, CONSTANT)


class AgentError(ValueError):
    """An agent that cannot run: a missing checkpoint, a bad control, an unknown agent name."""


@dataclass(frozen=True)
class Control:
    """One control, in CARLA's `VehicleControl` terms: steer in [-1, 1] (negative is left), throttle and
    brake in [0, 1]."""

    steer: float
    throttle: float
    brake: float

    def __post_init__(self) -> None:
        for name, lo in (("steer", -1.0), ("throttle", 0.0), ("brake", 0.0)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= 1.0):
                raise AgentError(f"control {name}={value!r} is outside [{lo:g}, 1]")

    @classmethod
    def clipped(cls, steer: float, throttle: float, brake: float) -> Control:
        """A control from a model's raw outputs, clipped to the valid ranges (a NaN is an error)."""
        values = (float(steer), float(throttle), float(brake))
        if not all(math.isfinite(v) for v in values):
            raise AgentError(f"the model answered a non-finite control {values}")
        return cls(min(1.0, max(-1.0, values[0])), min(1.0, max(0.0, values[1])), min(1.0, max(0.0, values[2])))

    def to_dict(self) -> dict[str, float]:
        return {"steer": self.steer, "throttle": self.throttle, "brake": self.brake}


@dataclass(frozen=True)
class Observation:
    """What an agent sees at one step.

    `image` is the front camera's whole rendered frame (H x W x 3 uint8 RGB, the recording's size and
    field of view), or None when the agent said it needs none. `command` is the navigation command
    (CARLA RoadOption number) for where the car is on its route; `t_s` is simulation time.
    """

    image: np.ndarray | None
    speed_mps: float
    command: int
    t_s: float


@runtime_checkable
class Agent(Protocol):
    """An agent: `reset` before each route, then `act` once per step."""

    name: str
    # True only for the game's autopilot: the runner lets the simulation's own driver act.
    privileged: bool
    # False when `act` never looks at the picture: the runner may then skip rendering it.
    needs_image: bool

    def reset(self, route_id: str) -> None: ...

    def act(self, obs: Observation) -> Control: ...


@dataclass(frozen=True)
class RouteProgress:
    """What a runner reports after each route: which of how many, and its record (None if it crashed)."""

    route_index: int
    routes_total: int
    route_id: str
    agent: str
    record: object | None = None


class ConstantThrottleAgent:
    """The lower bound: wheel straight, a fixed throttle, never brakes, whatever it sees."""

    privileged = False
    needs_image = False

    def __init__(self, throttle: float = 0.5, name: str = CONSTANT):
        self.name = name
        self._control = Control(0.0, throttle, 0.0)

    def reset(self, route_id: str) -> None:
        pass

    def act(self, obs: Observation) -> Control:
        return self._control


class GameAutopilot:
    """The upper bound in the city: the game's own scripted driver, which reads the simulation.

    It has no `act` of its own worth calling — the city runner asks the game to step with its autopilot
    driving — so calling it is an error rather than a silent substitute.
    """

    privileged = True
    needs_image = False

    def __init__(self, name: str = AUTOPILOT):
        self.name = name

    def reset(self, route_id: str) -> None:
        pass

    def act(self, obs: Observation) -> Control:
        raise AgentError("the game's autopilot drives inside the simulation; only the city runner can run it")
