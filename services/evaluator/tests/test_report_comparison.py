"""The side-by-side report of several agents on one route file: each agent's numbers worked out by hand,
what was driven named first, and the model never without its baselines."""

from __future__ import annotations

import json

import pytest
from leaderboard_files import ROUTES_XML, leaderboard_file

from sd_evaluator.report import (
    ComparisonError,
    build_comparison,
    render_comparison_markdown,
    write_comparison,
)
from sd_evaluator.results import Results
from sd_evaluator.route_file import read_route_file
from sd_evaluator.scoring import RouteEvent, RouteOutcome, finalize_results, score_route


@pytest.fixture
def route_file(tmp_path):
    path = tmp_path / "bench2drive_sample.xml"
    path.write_text(ROUTES_XML)
    return read_route_file(path)


def run_of(outcomes: list[RouteOutcome], total: int) -> Results:
    results = Results(progress=[len(outcomes), total], sensors=["carla_camera"])
    results.records = [score_route(o, i) for i, o in enumerate(outcomes)]
    finalize_results(results)
    return results


def three_agents() -> dict[str, Results]:
    # constant throttle: 10% of route 1711 with a layout collision (IP 0.65, DS 6.5); route 2084 not driven.
    constant = run_of([RouteOutcome("RouteScenario_1711_rep0", 10.0, 1520.5, [RouteEvent(
        "collisions_layout", "Agent collided against object with type=static.prop and id=9 at (x=0, y=0, z=0)")])], 2)
    # autopilot: both routes perfect.
    autopilot = run_of([RouteOutcome("RouteScenario_1711_rep0", 100.0, 1520.5),
                        RouteOutcome("RouteScenario_2084_rep0", 100.0, 800.0)], 2)
    return {"constant-throttle": constant, "model": Results.from_json(leaderboard_file()), "autopilot": autopilot}


def test_each_agents_scores_side_by_side_worked_out_by_hand(route_file):
    c = build_comparison(three_agents(), route_file, expected_routes=220,
                         baselines_required=("autopilot", "constant-throttle"))
    assert c["agents"] == ["model", "autopilot", "constant-throttle"]  # report order, whatever the input's
    assert c["route_file"] == route_file.path and c["route_file_sha256"] == route_file.sha256
    assert c["towns"] == ["Town12", "Town13"] and c["route_count"] == 3 and c["routes_in_run"] == 2
    m, a, k = (c["scores"][n] for n in c["agents"])
    assert (m["driving_score"], m["route_completion"], m["infraction_penalty"]) == (49.9, 71.25, 0.7865)
    assert m["km_driven"] == pytest.approx(1.8605, abs=1e-3)
    assert m["infractions_per_km_total"] == pytest.approx(3 * 0.537)  # vehicle, min speed, blocked
    assert m["bench2drive_driving_score"] == pytest.approx((57.3 + 42.5) / 220)
    assert m["bench2drive_efficiency_pct"] == 85.0 and m["bench2drive_success_rate"] == 0.0
    assert (a["driving_score"], a["route_completion"], a["infraction_penalty"]) == (100.0, 100.0, 1.0)
    assert a["km_driven"] == pytest.approx(2.3205, abs=1e-3) and a["bench2drive_success_rate"] == pytest.approx(2 / 220)
    # a route with no record counts 0 in the means over the run's 2 routes
    assert (k["driving_score"], k["route_completion"], k["infraction_penalty"]) == (3.25, 5.0, 0.325)
    assert k["km_driven"] == pytest.approx(0.152, abs=1e-3)
    assert k["infractions_per_km"]["collisions_layout"] == pytest.approx(round(1 / 0.15205, 3))
    assert k["routes_evaluated"] == 1
    assert c["km_driven"] == {n: c["scores"][n]["km_driven"] for n in c["agents"]}
    rows = {r["route_id"]: r for r in c["routes"]}
    assert rows["RouteScenario_1711_rep0"]["driving_score"] == {"model": 57.3, "autopilot": 100.0,
                                                                "constant-throttle": 6.5}
    assert rows["RouteScenario_2084_rep0"]["driving_score"]["constant-throttle"] is None


def test_markdown_names_what_was_driven_first_and_has_one_row_per_agent(route_file):
    md = render_comparison_markdown(build_comparison(three_agents(), route_file, expected_routes=220))
    head = "\n".join(md.splitlines()[:8])
    assert f"Route file: `{route_file.path}`" in head and "3 routes" in head
    assert "Towns: Town12, Town13" in head and "Routes in the run: 2" in head
    assert "Km driven: model 1.860, autopilot 2.321, constant-throttle 0.152" in head
    assert "| model | 49.900 | 71.250 | 0.7865 | 1.611 | 1.860 | 2 | 0.454 | 0.00% | 85.00% |" in md
    assert "| constant-throttle | 3.250 | 5.000 | 0.3250 |" in md
    assert "| RouteScenario_2084_rep0 | Town13 | 800.0 | 42.50 | 100.00 | — |" in md


def test_the_model_never_appears_without_its_baselines(route_file):
    agents = three_agents()
    with pytest.raises(ComparisonError, match="missing: constant-throttle"):
        build_comparison({"model": agents["model"], "autopilot": agents["autopilot"]}, route_file)
    with pytest.raises(ComparisonError, match="missing: autopilot"):
        build_comparison({"model": agents["model"], "constant-throttle": agents["constant-throttle"]}, route_file,
                         baselines_required=("autopilot", "constant-throttle"))
    with pytest.raises(ComparisonError, match="no agent results"):
        build_comparison({}, route_file)
    # baselines alone are fine
    assert build_comparison({"autopilot": agents["autopilot"]}, route_file)["agents"] == ["autopilot"]


def test_runs_of_different_lengths_are_not_compared(route_file):
    agents = three_agents()
    agents["autopilot"].progress = [2, 3]
    with pytest.raises(ComparisonError, match="different route counts"):
        build_comparison(agents, route_file)


def test_written_report_and_plot(route_file, tmp_path):
    c = build_comparison(three_agents(), route_file, expected_routes=220)
    written = write_comparison(c, tmp_path / "out")
    assert [p.name for p in written] == ["report.json", "report.md", "ds_per_route_per_agent.png"]
    assert json.loads(written[0].read_text()) == json.loads(json.dumps(c))
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
