"""What the processor does to a session, as one frozen dataclass with documented defaults.

Every threshold the cleaner and splicer apply is here, so a dataset's metadata can say exactly how it
was made (``ProcessorConfig.to_dict`` is written into ``segments.json``). The service builds it from
``SD_PROCESSOR_*`` settings; ``sdctl process`` from its flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CleanConfig:
    """Per-frame and per-segment quality rules. Luma values are full-range (0-255) of the output image."""

    # --- per frame -------------------------------------------------------------------------------
    # Blur: edge sharpness, 16 x mean(Laplacian^2) / mean(|Sobel gradient|^2) of the output luma (at
    # the crop's own size when the output enlarges it). It measures how steep edges are, not how many
    # there are: a flat-shaded wall is about as sharp as a textured street. A frame is judged only
    # with at least `blur_min_edge_energy` (levels/px)^2 of mean squared gradient (a blank view has no
    # edge to judge) and a normal exposure. It is blurred when its sharpness is below
    # `blur_min_sharpness`, or below `blur_strong_ratio` times the median of the session's last
    # `history_frames` judged frames, or below `blur_ratio` times that median while its edge energy is
    # below `blur_edge_ratio` times that of each judged neighbour (blur removes edge energy; the same
    # scene a frame earlier or later has it), or when against each judged neighbour (both present)
    # it is below `blur_ratio` of its sharpness and `blur_edge_ratio` of its edge energy, which needs
    # no session history and so also judges the first frames.
    blur_min_edge_energy: float = 0.5
    blur_min_sharpness: float = 0.1
    blur_strong_ratio: float = 0.4
    blur_ratio: float = 0.85
    blur_edge_ratio: float = 0.6
    history_frames: int = 31
    # Frozen: the picture repeats the previous one although the camera moved, and the next picture
    # catches up. Judged where the camera moved at least `frozen_min_motion_m` into and out of the
    # frame (turning counts `frozen_m_per_deg` metres per degree). The frame is frozen when at most
    # `frozen_max_moved_share` of its output pixels changed by more than `frozen_pixel_levels` since
    # the previous picture (real motion moves edges, which change pixels by their contrast), its change
    # (mean absolute luma difference of 64x64 thumbnails) is below `frozen_max_mad`, the next frame's
    # change is an ordinary visible one (at least `frozen_min_next_mad` levels and at most
    # `frozen_max_next_ratio` times the median change of the last `history_frames` frame pairs), and
    # per metre of logged motion the frame changed less than `frozen_ratio` times the next frame.
    # (A re-encoded still picture is not bit-identical: at the game's bitrate VP8 refines it by
    # about 0.1 level, at a tenth of it by up to 1 level, when it can no longer be told from motion.)
    frozen_max_mad: float = 0.3
    frozen_pixel_levels: int = 16
    frozen_max_moved_share: float = 0.001
    frozen_ratio: float = 0.2
    frozen_min_motion_m: float = 0.075
    frozen_m_per_deg: float = 0.2
    frozen_min_next_mad: float = 0.5
    frozen_max_next_ratio: float = 5.0
    # Exposure: black when the mean luma is below `black_max_mean`; overexposed when at least
    # `overexposed_min_share` of the pixels are at or above 250.
    black_max_mean: float = 12.0
    overexposed_min_share: float = 0.5
    # Flicker (diffusion output that jumps for one frame): the frame differs from both neighbours by
    # more than `flicker_ratio` times what the neighbours differ from each other (the scene's own
    # motion over the same time) plus `flicker_floor` luma levels.
    flicker_ratio: float = 1.5
    flicker_floor: float = 6.0
    # --- per segment -----------------------------------------------------------------------------
    min_good_share: float = 0.8  # kept frames / (frames decoded or logged in the segment's span)
    stationary_max_speed_mps: float = 0.5  # stationary: never faster than this ...
    stationary_max_distance_m: float = 1.0  # ... and moved less than this in the whole segment
    teleport_slack_m: float = 1.0  # a step may exceed max(speed) * dt * 1.5 by this much
    teleport_max_turn_dps: float = 360.0  # heading change per second above which the pose jumped
    max_accel_mps2: float = 15.0  # |d speed / dt| above this is not a car
    max_steer_rate_per_s: float = 20.0  # |d steer / dt| (steer in [-1, 1]) above this is not a player


@dataclass(frozen=True)
class ReplayConfig:
    """The replay rule (sd_processor.replay): logged states against the states the logged events give.

    Free-running replay (from the first frame, and again after a contact once resynchronised): a line's
    position may differ by `position_tolerance_m` plus `heading_rounding_rad` per metre driven since the
    replay was last anchored on a logged pose (that pose's heading is logged to 0.001 degrees, 1.7e-5 rad,
    which turns everything after it by up to half that), its heading by `yaw_tolerance_deg` and its speed
    by `speed_tolerance_mps`; its controls may differ from the replayed mapper's by `controls_tolerance`.
    The log rounds positions to 0.1 mm, headings to 0.001 degrees, speeds and controls to 4 decimals, and
    the engines' trigonometric functions differ by about 1e-14 m over a session: the tolerances are 2
    (controls) to 70 (position) times what those explain (docs/verification.md).

    In a contact (from a line logging a collision): the replay is re-anchored on each line's logged pose
    and speed, and a line's pose must lie within `anchored_position_tolerance_m` of the way replayed from
    the line before, its heading within `anchored_yaw_rate_dps` times the interval (the wheel angle the
    world froze while the car was blocked is unknown). Once the intervals meet the free tolerances for
    `resync_s` at more than `resync_min_speed_mps`, every later interval is held to the free tolerances,
    still from the line before. `resync_s` exceeds the 1.5 s after which the game logs a new contact with
    an object it touched (infractions.ts COLLISION_REARM_S): agreeing that long, the car touched nothing,
    so its next contact is logged. A contact that has not resynchronised after `max_contact_s` is judged a
    deviation.
    """

    enabled: bool = True
    position_tolerance_m: float = 0.01
    heading_rounding_rad: float = 2e-5
    yaw_tolerance_deg: float = 0.01
    speed_tolerance_mps: float = 0.001
    controls_tolerance: float = 0.0001
    anchored_position_tolerance_m: float = 0.05
    anchored_yaw_rate_dps: float = 90.0
    resync_s: float = 2.0
    resync_min_speed_mps: float = 0.5
    max_contact_s: float = 10.0


@dataclass(frozen=True)
class MotionConfig:
    """The video-motion rule (sd_processor.motion): the video's turns against the logged camera turns.

    Farneback flow between consecutive output pictures scaled to `flow_width` pixels wide; a pixel counts
    where the earlier picture's squared Sobel gradient is at least `min_gradient2` (levels^2) and its
    normalised image row is at least `min_abs_y` from the horizon; a pair needs `min_textured_share` of
    such pixels. A segment with at least `min_pairs` judged pairs is rejected when the RMS difference of
    the video's and the log's per-pair turns exceeds `residual_floor_deg` plus `residual_share` times the
    RMS of the logged turns (measurements: docs/verification.md).
    """

    enabled: bool = True
    flow_width: int = 64
    min_gradient2: float = 400.0
    min_abs_y: float = 0.12
    min_textured_share: float = 0.02
    min_pairs: int = 20
    trim_share: float = 0.05
    residual_floor_deg: float = 0.15
    residual_share: float = 0.5


LABEL_CONTROLS = ("shown", "rendered")


def package_version() -> str:
    """The installed sd-processor's version: what segments.json names unless SD_PROCESSOR_VERSION says otherwise."""
    try:
        return importlib.metadata.version("sd-processor")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing it
        return "0+unknown"


