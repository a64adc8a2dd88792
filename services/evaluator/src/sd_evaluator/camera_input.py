"""The dataset's camera as the evaluator needs it: what to render, where to mount it, and how to turn a
whole rendered frame into the network's input exactly as the processor and the trainer's loader did.

A dataset version's frames are the recording's pictures cropped (segments.json `crop`, recording pixels)
and scaled to the version's output size by the processor's libavfilter graph on the video's 4:2:0 YUV
planes (area averaging when shrinking, bicubic when enlarging) and stored as JPEG; when the model asks
for another input size the loader decodes that JPEG at a DCT scale and resizes it (antialiased
bilinear). `CameraSpec.prepare` repeats those steps on an RGB frame (the same filters, and the loader's
own decoding function); `CameraSpec.carla_sensor` gives the CARLA camera that renders frames like the
recording's.

The layout of `to_dict` is what the trainer stores as `state["camera"]` in every checkpoint
(docs/training.md, "Checkpoints"); the trainer writes it as plain data, this module reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

MOUNT_KEYS: tuple[str, ...] = ("x_m", "y_m", "z_m", "pitch_deg", "yaw_deg", "roll_deg")
CROP_KEYS: tuple[str, ...] = ("x", "y", "width", "height")


class CameraSpecError(ValueError):
    """A camera description that is missing a key or inconsistent; the message names the key."""


@dataclass(frozen=True)
class CameraMount:
    """The camera's pose on the car: x forward, y left, z up (metres); pitch nose-up, yaw to the left,
    roll right-side-down (degrees), as the session format's Mount."""

    x_m: float = 1.3
    y_m: float = 0.0
    z_m: float = 2.3
    pitch_deg: float = 0.0
    yaw_deg: float = 0.0
    roll_deg: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in MOUNT_KEYS}


@dataclass(frozen=True)
class Crop:
    """The rectangle of the recording that the processor kept, in recording pixels."""

    x: int
    y: int
    width: int
    height: int

    def to_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in CROP_KEYS}


