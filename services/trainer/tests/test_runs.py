"""Runs as a domain: request checks naming the field, paging, progress files read into a run."""

from __future__ import annotations

import pytest

from sd_trainer.runs import (
    Run,
    RunRequestInvalid,
    RunState,
    apply_progress,
    check_dataset_id,
    check_run_id,
    new_run_id,
    page,
    parse_overrides,
)

DS = "ab" * 32


def test_a_bad_request_names_its_field():
    with pytest.raises(RunRequestInvalid, match="dataset_id"):
        check_dataset_id("../etc")
    with pytest.raises(RunRequestInvalid, match="run_id"):
        check_run_id("Run/1")
    with pytest.raises(RunRequestInvalid, match="config_json: unknown config key 'model.widht'"):
        parse_overrides('{"model": {"widht": 8}}')
    with pytest.raises(RunRequestInvalid, match="config_json: config key 'max_steps' must be an integer"):
        parse_overrides('{"max_steps": "many"}')
    with pytest.raises(RunRequestInvalid, match="config_json: config overrides are not valid JSON"):
        parse_overrides("{")
    overrides, config = parse_overrides('{"model": {"base_width": 8}, "max_steps": 3}')
    assert overrides == {"model": {"base_width": 8}, "max_steps": 3}
    assert config.model.base_width == 8 and config.max_steps == 3
    assert parse_overrides("") == ({}, parse_overrides("{}")[1])


def test_run_ids_are_kubernetes_names_with_room_for_the_job_suffix():
    ids = {new_run_id(DS) for _ in range(50)}
    assert len(ids) == 50
    for run_id in ids:
        assert check_run_id(run_id) == run_id and run_id.startswith("tr-abababab-") and len(run_id) <= 50


def test_pages_go_newest_first_and_a_token_survives_new_runs():
    runs = [Run(f"r{i:02d}", DS, {}, created_at=f"2026-01-01T00:00:{i:02d}Z") for i in range(7)]
    first, token = page(runs, 3, "")
    assert [r.run_id for r in first] == ["r06", "r05", "r04"] and token
    newer = [*runs, Run("r99", DS, {}, created_at="2026-01-02T00:00:00Z")]  # arrives between pages
    second, token = page(newer, 3, token)
    assert [r.run_id for r in second] == ["r03", "r02", "r01"] and token
    last, token = page(newer, 3, token)
    assert [r.run_id for r in last] == ["r00"] and token == ""
    assert [r.run_id for r in page(runs, 0, "")[0]] == [f"r{i:02d}" for i in reversed(range(7))]
    with pytest.raises(RunRequestInvalid, match="page_token"):
        page(runs, 3, "not-a-token")
    with pytest.raises(RunRequestInvalid, match="page_size"):
        page(runs, -1, "")


def test_progress_and_result_files_fill_the_run():
    run = Run("r", DS, {})
    apply_progress(run, {"state": "running", "step": 40, "max_steps": 100, "loss": {"total": 0.5, "steer": 0.1}}, None)
    assert (run.step, run.max_steps, run.train_loss, run.val_loss) == (40, 100, 0.5, 0.0)
    apply_progress(run, None, {"step": 100, "checkpoint_uri": "s3://b/training/r/checkpoints/step-000000100.pt",
                               "validation": {"loss": 0.2, "mae": {"steer": 0.1}}})
    assert (run.step, run.val_loss, run.checkpoint_uri) == (100, 0.2, "s3://b/training/r/checkpoints/step-000000100.pt")
    assert run.metrics["mae"]["steer"] == 0.1
    apply_progress(run, {"step": "x", "loss": {"total": "nan?"}}, None)  # junk changes nothing
    assert (run.step, run.train_loss) == (100, 0.5)


def test_a_record_round_trips_and_ignores_keys_it_does_not_know():
    run = Run("r", DS, {"max_steps": 3}, state=RunState.RUNNING, step=2, pid=123)
    again = Run.from_json(run.to_json().replace('"step": 2', '"step": 2, "from_a_newer_version": 1'))
    assert again == run and again.state is RunState.RUNNING
