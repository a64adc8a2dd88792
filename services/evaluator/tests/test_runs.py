"""Evaluation records, ids, paging and how progress.json / result.json fill a record (no processes here;
test_evaluator_server.py runs real evaluation processes under the launcher)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sd_evaluator.runs import (
    AgentScores,
    Evaluation,
    EvaluationRequestInvalid,
    EvaluationState,
    apply_progress,
    check_evaluation_id,
    evaluate_command,
    evaluation_of,
    new_evaluation_id,
    page,
)

AGENTS = ["model", "autopilot", "constant-throttle"]


def test_evaluation_ids_are_kubernetes_names_the_operator_accepts():
    assert check_evaluation_id(new_evaluation_id()).startswith("ev-")
    assert check_evaluation_id("r1-eval") == "r1-eval" and check_evaluation_id("a" * 52)
    for bad in ("", "../x", "Ev-1", "a" * 53, "-a", "a-", "a/b", "a_b"):
        with pytest.raises(EvaluationRequestInvalid, match="evaluation_id"):
            check_evaluation_id(bad)


def test_pages_go_newest_first_and_a_token_survives_new_evaluations():
    evs = [Evaluation(f"ev-{i}", "", "city-20", AGENTS, created_at=f"2026-01-0{i}T00:00:00Z") for i in range(1, 6)]
    first, token = page(evs, 2, "")
    assert [e.evaluation_id for e in first] == ["ev-5", "ev-4"] and token
    newer = Evaluation("ev-9", "", "city-20", AGENTS, created_at="2026-02-01T00:00:00Z")
    second, token2 = page([*evs, newer], 2, token)
    assert [e.evaluation_id for e in second] == ["ev-3", "ev-2"]
    last, end = page(evs, 2, token2)
    assert [e.evaluation_id for e in last] == ["ev-1"] and end == ""
    with pytest.raises(EvaluationRequestInvalid, match="page_size"):
        page(evs, -1, "")
    with pytest.raises(EvaluationRequestInvalid, match="page_token"):
        page(evs, 2, "not-a-token")


def test_progress_then_result_fill_every_agents_scores():
    e = Evaluation("ev-1", "ck.pt", "city-20", AGENTS)
    apply_progress(e, {"agents": AGENTS, "agent": "autopilot", "fraction_done": 0.5, "per_agent": {
        "model": {"state": "done", "routes_done": 2, "routes_total": 2, "driving_score": 40.0, "km_driven": 0.1},
        "autopilot": {"state": "running", "routes_done": 1, "routes_total": 2, "driving_score": 50.0},
        "constant-throttle": {"state": "pending", "routes_done": 0, "routes_total": None}}}, None)
    assert (e.current_agent, e.fraction_done) == ("autopilot", 0.5)
    assert [(s.agent, s.state, s.routes_done, s.driving_score) for s in e.scores] == [
        ("model", "done", 2, 40.0), ("autopilot", "running", 1, 50.0), ("constant-throttle", "pending", 0, 0.0)]
    apply_progress(e, None, {"agents": AGENTS, "report_uri": "evaluations/ev-1/report.md", "scores": {"agents": {
        a: {"driving_score": ds, "route_completion": 100.0, "infraction_penalty": ds / 100, "km_driven": 0.1,
            "infractions_per_km_total": 10.0, "bench2drive_driving_score": ds / 2, "bench2drive_success_rate": 0.5}
        for a, ds in (("model", 41.0), ("autopilot", 100.0), ("constant-throttle", 70.0))}}})
    assert [s.state for s in e.scores] == ["done"] * 3 and e.agent_scores("autopilot").driving_score == 100.0
    assert e.agent_scores("model") == AgentScores("model", 41.0, 100.0, 0.41, 0.1, 2, 2, 10.0, 20.5, 0.5, "done")
    assert e.report_uri == "evaluations/ev-1/report.md"
    apply_progress(e, {"fraction_done": "x", "per_agent": {"model": {"driving_score": "nan?", "routes_done": True}},
                       "agents": ["model"]}, None)  # junk changes nothing
    assert e.fraction_done == 0.5 and e.agent_scores("model").driving_score == 41.0


def test_a_record_round_trips_and_ignores_keys_it_does_not_know():
    e = Evaluation("ev-1", "ck.pt", "city-20", AGENTS, state=EvaluationState.RUNNING, pid=12,
                   scores=[AgentScores("model", driving_score=3.0)])
    again = Evaluation.from_json(e.to_json().replace('"pid": 12', '"pid": 12, "from_a_newer_version": 1'))
    assert again == e and again.state is EvaluationState.RUNNING and isinstance(again.scores[0], AgentScores)


def test_the_process_command_is_the_contracts():
    e = Evaluation("ev-1", "training/tr/ck.pt", "city-20", ["autopilot", "constant-throttle"])
    assert evaluate_command(e, Path("/s/evaluations/ev-1"), "10.0.0.1", 2000) == [
        "--checkpoint", "training/tr/ck.pt", "--evaluation-id", "ev-1", "--benchmark", "city-20",
        "--agents", "autopilot,constant-throttle", "--out", "/s/evaluations/ev-1", "--carla-host", "10.0.0.1",
        "--carla-port", "2000"]
    assert "--checkpoint" not in evaluate_command(Evaluation("ev-2", "", "city-20", ["autopilot"]), Path("o"), "h", 1)


def test_a_resource_reads_back_its_phase_scores_and_message():
    obj = {"metadata": {"name": "ev-1", "annotations": {"scalediffusion.io/created-at": "2026-01-01T00:00:00Z"}},
           "spec": {"checkpointUri": "s3://b/ck.pt", "benchmark": "bench2drive-220",
                    "agents": ["model", "constant-throttle"], "cancel": False},
           "status": {"phase": "Failed", "conditions": [
               {"type": "Failed", "status": "True", "reason": "InvalidInput", "message": "exit 2",
                "lastTransitionTime": "2026-01-01T00:01:00Z"}]}}
    e = evaluation_of(obj, lambda eid: f"s3://b/evaluations/{eid}/report.md")
    assert (e.state, e.benchmark, e.agents, e.created_at) == (
        EvaluationState.FAILED, "bench2drive-220", ["model", "constant-throttle"], "2026-01-01T00:00:00Z")
    assert e.message == "InvalidInput: exit 2" and e.report_uri == "" and e.scores == []
