"""The processor's output contract: valid documents parse, bad ones name the document and field."""

import json

import pytest

from sd_common.processed_format import ProcessedFormatError, SegmentsDocument, SuccessMarker, parse

SEGMENT = {"segment_id": "route_s1_000", "index": 0, "accepted": True, "reasons": [], "frames": 150,
           "duration_s": 5.0, "t_start_ms": 0.0, "t_end_ms": 4966.7, "distance_m": 41.2,
           "mean_speed_mps": 8.3, "command_counts": {"4": 150}}
DOC = {"schema_version": 1, "session_id": "s1", "player_id": "p-1", "attempt_id": "a1",
       "source": {"width": 1280, "height": 720}, "crop": {"x": 300, "y": 20, "width": 680, "height": 680},
       "output": {"width": 256, "height": 256}, "intrinsics": {"fx": 1.0}, "segments": [SEGMENT]}


def test_valid_documents_parse_and_unknown_fields_are_ignored():
    doc = parse(SegmentsDocument, json.dumps({**DOC, "added_later": 1}), "segments.json")
    assert doc.segments[0].command_counts == {"4": 150}
    assert parse(SuccessMarker, {"attempt_id": "a1", "finished_at": "x", "segments_accepted": 1}, "_SUCCESS.json")


@pytest.mark.parametrize("change, field", [
    ({"schema_version": 2}, "schema_version"),
    ({"segments": [{**SEGMENT, "frames": "many"}]}, "segments.0.frames"),
    ({"segments": [{**SEGMENT, "segment_id": "../x"}]}, "segments.0.segment_id"),
    ({"segments": [{k: v for k, v in SEGMENT.items() if k != "accepted"}]}, "segments.0.accepted"),
])
def test_bad_documents_name_the_field(change, field):
    with pytest.raises(ProcessedFormatError, match=f"segments.json: {field.replace('.', '[.]')}"):
        parse(SegmentsDocument, {**DOC, **change}, "segments.json")


def test_an_older_document_reads_the_pricing_facts_and_fingerprints_as_their_defaults():
    seg = parse(SegmentsDocument, DOC, "segments.json").segments[0]
    assert (seg.infractions, seg.diffusion_frames, seg.route_progress_start, seg.route_progress_end,
            seg.frame_hashes, seg.frame_hash_t_ms) == ({}, 0, 0.0, 0.0, [], [])
    assert parse(SegmentsDocument, DOC, "segments.json").log_fingerprint == ""


def test_frame_hashes_are_16_hex_digits_each_with_a_time():
    good = {**SEGMENT, "frame_hashes": ["00ff00ff00ff00ff"], "frame_hash_t_ms": [41]}
    assert parse(SegmentsDocument, {**DOC, "segments": [good]}, "segments.json").segments[0].frame_hash_t_ms == [41]
    for bad in ({"frame_hashes": ["00ff"], "frame_hash_t_ms": [41]},
                {"frame_hashes": ["00ff00ff00ff00ff"], "frame_hash_t_ms": []}):
        with pytest.raises(ProcessedFormatError, match="segments.json: segments"):
            parse(SegmentsDocument, {**DOC, "segments": [{**SEGMENT, **bad}]}, "segments.json")
    with pytest.raises(ProcessedFormatError, match="log_fingerprint"):
        parse(SegmentsDocument, {**DOC, "log_fingerprint": "abc"}, "segments.json")
