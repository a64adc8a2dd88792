"""The CARLA Leaderboard 2.0 result file: its schema as dataclasses, read and written as the leaderboard does.

The file is the one `leaderboard_evaluator.py --checkpoint` writes: `_checkpoint` (`global_record`,
`progress`, `records`), `entry_status`, `eligible`, `sensors`, `values`, `labels`. Keys this module does
not know (Bench2Drive's `town_name`, `scenario_name`, `weather_id`, `save_name` on a record, anything
newer) are kept and written back, so a file read and written again is the same file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The infraction lists of a route record, in the leaderboard's order (its PENALTY_NAME_DICT, then
# the route timeout). The same keys, as counts per km, make the global record's infractions.
INFRACTION_KEYS: tuple[str, ...] = (
    "collisions_layout",
    "collisions_pedestrian",
    "collisions_vehicle",
    "red_light",
    "stop_infraction",
    "outside_route_lanes",
    "min_speed_infractions",
    "yield_emergency_vehicle_infractions",
    "scenario_timeouts",
    "route_dev",
    "vehicle_blocked",
    "route_timeout",
)
SCORE_KEYS: tuple[str, ...] = ("score_route", "score_penalty", "score_composed")
GLOBAL_SCORE_KEYS: tuple[str, ...] = ("score_composed", "score_route", "score_penalty")
ROUTE_META_KEYS: tuple[str, ...] = ("route_length", "duration_game", "duration_system")

ENTRY_STATUS_VALUES: tuple[str, ...] = ("Started", "Finished", "Rejected", "Crashed", "Invalid")
ELIGIBLE_BY_ENTRY_STATUS: dict[str, bool] = {
    "Started": False,
    "Finished": True,
    "Rejected": False,
    "Crashed": False,
    "Invalid": False,
}

# The (entry status, route failure message) the leaderboard records when something outside the
# route's criteria stops it.
FAILURE_MESSAGES: dict[str, tuple[str, str]] = {
    "Simulation": ("Crashed", "Simulation crashed"),
    "Sensors": ("Rejected", "Agent's sensors were invalid"),
    "Agent_init": ("Started", "Agent couldn't be set up"),
    "Agent_runtime": ("Started", "Agent crashed"),
}


class ResultsFormatError(ValueError):
    """A result file that is not in the leaderboard's schema; the message names the file and the key."""


