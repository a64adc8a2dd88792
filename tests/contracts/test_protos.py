"""The contracts in protos/ follow the house rules and never reuse a field number."""

import json
import textwrap
from pathlib import Path

import pytest

from tests.contracts import proto_rules as rules

SERVICES = ["gateway", "ingest", "processor", "diffusion", "trainer", "evaluator"]


@pytest.fixture(scope="module")
def files():
    return rules.compile_descriptors(rules.PROTOS)


def test_every_service_has_a_versioned_contract(files):
    packages = {fd.package for fd in files}
    for svc in SERVICES:
        assert f"scale_diffusion.{svc}.v1" in packages
    assert "scale_diffusion.common.v1" in packages


def test_contracts_follow_the_style_rules(files):
    assert rules.lint(files) == []


def test_lock_matches_the_contracts(files):
    lock = json.loads(rules.LOCK.read_text())
    assert rules.breaking_changes(lock, files) == []
    assert rules.unlocked(lock, files) == [], "new fields: run `make proto-lock` and commit the lock"


def _write(root: Path, rel: str, body: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(body))


GOOD = """
    syntax = "proto3";
    package scale_diffusion.toy.v1;
    service ToyService { rpc Ping(PingRequest) returns (PingResponse); }
    enum Mood { MOOD_UNSPECIFIED = 0; MOOD_HAPPY = 1; }
    message PingRequest { string name = 1; int32 count = 2; }
    message PingResponse { Mood mood = 1; }
"""


def test_lint_reports_each_kind_of_violation(tmp_path):
    _write(tmp_path, "scale_diffusion/toy/v1/toy.proto", GOOD)
    assert rules.lint(rules.compile_descriptors(tmp_path)) == []
    bad = tmp_path / "bad"
    _write(bad, "scale_diffusion/toy/v1/other.proto", """
        syntax = "proto3";
        package scale_diffusion.toy.v1;
        service Toys { rpc Ping(Ask) returns (Answer); }
        enum Mood { HAPPY = 0; }
        message Ask { string Name = 1; }
        message Answer {}
    """)
    errors = "\n".join(rules.lint(rules.compile_descriptors(bad)))
    assert "one file named toy.proto" in errors
    assert "must be PascalCase ending in 'Service'" in errors
    assert "request must be PingRequest" in errors
    assert "response must be PingResponse" in errors
    assert "MOOD_UNSPECIFIED = 0" in errors
    assert "Ask.Name must be lower_snake_case" in errors


def test_unversioned_package_is_rejected(tmp_path):
    _write(tmp_path, "scale_diffusion/toy/toy.proto", 'syntax = "proto3";\npackage scale_diffusion.toy;\n')
    assert "must be scale_diffusion.<service>.v<N>" in rules.lint(rules.compile_descriptors(tmp_path))[0]


def test_reusing_or_dropping_a_locked_number_is_breaking(tmp_path):
    _write(tmp_path, "scale_diffusion/toy/v1/toy.proto", GOOD)
    lock = rules.field_table(rules.compile_descriptors(tmp_path))
    # reuse: number 2 given to a different field
    _write(tmp_path, "scale_diffusion/toy/v1/toy.proto", GOOD.replace("int32 count = 2;", "string label = 2;"))
    errs = rules.breaking_changes(lock, rules.compile_descriptors(tmp_path))
    assert errs and "field 2 was count:TYPE_INT32, now label:TYPE_STRING" in errs[0]
    # removal without reserved
    _write(tmp_path, "scale_diffusion/toy/v1/toy.proto", GOOD.replace("int32 count = 2;", ""))
    errs = rules.breaking_changes(lock, rules.compile_descriptors(tmp_path))
    assert errs and "removed without" in errs[0]
    # removal with reserved number and name is fine
    _write(tmp_path, "scale_diffusion/toy/v1/toy.proto",
           GOOD.replace("int32 count = 2;", 'reserved 2; reserved "count";'))
    assert rules.breaking_changes(lock, rules.compile_descriptors(tmp_path)) == []
