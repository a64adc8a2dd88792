"""Pricing of accepted segments: rule ``segment-v1`` (pure; docs/rewards.md).

    millipoints = round(accepted seconds × quality × scarcity × millipoints_per_s)

* quality = diffusion × clean × progress
  - diffusion = 1 + diffusion_bonus × (diffusion frames / frames): driving through the diffusion view
  - clean = max(clean_floor, 1 − Σ penalty[kind] × count[kind]) over the segment's infractions
  - progress = 1 + progress_bonus × min(1, (route progress gained / s) / progress_rate_full_per_s)
* scarcity = Σ over command classes of (the segment's share of frames in the class) × class scarcity,
  where class scarcity = clamp(target share / the catalog's share of accepted seconds, 1, scarcity_max):
  a class the dataset lacks (turns at junctions, lane changes) is worth up to ``scarcity_max`` times
  plain lane-following, and a class it has enough of is worth 1.

Every factor is returned in ``Price.factors`` and recorded beside the credit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

RULE_ID = "segment-v1"

# RoadOption names (and CARLA's numeric values, which older sessions carry) → the class they price as.
COMMAND_CLASS: dict[str, str] = {
    "LANEFOLLOW": "follow", "VOID": "follow", "-1": "follow", "4": "follow",
    "STRAIGHT": "straight", "3": "straight",
    "LEFT": "turn", "RIGHT": "turn", "1": "turn", "2": "turn",
    "CHANGELANELEFT": "lane_change", "CHANGELANERIGHT": "lane_change", "5": "lane_change", "6": "lane_change",
}
CLASSES = ("follow", "straight", "turn", "lane_change")

INFRACTION_KINDS = ("collision_vehicle", "collision_pedestrian", "collision_static", "red_light", "stop_sign",
                    "off_road", "wrong_way")


def command_class(command: str) -> str:
    """The pricing class of a command name (unknown names price as lane-following)."""
    return COMMAND_CLASS.get(str(command).upper(), "follow")


def _default_targets() -> dict[str, float]:
    return {"follow": 0.55, "straight": 0.15, "turn": 0.20, "lane_change": 0.10}


def _default_penalties() -> dict[str, float]:
    return {"collision_vehicle": 0.5, "collision_pedestrian": 0.8, "collision_static": 0.3, "red_light": 0.25,
            "stop_sign": 0.15, "off_road": 0.2, "wrong_way": 0.2}


@dataclass(frozen=True)
class PricingRule:
    """The constants of ``segment-v1`` (settings SD_INGEST_REWARDS_*)."""

    millipoints_per_s: int = 1000  # one point per accepted second before quality and scarcity
    diffusion_bonus: float = 0.5
    clean_floor: float = 0.1
    penalties: Mapping[str, float] = field(default_factory=_default_penalties)
    progress_bonus: float = 0.25
    progress_rate_full_per_s: float = 0.005  # a route done in 200 s earns the whole bonus
    target_shares: Mapping[str, float] = field(default_factory=_default_targets)
    scarcity_max: float = 3.0
    # Seconds of the target mix assumed present before any data, so the first segments are not all 3x.
    scarcity_prior_s: float = 600.0


@dataclass(frozen=True)
class SegmentFacts:
    """What pricing reads of a segment."""

    duration_s: float
    frames: int
    command_counts: Mapping[str, int]
    infractions: Mapping[str, int]
    diffusion_frames: int
    route_progress_start: float
    route_progress_end: float


@dataclass(frozen=True)
class Price:
    """A segment's price and how it was reached."""

    millipoints: int
    rule: str
    factors: dict[str, float]


def class_seconds(facts: SegmentFacts) -> dict[str, float]:
    """The segment's seconds by command class (its duration split by its frames' commands)."""
    counts: dict[str, float] = {c: 0.0 for c in CLASSES}
    total = sum(max(0, int(n)) for n in facts.command_counts.values())
    if total <= 0:
        counts["follow"] = facts.duration_s
        return counts
    for command, n in facts.command_counts.items():
        counts[command_class(command)] += facts.duration_s * max(0, int(n)) / total
    return counts


def class_scarcity(rule: PricingRule, coverage_s: Mapping[str, float]) -> dict[str, float]:
    """Each class's scarcity from the accepted seconds per class so far (``coverage_s``)."""
    total = sum(max(0.0, coverage_s.get(c, 0.0)) for c in CLASSES) + rule.scarcity_prior_s
    out = {}
    for c in CLASSES:
        target = rule.target_shares.get(c, 0.0)
        have = (max(0.0, coverage_s.get(c, 0.0)) + rule.scarcity_prior_s * target) / total if total > 0 else 0.0
        ratio = target / have if have > 0 else rule.scarcity_max
        out[c] = min(rule.scarcity_max, max(1.0, ratio))
    return out


def price_segment(rule: PricingRule, facts: SegmentFacts, coverage_s: Mapping[str, float]) -> Price:
    """Prices one accepted segment with ``segment-v1`` against the catalog's coverage."""
    seconds = max(0.0, facts.duration_s)
    diffusion_share = min(1.0, max(0, facts.diffusion_frames) / facts.frames) if facts.frames > 0 else 0.0
    q_diffusion = 1.0 + rule.diffusion_bonus * diffusion_share
    penalty = sum(rule.penalties.get(kind, 0.0) * max(0, int(n)) for kind, n in facts.infractions.items())
    q_clean = max(rule.clean_floor, 1.0 - penalty)
    gained = max(0.0, min(1.0, facts.route_progress_end) - max(0.0, facts.route_progress_start))
    rate = gained / seconds if seconds > 0 else 0.0
    q_progress = 1.0 + rule.progress_bonus * min(1.0, rate / rule.progress_rate_full_per_s)
    quality = q_diffusion * q_clean * q_progress
    per_class = class_seconds(facts)
    scarce = class_scarcity(rule, coverage_s)
    scarcity = (sum(per_class[c] * scarce[c] for c in CLASSES) / seconds) if seconds > 0 else 1.0
    scarcity = min(rule.scarcity_max, max(1.0, scarcity))
    millipoints = int(round(seconds * quality * scarcity * rule.millipoints_per_s))
    factors = {"seconds": seconds, "quality": quality, "scarcity": scarcity, "diffusion": q_diffusion,
               "diffusion_share": diffusion_share, "clean": q_clean, "infraction_penalty": penalty,
               "progress": q_progress, "progress_gained": gained, "millipoints_per_s": float(rule.millipoints_per_s)}
    for c in CLASSES:
        factors[f"{c}_s"] = per_class[c]
        factors[f"scarcity_{c}"] = scarce[c]
    return Price(millipoints, RULE_ID, factors)