@dataclass
class RouteRecord:
    """One entry of `_checkpoint.records`: a route's status, infraction messages, scores and meta."""

    route_id: str
    index: int = -1
    status: str = "Started"
    num_infractions: int = 0
    infractions: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in INFRACTION_KEYS})
    scores: dict[str, float] = field(default_factory=lambda: {k: 0 for k in SCORE_KEYS})
    meta: dict[str, float] = field(default_factory=lambda: {k: 0 for k in ROUTE_META_KEYS})
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def route_length_m(self) -> float:
        """The route's length in meters, as the leaderboard measured it along the planned route."""
        return float(self.meta["route_length"])

    def to_json(self) -> dict[str, Any]:
        """The record as the leaderboard writes it."""
        out = {
            "index": self.index,
            "route_id": self.route_id,
            "status": self.status,
            "num_infractions": self.num_infractions,
            "infractions": {k: list(v) for k, v in self.infractions.items()},
            "scores": dict(self.scores),
            "meta": dict(self.meta),
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> RouteRecord:
        """A record from its JSON object; `where` names it in errors."""
        obj = _object(data, where)
        for key in ("route_id", "status", "infractions", "scores", "meta"):
            if key not in obj:
                raise ResultsFormatError(f"{where}: missing key {key!r}")
        infractions = _object(obj["infractions"], f"{where}.infractions")
        for key, messages in infractions.items():
            if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
                raise ResultsFormatError(f"{where}.infractions.{key}: expected a list of messages")
        scores = _numbers(obj["scores"], SCORE_KEYS, f"{where}.scores")
        meta = _object(obj["meta"], f"{where}.meta")
        _numbers(meta, ROUTE_META_KEYS, f"{where}.meta")
        known = {"index", "route_id", "status", "num_infractions", "infractions", "scores", "meta"}
        return cls(
            route_id=str(obj["route_id"]),
            index=int(obj.get("index", -1)),
            status=str(obj["status"]),
            num_infractions=int(obj.get("num_infractions", sum(len(v) for v in infractions.values()))),
            infractions={k: list(v) for k, v in infractions.items()},
            scores=dict(scores),
            meta=dict(meta),
            extra={k: v for k, v in obj.items() if k not in known},
        )


@dataclass
class GlobalRecord:
    """`_checkpoint.global_record`: mean scores, their spread, infractions per km and totals."""

    status: str = "Perfect"
    infractions: dict[str, float] = field(default_factory=lambda: {k: 0 for k in INFRACTION_KEYS})
    # The leaderboard orders the global means composed, route, penalty (a record's: route, penalty, composed).
    scores_mean: dict[str, float] = field(default_factory=lambda: {k: 0 for k in GLOBAL_SCORE_KEYS})
    scores_std_dev: dict[str, float] = field(default_factory=lambda: {k: 0 for k in GLOBAL_SCORE_KEYS})
    meta: dict[str, Any] = field(
        default_factory=lambda: {
            "total_length": 0,
            "duration_game": 0,
            "duration_system": 0,
            "exceptions": [],
        }
    )
    index: int = -1
    route_id: Any = -1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The global record as the leaderboard writes it."""
        out = {
            "index": self.index,
            "route_id": self.route_id,
            "status": self.status,
            "infractions": dict(self.infractions),
            "scores_mean": dict(self.scores_mean),
            "scores_std_dev": dict(self.scores_std_dev),
            "meta": {k: (list(map(list, v)) if k == "exceptions" else v) for k, v in self.meta.items()},
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> GlobalRecord:
        """A global record from its JSON object; `where` names it in errors."""
        obj = _object(data, where)
        for key in ("status", "infractions", "scores_mean", "scores_std_dev", "meta"):
            if key not in obj:
                raise ResultsFormatError(f"{where}: missing key {key!r}")
        _numbers(obj["scores_mean"], SCORE_KEYS, f"{where}.scores_mean")
        known = {"index", "route_id", "status", "infractions", "scores_mean", "scores_std_dev", "meta"}
        meta = dict(_object(obj["meta"], f"{where}.meta"))
        meta["exceptions"] = [list(e) for e in meta.get("exceptions", [])]
        return cls(
            status=str(obj["status"]),
            infractions=dict(_object(obj["infractions"], f"{where}.infractions")),
            scores_mean=dict(obj["scores_mean"]),
            scores_std_dev=dict(_object(obj["scores_std_dev"], f"{where}.scores_std_dev")),
            meta=meta,
            index=obj.get("index", -1),
            route_id=obj.get("route_id", -1),
            extra={k: v for k, v in obj.items() if k not in known},
        )


@dataclass
class Results:
    """A whole result file: the checkpoint (records, global record, progress) and the entry's status."""

    records: list[RouteRecord] = field(default_factory=list)
    global_record: GlobalRecord | None = None
    progress: list[int] = field(default_factory=list)
    entry_status: str = "Started"
    eligible: bool = False
    sensors: list[Any] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_routes(self) -> int | None:
        """The number of routes the run was asked to drive (`progress[1]`), or None before it started."""
        return int(self.progress[1]) if len(self.progress) == 2 else None

    def set_entry_status(self, entry_status: str) -> None:
        """Sets the entry status and, from it, `eligible`, as the leaderboard allows."""
        if entry_status not in ENTRY_STATUS_VALUES:
            raise ValueError(f"entry_status {entry_status!r} is not one of {', '.join(ENTRY_STATUS_VALUES)}")
        self.entry_status = entry_status
        self.eligible = ELIGIBLE_BY_ENTRY_STATUS[entry_status]

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object; records in progress (index -1) left out, as the leaderboard does."""
        out = {
            "_checkpoint": {
                "global_record": self.global_record.to_json() if self.global_record else {},
                "progress": list(self.progress),
                "records": [r.to_json() for r in self.records if r.index != -1],
            },
            "entry_status": self.entry_status,
            "eligible": self.eligible,
            "sensors": list(self.sensors),
            "values": list(self.values),
            "labels": list(self.labels),
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "results") -> Results:
        """Results from the file's JSON object; `where` names the file in errors."""
        obj = _object(data, where)
        if "_checkpoint" not in obj:
            raise ResultsFormatError(f"{where}: missing key '_checkpoint'")
        checkpoint = _object(obj["_checkpoint"], f"{where}._checkpoint")
        raw_records = checkpoint.get("records", [])
        if not isinstance(raw_records, list):
            raise ResultsFormatError(f"{where}._checkpoint.records: expected a list")
        records = [
            RouteRecord.from_json(r, f"{where}._checkpoint.records[{i}]") for i, r in enumerate(raw_records)
        ]
        raw_global = checkpoint.get("global_record") or None
        progress = checkpoint.get("progress", [])
        if (
            not isinstance(progress, list)
            or len(progress) not in (0, 2)
            or not all(isinstance(p, int) for p in progress)
        ):
            raise ResultsFormatError(f"{where}._checkpoint.progress: expected [route index, total routes]")
        entry_status = obj.get("entry_status", "Started")
        if entry_status not in ENTRY_STATUS_VALUES:
            raise ResultsFormatError(
                f"{where}.entry_status: {entry_status!r} is not a leaderboard entry status"
            )
        known = {"_checkpoint", "entry_status", "eligible", "sensors", "values", "labels"}
        return cls(
            records=records,
            global_record=GlobalRecord.from_json(raw_global, f"{where}._checkpoint.global_record")
            if raw_global
            else None,
            progress=list(progress),
            entry_status=entry_status,
            eligible=bool(obj.get("eligible", ELIGIBLE_BY_ENTRY_STATUS[entry_status])),
            sensors=list(obj.get("sensors", [])),
            values=[str(v) for v in obj.get("values", [])],
            labels=[str(v) for v in obj.get("labels", [])],
            extra={k: v for k, v in obj.items() if k not in known},
        )


class ResumeMismatch(ValueError):
    """A folder to resume holds another run's results (other routes, another agent's sensors)."""


def read_results(path: str | Path) -> Results:
    """Reads a leaderboard result file; not JSON or not in the schema: ResultsFormatError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsFormatError(f"{path}: not JSON ({exc})") from exc
    return Results.from_json(data, where=str(path))


def write_results(results: Results, path: str | Path) -> None:
    """Writes the file as the leaderboard's checkpoint writer does (JSON, 4-space indent), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results.to_json(), indent=4))
    tmp.replace(path)


def route_number(route_id: str) -> tuple[int, int]:
    """(route, repetition) of a leaderboard route id `RouteScenario_<route>_rep<repetition>`."""
    try:
        return int(route_id.split("_")[1]), int(route_id.split("_rep")[-1])
    except (IndexError, ValueError) as exc:
        raise ResultsFormatError(
            f"route id {route_id!r} is not of the leaderboard's form RouteScenario_<route>_rep<repetition>"
        ) from exc


def sort_records(records: list[RouteRecord]) -> None:
    """Orders records by route and repetition and renumbers their indices, as the leaderboard's sort does."""
    records.sort(key=lambda r: route_number(r.route_id))
    for i, record in enumerate(records):
        record.index = i


def _object(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ResultsFormatError(f"{where}: expected a JSON object, found {type(data).__name__}")
    return data


def _numbers(data: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    obj = _object(data, where)
    for key in keys:
        if key not in obj:
            raise ResultsFormatError(f"{where}: missing key {key!r}")
        if isinstance(obj[key], bool) or not isinstance(obj[key], (int, float)):
            raise ResultsFormatError(f"{where}.{key}: expected a number, found {obj[key]!r}")
    return obj
