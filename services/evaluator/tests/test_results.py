"""The leaderboard's result file: read, scored and written back; a file written in its layout by hand here.

The file (leaderboard_files.py) is what leaderboard_evaluator.py writes for two routes of a Bench2Drive run;
its numbers are worked out by hand there.
"""

from __future__ import annotations

import copy
import json

import pytest
from leaderboard_files import leaderboard_file

from sd_evaluator.results import (
    Results,
    ResultsFormatError,
    RouteRecord,
    read_results,
    route_number,
    sort_records,
    write_results,
)
from sd_evaluator.scoring import finalize_results, rescore_record


def test_a_leaderboard_file_reads_and_writes_back_unchanged(tmp_path):
    src = tmp_path / "results.json"
    src.write_text(json.dumps(leaderboard_file(), indent=4))
    results = read_results(src)
    assert [r.route_id for r in results.records] == ["RouteScenario_1711_rep0", "RouteScenario_2084_rep0"]
    assert results.records[0].extra["town_name"] == "Town12"
    assert results.total_routes == 2
    out = tmp_path / "again.json"
    write_results(results, out)
    assert json.loads(out.read_text()) == leaderboard_file()
    assert out.read_text() == src.read_text()  # same layout as the leaderboard's writer: indent 4, same order


def test_the_scorer_reproduces_the_files_scores_and_global_record(tmp_path):
    src = tmp_path / "results.json"
    src.write_text(json.dumps(leaderboard_file()))
    results = read_results(src)
    for record in results.records:
        assert rescore_record(record) == record.scores
    written_global = results.global_record.to_json()
    results.global_record, results.values, results.labels = None, [], []
    assert finalize_results(results) == ""
    assert results.global_record.to_json() == written_global
    assert results.values == leaderboard_file()["values"]
    assert results.labels == leaderboard_file()["labels"]
    assert results.entry_status == "Finished" and results.eligible
    out = tmp_path / "rescored.json"
    write_results(results, out)  # recomputed, and written key for key in the leaderboard's order
    assert out.read_text() == json.dumps(leaderboard_file(), indent=4)


def test_what_bench2drives_tools_read_is_there(tmp_path):
    # Its merge reads records' index, route_id, status, infractions (lists), scores.score_composed; its
    # ability tool matches route_id.split('_')[1] with the route file's id; its efficiency reads save_name.
    out = tmp_path / "again.json"
    write_results(Results.from_json(leaderboard_file()), out)
    records = json.loads(out.read_text())["_checkpoint"]["records"]
    assert [r["route_id"].split("_")[1] for r in records] == ["1711", "2084"]
    for r in records:
        assert {"index", "status", "save_name"} <= r.keys()
        assert isinstance(r["scores"]["score_composed"], float)
        assert all(isinstance(v, list) for v in r["infractions"].values())


def test_records_in_progress_are_not_written(tmp_path):
    results = Results.from_json(leaderboard_file())
    results.records.append(RouteRecord(route_id="RouteScenario_3001_rep0"))  # index -1: still running
    out = tmp_path / "r.json"
    write_results(results, out)
    assert len(json.loads(out.read_text())["_checkpoint"]["records"]) == 2


def test_sort_records_orders_by_route_then_repetition():
    records = [
        RouteRecord(route_id=i)
        for i in (
            "RouteScenario_20_rep1",
            "RouteScenario_3_rep0",
            "RouteScenario_20_rep0",
            "RouteScenario_100_rep0",
        )
    ]
    sort_records(records)
    assert [r.route_id for r in records] == [
        "RouteScenario_3_rep0",
        "RouteScenario_20_rep0",
        "RouteScenario_20_rep1",
        "RouteScenario_100_rep0",
    ]
    assert [r.index for r in records] == [0, 1, 2, 3]
    assert route_number("RouteScenario_20_rep1") == (20, 1)
    with pytest.raises(ResultsFormatError, match="RouteScenario_<route>_rep<repetition>"):
        route_number("Route20")


def broken(edit) -> dict:
    data = copy.deepcopy(leaderboard_file())
    edit(data)
    return data


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (broken(lambda d: d.pop("_checkpoint")), "missing key '_checkpoint'"),
        (
            broken(lambda d: d["_checkpoint"]["records"][1].pop("scores")),
            r"records\[1\]: missing key 'scores'",
        ),
        (
            broken(lambda d: d["_checkpoint"]["records"][0]["scores"].update(score_route="100")),
            r"records\[0\]\.scores\.score_route: expected a number",
        ),
        (
            broken(lambda d: d["_checkpoint"]["records"][0]["infractions"].update(red_light="ran one")),
            r"records\[0\]\.infractions\.red_light: expected a list of messages",
        ),
        (
            broken(lambda d: d["_checkpoint"]["records"][0]["meta"].pop("route_length")),
            r"records\[0\]\.meta: missing key 'route_length'",
        ),
        (broken(lambda d: d.update(entry_status="Done")), "'Done' is not a leaderboard entry status"),
        (broken(lambda d: d["_checkpoint"].update(progress=[2])), "expected \\[route index, total routes\\]"),
    ],
)
def test_a_file_outside_the_schema_is_named(data, match):
    with pytest.raises(ResultsFormatError, match=match):
        Results.from_json(data, where="run.json")


def test_a_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(leaderboard_file())[:200])
    with pytest.raises(ResultsFormatError, match="cut.json: not JSON"):
        read_results(path)


def test_entry_status_sets_eligible_and_refuses_unknown_values():
    results = Results()
    results.set_entry_status("Finished")
    assert results.eligible is True
    results.set_entry_status("Rejected")
    assert results.eligible is False
    with pytest.raises(ValueError, match="'Done' is not one of"):
        results.set_entry_status("Done")
