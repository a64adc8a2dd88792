"""The report of a result file names route file, towns, route count and km driven."""

from __future__ import annotations

import json

import pytest
from leaderboard_files import ROUTES_XML, leaderboard_file

from sd_evaluator.report import build_report, main, render_markdown, write_report
from sd_evaluator.results import Results
from sd_evaluator.route_file import RouteFileError, read_route_file
from sd_evaluator.scoring import Protocol, ScoringError


@pytest.fixture
def route_path(tmp_path):
    path = tmp_path / "bench2drive_sample.xml"
    path.write_text(ROUTES_XML)
    return path


def test_report_names_what_was_driven_and_the_scores(route_path):
    report = build_report(
        Results.from_json(leaderboard_file()),
        read_route_file(route_path),
        expected_routes=220,
        results_name="run/results.json",
    )
    assert report["route_file"] == str(route_path)
    assert len(report["route_file_sha256"]) == 64
    assert report["towns"] == ["Town12", "Town13"]
    assert report["route_count"] == 3 and report["routes_in_run"] == 2 and report["routes_evaluated"] == 2
    assert report["km_driven"] == pytest.approx(1.8605, abs=1e-3)  # 1.5205 + 0.8 * 0.425
    lb = report["leaderboard"]
    assert (lb["driving_score"], lb["route_completion"], lb["infraction_penalty"]) == (49.9, 71.25, 0.7865)
    assert lb["infractions_per_km"]["collisions_vehicle"] == 0.537
    assert lb["values_match_file"] is True
    b2d = report["bench2drive"]
    assert b2d["driving_score"] == pytest.approx((57.3 + 42.5) / 220)
    assert b2d["success_rate"] == 0.0  # 1711 completed with a collision, 2084 blocked
    assert b2d["efficiency_pct"] == 85.0
    assert b2d["comfort"] is None and "metric_info.json" in report["not_computed"]["bench2drive_comfort"]
    assert [r["town"] for r in report["routes"]] == ["Town12", "Town13"]
    assert all(r["scores_match_messages"] for r in report["routes"])


def test_markdown_leads_with_route_file_towns_count_and_km(route_path):
    report = build_report(
        Results.from_json(leaderboard_file()), read_route_file(route_path), expected_routes=220
    )
    head = "\n".join(render_markdown(report).splitlines()[:8])
    assert f"Route file: `{route_path}`" in head and "3 routes" in head
    assert "Towns: Town12, Town13" in head
    assert "Routes: 2 evaluated of 2 in the run" in head
    assert "Km driven: 1.86" in head
    md = render_markdown(report)
    assert "| 49.900 | 71.250 | 0.7865 | Failed |" in md
    assert (
        "| RouteScenario_2084_rep0 | Town13 | Failed - Agent got blocked | 800.0 | 42.50 | 1.000 | 42.50 |"
        in md
    )
    assert "over 220 routes" in md


def test_a_record_on_a_route_outside_the_route_file_is_refused(route_path):
    data = leaderboard_file()
    data["_checkpoint"]["records"][1]["route_id"] = "RouteScenario_9999_rep0"
    with pytest.raises(
        RouteFileError, match="RouteScenario_9999_rep0 is not a route of .*no route with id '9999'"
    ):
        build_report(Results.from_json(data), read_route_file(route_path))


def test_written_report_has_json_markdown_and_plots(route_path, tmp_path):
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(leaderboard_file()))
    out = tmp_path / "report"
    main([str(results_path), "--routes", str(route_path), "--out", str(out), "--expected-routes", "220"])
    assert json.loads((out / "report.json").read_text())["towns"] == ["Town12", "Town13"]
    assert (out / "report.md").read_text().startswith("# Evaluation report")
    for name in ("ds_per_route.png", "infractions_per_km.png"):
        body = (out / name).read_bytes()
        assert body[:8] == b"\x89PNG\r\n\x1a\n" and len(body) > 5000


def test_write_report_returns_every_file(route_path, tmp_path):
    report = build_report(Results.from_json(leaderboard_file()), read_route_file(route_path))
    written = write_report(report, tmp_path / "r")
    assert sorted(p.name for p in written) == [
        "ds_per_route.png",
        "infractions_per_km.png",
        "report.json",
        "report.md",
    ]
    assert all(p.stat().st_size > 0 for p in written)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("<routes><route id='1'>", "not XML"),
        ("<route id='1' town='Town12'/>", "expected <routes>"),
        ("<routes><route id='1'/></routes>", "route #0 needs both an id and a town"),
        ("<routes></routes>", "no <route> elements"),
        ("<routes><route id='1' town='A'/><route id='1' town='B'/></routes>", "route ids repeat"),
    ],
)
def test_bad_route_files_are_named(tmp_path, body, match):
    path = tmp_path / "routes.xml"
    path.write_text(body)
    with pytest.raises(RouteFileError, match=match):
        read_route_file(path)


def test_route_file_scenario_types(route_path):
    routes = read_route_file(route_path).routes
    assert [r.scenario_types for r in routes] == [("ParkedObstacle",), ("HardBreakRoute",), ()]


def test_a_bench2drive_run_is_scored_with_its_protocol(route_path):
    data = leaderboard_file()
    record = data["_checkpoint"]["records"][1]
    record["infractions"]["min_speed_infractions"] = [
        "Average speed is 120.0% of the surrounding traffic's one"
    ]
    record["num_infractions"] = 2
    with pytest.raises(ScoringError, match="score its runs with protocol 'bench2drive'"):
        build_report(Results.from_json(data), read_route_file(route_path))
    report = build_report(Results.from_json(data), read_route_file(route_path), Protocol.BENCH2DRIVE)
    assert report["protocol"] == "bench2drive"
    assert report["bench2drive"]["efficiency_pct"] == (85.0 + 120.0) / 2
    # route 1711's file scores include the leaderboard's minimum-speed penalty; Bench2Drive has none
    assert [r["scores_match_messages"] for r in report["routes"]] == [False, True]