@dataclass(frozen=True)
class CameraSpec:
    """The dataset's camera plus the network's input size (docs/evaluation.md, "Camera")."""

    recording_width: int
    recording_height: int
    fov_deg: float  # horizontal field of view of the whole recorded frame
    mount: CameraMount
    crop: Crop
    output_width: int  # the dataset version's frame size (segments.json `output`)
    output_height: int
    input_width: int  # what the network takes (the output size unless the training config changed it)
    input_height: int
    _graphs: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("recording_width", "recording_height", "output_width", "output_height", "input_width",
                     "input_height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CameraSpecError(f"camera {name}={value!r} is not a positive number of pixels")
        if not (isinstance(self.fov_deg, int | float) and 0 < self.fov_deg < 180):
            raise CameraSpecError(f"camera fov_deg={self.fov_deg!r} is not in (0, 180)")
        c = self.crop
        if (c.x < 0 or c.y < 0 or c.width < 1 or c.height < 1 or c.x + c.width > self.recording_width
                or c.y + c.height > self.recording_height):
            raise CameraSpecError(f"crop {c.to_dict()} is not inside the {self.recording_width}x"
                                  f"{self.recording_height} recording")

    # ----------------------------------------------------------------------------------------- layout

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's `camera` entry."""
        return {
            "recording": {"width": self.recording_width, "height": self.recording_height,
                          "fov_deg": float(self.fov_deg)},
            "mount": self.mount.to_dict(),
            "crop": self.crop.to_dict(),
            "output": {"width": self.output_width, "height": self.output_height},
            "input": {"width": self.input_width, "height": self.input_height},
        }

    @classmethod
    def from_dict(cls, data: Any) -> CameraSpec:
        """A spec from `to_dict`'s layout (a checkpoint's `state["camera"]`); CameraSpecError names what is wrong."""
        if not isinstance(data, dict):
            raise CameraSpecError(f"a camera must be an object, got {type(data).__name__}")
        rec = _section(data, "recording", ("width", "height", "fov_deg"))
        mount = _section(data, "mount", MOUNT_KEYS)
        crop = _section(data, "crop", CROP_KEYS)
        out = _section(data, "output", ("width", "height"))
        inp = _section(data, "input", ("width", "height"))
        return cls(
            recording_width=_int(rec, "recording", "width"), recording_height=_int(rec, "recording", "height"),
            fov_deg=_float(rec, "recording", "fov_deg"),
            mount=CameraMount(**{k: _float(mount, "mount", k) for k in MOUNT_KEYS}),
            crop=Crop(**{k: _int(crop, "crop", k) for k in CROP_KEYS}),
            output_width=_int(out, "output", "width"), output_height=_int(out, "output", "height"),
            input_width=_int(inp, "input", "width"), input_height=_int(inp, "input", "height"))

    @classmethod
    def from_segments(cls, doc: Any, mount: Any = None, input_size: tuple[int, int] | None = None) -> CameraSpec:
        """The camera of a processed session (segments.json as a dict or SegmentsDocument).

        `mount` (a dict with MOUNT_KEYS or an object with those attributes) overrides the document's own
        `mount`; `input_size` is the network's (height, width), None for the version's output size.
        """
        if hasattr(doc, "model_dump"):
            doc = doc.model_dump(mode="json")
        if not isinstance(doc, dict):
            raise CameraSpecError(f"segments.json must be an object, got {type(doc).__name__}")
        source = _section(doc, "source", ("width", "height"), where="segments.json")
        crop = _section(doc, "crop", CROP_KEYS, where="segments.json")
        out = _section(doc, "output", ("width", "height"), where="segments.json")
        intr = _section(doc, "intrinsics", ("fx",), where="segments.json")
        if mount is None:
            mount = doc.get("mount")
            if mount is None:
                raise CameraSpecError("segments.json has no `mount` (written by processors since the camera "
                                      "mount was recorded); pass the recording's mount")
        if not isinstance(mount, dict):
            mount = {k: getattr(mount, k) for k in MOUNT_KEYS if hasattr(mount, k)}
        missing = [k for k in MOUNT_KEYS if k not in mount]
        if missing:
            raise CameraSpecError(f"mount lacks {missing}")
        out_w, out_h = _int(out, "output", "width"), _int(out, "output", "height")
        crop_w = _int(crop, "crop", "width")
        # The output's fx is the recording's scaled by output/crop width; the recording spans its whole width.
        fx_recording = _float(intr, "intrinsics", "fx") * crop_w / out_w
        rec_w = _int(source, "source", "width")
        fov = 2 * math.degrees(math.atan(rec_w / (2 * fx_recording)))
        in_h, in_w = input_size if input_size else (out_h, out_w)
        return cls(recording_width=rec_w, recording_height=_int(source, "source", "height"), fov_deg=fov,
                   mount=CameraMount(**{k: float(mount[k]) for k in MOUNT_KEYS}),
                   crop=Crop(**{k: _int(crop, "crop", k) for k in CROP_KEYS}), output_width=out_w,
                   output_height=out_h, input_width=int(in_w), input_height=int(in_h))

    # ---------------------------------------------------------------------------------------- picture

    def prepare(self, frame_rgb: np.ndarray) -> np.ndarray:
        """The network's input (uint8 input_height x input_width x 3 RGB) from a whole recording-size frame."""
        frame = np.asarray(frame_rgb)
        if frame.dtype != np.uint8 or frame.shape != (self.recording_height, self.recording_width, 3):
            raise CameraSpecError(f"expected a {self.recording_width}x{self.recording_height} RGB uint8 frame, got "
                                  f"shape {frame.shape} {frame.dtype}")
        out = self._scale(frame)
        if (self.input_height, self.input_width) != (self.output_height, self.output_width):
            out = _loader_resize(out, self.input_height, self.input_width)
        return out

    def _scale(self, frame: np.ndarray) -> np.ndarray:
        """The processor's libavfilter steps on an RGB frame: to 4:2:0 YUV (as the recording's video was),
        crop, scale with the processor's flags to full range, then back to RGB as a JPEG decoder does."""
        import av  # the media extra of sd_common; only a picture-preparing caller needs it
        from av.filter import Graph

        graph = self._graphs.get("scale")
        if graph is None:
            c = self.crop
            graph = Graph()
            src = graph.add_buffer(width=self.recording_width, height=self.recording_height, format="rgb24",
                                   time_base=Fraction(1, 1000))
            flags = "bicubic" if self.output_width > c.width else "area"
            chain = [
                graph.add("format", "yuv420p"),
                graph.add("crop", f"{c.width}:{c.height}:{c.x}:{c.y}"),
                graph.add("scale", f"{self.output_width}:{self.output_height}:flags={flags}:out_range=full"),
                graph.add("format", "yuvj420p"),
                graph.add("scale", "flags=bicubic+accurate_rnd+full_chroma_int"),
                graph.add("format", "rgb24"),
                graph.add("buffersink"),
            ]
            src.link_to(chain[0])
            for a, b in zip(chain, chain[1:]):
                a.link_to(b)
            graph.configure()
            self._graphs["scale"] = graph
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        picture.pts = 0
        graph.push(picture)
        return graph.pull().to_ndarray()

    # ------------------------------------------------------------------------------------------ CARLA

    def carla_sensor(self, sensor_id: str = "rgb_front") -> dict[str, Any]:
        """The leaderboard sensor entry of this camera, in CARLA's axes (x forward, y right, z up; yaw clockwise
        seen from above). Pitch (nose up) and roll (right side down) mean the same in both frames."""
        m = self.mount
        return {
            "type": "sensor.camera.rgb", "id": sensor_id,
            "x": m.x_m, "y": -m.y_m, "z": m.z_m,
            "roll": m.roll_deg, "pitch": m.pitch_deg, "yaw": -m.yaw_deg,
            "width": self.recording_width, "height": self.recording_height, "fov": float(self.fov_deg),
        }


def _loader_resize(picture: np.ndarray, height: int, width: int, jpeg_quality: int = 90) -> np.ndarray:
    """The trainer loader's resize to the network's size, on the frame as the dataset stores it: a JPEG
    (the processor's quality) decoded at a DCT scale and resized by the loader's own function."""
    import simplejpeg
    from sd_trainer.data import decode_jpeg_resized

    data = simplejpeg.encode_jpeg(np.ascontiguousarray(picture), quality=jpeg_quality, colorspace="RGB",
                                  colorsubsampling="420")
    return decode_jpeg_resized(data, height, width).numpy().transpose(1, 2, 0).copy()


def _section(data: dict, key: str, keys: tuple[str, ...], where: str = "camera") -> dict:
    value = data.get(key)
    if not isinstance(value, dict):
        raise CameraSpecError(f"{where} has no `{key}` object")
    missing = [k for k in keys if k not in value]
    if missing:
        raise CameraSpecError(f"{where}.{key} lacks {missing}")
    return value


def _int(section: dict, name: str, key: str) -> int:
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise CameraSpecError(f"{name}.{key}={value!r} is not a whole number")
    return int(value)


def _float(section: dict, name: str, key: str) -> float:
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CameraSpecError(f"{name}.{key}={value!r} is not a finite number")
    return float(value)
