"""Rule segment-v1: seconds × quality × scarcity, each factor bounded and recorded."""

from __future__ import annotations

import pytest
from sd_ingest.pricing import CLASSES, PricingRule, SegmentFacts, class_scarcity, price_segment
from sd_ingest.settings import RewardsSettings

RULE = PricingRule()
# Coverage already in the target mix: every class's scarcity is 1.
BALANCED = {c: 10_000.0 * RULE.target_shares[c] for c in CLASSES}


def facts(commands=None, *, frames=150, duration_s=5.0, infractions=None, diffusion_frames=0, progress=(0.0, 0.0)):
    return SegmentFacts(duration_s=duration_s, frames=frames, command_counts=commands or {"LANEFOLLOW": frames},
                        infractions=infractions or {}, diffusion_frames=diffusion_frames,
                        route_progress_start=progress[0], route_progress_end=progress[1])


def test_a_plain_segment_is_worth_its_seconds():
    p = price_segment(RULE, facts(), BALANCED)
    assert p.rule == "segment-v1"
    assert p.millipoints == 5000
    assert (p.factors["seconds"], p.factors["quality"], p.factors["scarcity"]) == (5.0, 1.0, 1.0)


def test_quality_rewards_diffusion_and_progress_and_punishes_infractions():
    full = price_segment(RULE, facts(diffusion_frames=150), BALANCED)
    assert full.factors["diffusion"] == pytest.approx(1.5) and full.millipoints == 7500
    half = price_segment(RULE, facts(diffusion_frames=75), BALANCED)
    assert half.millipoints == 6250
    crash = price_segment(RULE, facts(infractions={"collision_vehicle": 1, "red_light": 1}), BALANCED)
    assert crash.factors["clean"] == pytest.approx(0.25) and crash.millipoints == 1250
    wreck = price_segment(RULE, facts(infractions={"collision_pedestrian": 5}), BALANCED)
    assert wreck.factors["clean"] == RULE.clean_floor and wreck.millipoints == 500
    onward = price_segment(RULE, facts(progress=(0.10, 0.125)), BALANCED)  # 0.005 of the route per second
    assert onward.factors["progress"] == pytest.approx(1.25) and onward.millipoints == 6250
    backward = price_segment(RULE, facts(progress=(0.5, 0.4)), BALANCED)
    assert backward.factors["progress"] == 1.0


def test_scarcity_pays_for_what_the_dataset_lacks_and_is_bounded():
    lane_following_only = {"follow": 50_000.0}
    turn = price_segment(RULE, facts({"LEFT": 100, "LANEFOLLOW": 50}), lane_following_only)
    follow = price_segment(RULE, facts(), lane_following_only)
    assert follow.factors["scarcity"] == 1.0
    assert 1.0 < turn.factors["scarcity"] <= RULE.scarcity_max
    assert turn.millipoints > follow.millipoints
    only_turns = price_segment(RULE, facts({"RIGHT": 150}), {"follow": 10**9})
    assert only_turns.factors["scarcity"] == RULE.scarcity_max
    # The more turns the catalog has, the less the next one is worth.
    more_turns = dict(lane_following_only, turn=20_000.0)
    assert price_segment(RULE, facts({"LEFT": 150}), more_turns).millipoints < \
        price_segment(RULE, facts({"LEFT": 150}), lane_following_only).millipoints
    # CARLA's numeric RoadOption values price as their names.
    assert price_segment(RULE, facts({"1": 150}), lane_following_only) == \
        price_segment(RULE, facts({"LEFT": 150}), lane_following_only)


def test_an_empty_catalog_starts_every_class_at_one():
    assert class_scarcity(RULE, {}) == {c: 1.0 for c in CLASSES}


def test_every_factor_is_recorded():
    p = price_segment(RULE, facts({"CHANGELANELEFT": 30, "LANEFOLLOW": 120}, diffusion_frames=10,
                                  infractions={"off_road": 1}, progress=(0.0, 0.01)), {"follow": 5000.0})
    for name in ("seconds", "quality", "scarcity", "diffusion", "diffusion_share", "clean", "progress",
                 "progress_gained", *(f"{c}_s" for c in CLASSES), *(f"scarcity_{c}" for c in CLASSES)):
        assert name in p.factors
    q = p.factors["diffusion"] * p.factors["clean"] * p.factors["progress"]
    assert p.factors["quality"] == pytest.approx(q)
    assert p.millipoints == round(5.0 * q * p.factors["scarcity"] * 1000)
    assert p.factors["lane_change_s"] == pytest.approx(1.0)


def test_settings_set_the_constants(monkeypatch):
    monkeypatch.setenv("SD_INGEST_REWARDS_INFRACTION_PENALTIES", '{"red_light": 0.5}')
    monkeypatch.setenv("SD_INGEST_REWARDS_DAILY_CAP_MILLIPOINTS", "1234")
    s = RewardsSettings()
    rule = s.pricing_rule()
    assert rule.penalties["red_light"] == 0.5 and rule.penalties["collision_vehicle"] == 0.5
    assert s.ledger_config().daily_cap_millipoints == 1234
    monkeypatch.setenv("SD_INGEST_REWARDS_BASE_UNITS_PER_POINT", "1500")
    with pytest.raises(ValueError, match="multiple of 1000"):
        RewardsSettings()
