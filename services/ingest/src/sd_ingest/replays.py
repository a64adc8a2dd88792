"""Replay detection: whether a session's pictures, or its whole input log, repeat an earlier session's.

The processor writes, per segment, the 64-bit perceptual hashes of a few pictures a second with their
pts, and per session a fingerprint of its input log (sd_processor.fingerprint). The catalog keeps
every registered session's hashes, split into ``BANDS`` bands: two hashes within ``MAX_DISTANCE`` bits
share at least one whole band (``MAX_DISTANCE`` + 1 bands and ``MAX_DISTANCE`` differing bits: some
band has none), so an exact, indexed lookup on the bands finds every candidate and the full distance
then decides.

A segment repeats another session when at least ``MIN_SHARE`` of its hashed pictures, and at least
``MIN_MATCHES``, have their nearest picture of that session (within ``MAX_DISTANCE`` bits) at one time
offset (within ``OFFSET_TOLERANCE_MS``): the same pictures in the same order at the same pace. A
picture of a street looks much like the pictures a few metres on, so a genuine drive through the same
streets finds near pictures everywhere, but at an offset that drifts with its other pace; only each
picture's nearest counts, so that drift shows. docs/verification.md ("Duplicates and replays") has the
distances and shares these numbers come from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_DISTANCE = 6  # bits: a re-encoded picture's hash, at most; another picture's, more (measured)
BANDS = MAX_DISTANCE + 1
MIN_SHARE = 0.75  # of a segment's hashed pictures that must repeat one session's
MIN_MATCHES = 4  # and at least this many (a short segment's one or two pictures prove nothing)
OFFSET_TOLERANCE_MS = 50.0  # the sampled pictures of a copy may fall a frame from the original's

REASON_FRAMES = "duplicate_frames"
REASON_LOG = "duplicate_log"


def _band_edges(bands: int) -> list[tuple[int, int]]:
    """(shift, width) of each band, the wider ones first: 64 bits split as evenly as they go."""
    widths = [64 // bands + (1 if k < 64 % bands else 0) for k in range(bands)]
    edges, shift = [], 64
    for w in widths:
        shift -= w
        edges.append((shift, w))
    return edges


_EDGES = _band_edges(BANDS)


def band_values(value: int) -> list[int]:
    """The ``BANDS`` band values of a 64-bit hash, most significant band first."""
    return [(value >> shift) & ((1 << width) - 1) for shift, width in _EDGES]


def parse_hash(text: str) -> int:
    """A hash written as 16 hex digits, as an unsigned 64-bit integer."""
    if len(text) != 16:
        raise ValueError(f"a frame hash is 16 hex digits, not {text!r}")
    return int(text, 16)


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes."""
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class FrameHash:
    """One hashed picture: its pts on its video's clock and its 64-bit hash."""

    t_ms: int
    value: int


@dataclass(frozen=True)
class IndexedHash:
    """A hashed picture of some registered session, as the index holds it."""

    session_id: str
    t_ms: int
    value: int


@dataclass(frozen=True)
class FrameMatch:
    """The earlier session a segment's pictures repeat, and how well."""

    session_id: str
    matched: int  # hashed pictures of the segment that repeat that session's at one offset
    sampled: int  # hashed pictures of the segment
    offset_ms: float  # that session's pts minus this one's, for the matched pictures


def _best_offset(pairs: list[tuple[int, float]], tolerance_ms: float) -> tuple[int, float]:
    """(distinct query pictures, offset) for the offset that the most query pictures agree on."""
    offsets = sorted(pairs, key=lambda p: p[1])
    best = (0, 0.0)
    lo = 0
    for hi in range(len(offsets)):  # a window of offsets at most 2 x tolerance wide
        while offsets[hi][1] - offsets[lo][1] > 2 * tolerance_ms:
            lo += 1
        count = len({i for i, _ in offsets[lo:hi + 1]})
        if count > best[0]:
            window = [d for _, d in offsets[lo:hi + 1]]
            best = (count, (window[0] + window[-1]) / 2)
    return best


def match_segment(hashes: Sequence[FrameHash], candidates: Iterable[IndexedHash], *,
                  max_distance: int = MAX_DISTANCE, min_share: float = MIN_SHARE,
                  min_matches: int = MIN_MATCHES, tolerance_ms: float = OFFSET_TOLERANCE_MS,
                  order: dict[str, int] | None = None) -> FrameMatch | None:
    """The session whose pictures this segment's repeat (see the module's docstring), or None.

    ``candidates``: indexed pictures of other sessions (any superset of those within ``max_distance``
    of one of ``hashes``). ``order``: session id -> registration order; of several sessions repeated,
    the earliest is answered.
    """
    if len(hashes) < min_matches:
        return None
    # session -> query picture -> (distance, offsets at that distance): only each picture's nearest
    nearest: dict[str, dict[int, tuple[int, list[float]]]] = defaultdict(dict)
    for cand in candidates:
        for i, h in enumerate(hashes):
            d = hamming(h.value, cand.value)
            if d > max_distance:
                continue
            seen = nearest[cand.session_id].get(i)
            if seen is None or d < seen[0]:
                nearest[cand.session_id][i] = (d, [float(cand.t_ms - h.t_ms)])
            elif d == seen[0]:
                seen[1].append(float(cand.t_ms - h.t_ms))
    found: list[FrameMatch] = []
    for sid, per_picture in nearest.items():
        pairs = [(i, offset) for i, (_, offsets) in per_picture.items() for offset in offsets]
        matched, offset = _best_offset(pairs, tolerance_ms)
        if matched >= min_matches and matched >= min_share * len(hashes):
            found.append(FrameMatch(sid, matched, len(hashes), offset))
    # the earliest session repeated is the original (a copy of a copy repeats it too)
    return min(found, key=lambda m: ((order or {}).get(m.session_id, 0), -m.matched, m.session_id), default=None)


@dataclass(frozen=True)
class SessionFingerprints:
    """What the processor wrote to recognize a replay of a session: its log fingerprint ("" when none)
    and, per segment id, its hashed pictures in order."""

    log_fingerprint: str
    frames: dict[str, list[FrameHash]]