@dataclass(frozen=True)
class ProcessorConfig:
    """Output geometry, splicing and cleaning of one processing run."""

    output_width: int = 256
    output_height: int = 256
    # Horizontal field of view of the output image. None: the largest crop of the output's aspect,
    # centred on the principal point and above the barcode strip (a square crop of the recorded
    # view for 256x256: about 64.7 degrees of a 100-degree 16:9 recording).
    output_fov_deg: float | None = None
    barcode_margin_px: int = 4  # rows above the barcode strip also cropped (codec ringing at its edge)
    jpeg_quality: int = 90
    segment_s: float = 5.0  # a segment covers at most this much video time
    min_segment_s: float = 2.0  # shorter segments (session ends, gaps) are rejected as too_short
    max_gap_frames: int = 2  # more missing/dropped/duplicated frames in a row end a segment
    max_gap_ms: float = 250.0  # a longer hole between two kept frames' pts ends a segment
    # Pictures hashed a second of each segment's video time, for the ingest's replay check
    # (fingerprint.py; docs/verification.md has the measurements behind the rate). 0: none.
    frame_hashes_per_s: float = 4.0
    probe_frames: int = 15  # frames decoded up front to decide frame-id or timestamp alignment
    min_barcode_share: float = 0.5  # share of probed frames whose barcode must read for frame-id mode
    decode_threads: int = 1
    # Which controls label a picture (docs/dataset-format.md §3): "shown", those applied while it was on
    # screen (the player's answer to it), or "rendered", those of the frame it was made from. Both are
    # exported either way; they differ only with the diffusion view, which shows an earlier render.
    label_controls: str = "shown"
    clean: CleanConfig = field(default_factory=CleanConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)

    def __post_init__(self) -> None:
        if not (16 <= self.output_width <= 4096 and 16 <= self.output_height <= 4096):
            raise ValueError(f"output size {self.output_width}x{self.output_height} is outside 16..4096")
        if self.output_width % 2 or self.output_height % 2:
            raise ValueError(f"output size {self.output_width}x{self.output_height} must be even (YUV 4:2:0)")
        if self.output_fov_deg is not None and not 0 < self.output_fov_deg < 180:
            raise ValueError(f"output_fov_deg {self.output_fov_deg} is outside (0, 180)")
        if not 0 <= self.frame_hashes_per_s <= 240:
            raise ValueError(f"frame_hashes_per_s {self.frame_hashes_per_s} is outside 0..240")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality {self.jpeg_quality} is outside 1..100")
        if not 0 < self.min_segment_s <= self.segment_s:
            raise ValueError(f"min_segment_s {self.min_segment_s} must be in (0, segment_s={self.segment_s}]")
        if self.label_controls not in LABEL_CONTROLS:
            raise ValueError(f"label_controls {self.label_controls!r} is not one of {', '.join(LABEL_CONTROLS)}")
        if self.max_gap_frames < 0 or self.max_gap_ms <= 0:
            raise ValueError("max_gap_frames must be >= 0 and max_gap_ms > 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, written into segments.json."""
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A short hash of the whole configuration: equal configs give equal outputs."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def with_clean(self, **overrides: float) -> ProcessorConfig:
        """A copy with some clean thresholds replaced; unknown names raise ValueError."""
        known = {f.name for f in dataclasses.fields(CleanConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown clean thresholds {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, clean=dataclasses.replace(self.clean, **overrides))
