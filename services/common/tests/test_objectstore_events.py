"""S3 event-notification bodies: what the embedded store builds and what every consumer parses."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sd_common.objectstore import MalformedEvent, build_s3_event, parse_s3_event

WHEN = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


def event(key: str = "a/b", **overrides: object) -> str:
    fields = {"bucket": "raw", "region": "us-east-1", "key": key, "size_bytes": 7, "etag": '"abc"',
              "event_name": "ObjectCreated:Put", "event_time": WHEN, "sequencer": "0055AED6DCD90281E5"}
    fields.update(overrides)
    return build_s3_event(**fields)


def test_round_trip() -> None:
    (created,) = parse_s3_event(event())
    assert created.bucket == "raw" and created.key == "a/b" and created.size_bytes == 7
    assert created.etag == '"abc"' and created.event_name == "ObjectCreated:Put"
    assert created.event_time == datetime(2026, 5, 1, 12, 30, 15, 123000, tzinfo=UTC)
    assert created.sequencer == "0055AED6DCD90281E5"
    assert json.loads(event())["Records"][0]["eventTime"] == "2026-05-01T12:30:15.123Z"


@given(st.text(min_size=1, max_size=60))
def test_any_key_survives_encoding(key: str) -> None:
    body = event(key)
    assert parse_s3_event(body)[0].key == key


def test_keys_are_url_decoded_as_s3_encodes_them() -> None:
    # S3 writes a space as '+' and a literal '+' as %2B; some servers encode '/' as well.
    raw = json.loads(event())
    for encoded, decoded in [("a+b%2Bc.txt", "a b+c.txt"), ("sessions%2Fs1%2Fvideo.webm", "sessions/s1/video.webm"),
                             ("caf%C3%A9", "caf\u00e9"), ("plain/key-1.json", "plain/key-1.json")]:
        raw["Records"][0]["s3"]["object"]["key"] = encoded
        assert parse_s3_event(json.dumps(raw))[0].key == decoded
    assert json.loads(event("a b+c"))["Records"][0]["s3"]["object"]["key"] == "a+b%2Bc"


def test_test_events_and_other_event_types_are_skipped() -> None:
    assert parse_s3_event(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "x",
                                      "Bucket": "raw"})) == []
    removed = json.loads(event())
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert parse_s3_event(json.dumps(removed)) == []


def test_an_emulators_event_without_sequencer_parses() -> None:
    raw = json.loads(event())
    del raw["Records"][0]["s3"]["object"]["sequencer"]
    raw["Records"][0]["eventTime"] = "2026-05-01T12:30:15.123Z"
    assert parse_s3_event(json.dumps(raw))[0].sequencer is None


@pytest.mark.parametrize(("body", "message"), [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON list, expected an object"),
    ("{}", "no 'Records' list"),
    ('{"Records": [1]}', "Records[0] is a JSON int"),
    ('{"Records": [{"eventName": "ObjectCreated:Put"}]}', "Records[0].s3 should be a JSON object, got None"),
])
def test_malformed_bodies_raise_precise_errors(body: str, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_s3_event(body)


@pytest.mark.parametrize(("path", "value", "message"), [
    (("s3", "object", "size"), "7", "size should be a JSON integer"),
    (("s3", "object", "size"), True, "size should be a JSON integer"),
    (("s3", "object", "size"), -1, "size is negative"),
    (("s3", "object", "key"), None, "key should be a JSON string"),
    (("eventTime",), "yesterday", "eventTime is not an ISO 8601 time"),
])
def test_malformed_fields_are_named(path: tuple[str, ...], value: object, message: str) -> None:
    raw = json.loads(event())
    target = raw["Records"][0]
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    with pytest.raises(MalformedEvent, match=message):
        parse_s3_event(json.dumps(raw))
