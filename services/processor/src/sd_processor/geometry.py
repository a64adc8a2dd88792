"""Where to crop a recorded frame so the output keeps its geometry, and the output camera that results.

A frame is cropped, never squashed: the crop has the output's aspect ratio (corrected for any
difference between fx and fy), is centred on the principal point as far as the image allows, stays
above the barcode strip, and is then scaled to the output size. Crop offsets and sizes are even, as
4:2:0 chroma needs; the intrinsics are computed from the crop actually used, so they are exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


class CropError(ValueError):
    """The configured field of view or size cannot be cut from this recording."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (origin top-left, u right, v down); fov_deg is horizontal."""

    fx: float
    fy: float
    cx: float
    cy: float
    fov_deg: float

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form, rounded to what matters."""
        return {k: round(v, 6) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class CropPlan:
    """The source rectangle to keep and the output it is scaled to."""

    source_width: int
    source_height: int
    x: int
    y: int
    width: int
    height: int
    output_width: int
    output_height: int
    source: Intrinsics
    output: Intrinsics

    @property
    def filter(self) -> str:
        """The libavfilter crop arguments (w:h:x:y)."""
        return f"{self.width}:{self.height}:{self.x}:{self.y}"

    @property
    def upscales(self) -> bool:
        """Whether the output has more pixels across than the crop."""
        return self.output_width > self.width

    def crop_dict(self) -> dict[str, int]:
        """{x, y, width, height} in source pixels, as segments.json records it."""
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}

    def to_output(self, u: float, v: float) -> tuple[float, float]:
        """Maps a source pixel position to the output image (continuous coordinates)."""
        return ((u - self.x) * self.output_width / self.width, (v - self.y) * self.output_height / self.height)


def _even_floor(value: float) -> int:
    return max(0, math.floor(value / 2.0) * 2)


def _even_round(value: float) -> int:
    return round(value / 2.0) * 2


def plan_crop(*, width: int, height: int, fx: float, fy: float, cx: float, cy: float, excluded_bottom_rows: int,
              output_width: int, output_height: int, fov_deg: float | None = None) -> CropPlan:
    """The crop of a ``width`` x ``height`` recording for an undistorted ``output_width`` x ``output_height`` image.

    ``excluded_bottom_rows`` (the barcode strip and a margin) are never inside the crop. With
    ``fov_deg`` None the crop is the largest that fits around the principal point; otherwise it spans
    exactly that horizontal field of view, and CropError says when it does not fit.
    """
    usable_h = height - excluded_bottom_rows
    if usable_h < 2 or width < 2:
        raise CropError(f"nothing is left of a {width}x{height} frame after {excluded_bottom_rows} barcode rows")
    # Source pixels per output pixel must be equal in metric terms: crop_h / crop_w = (out_h / out_w) * (fy / fx).
    ratio = (output_height / output_width) * (fy / fx)
    half_w_room = min(cx, width - cx)
    half_h_room = min(cy, usable_h - cy)
    if half_w_room <= 0 or half_h_room <= 0:
        raise CropError(f"the principal point ({cx}, {cy}) leaves no room for a crop in {width}x{usable_h}")
    if fov_deg is None:
        crop_w = min(2 * half_w_room, 2 * half_h_room / ratio)
    else:
        crop_w = 2 * fx * math.tan(math.radians(fov_deg) / 2)
        if crop_w > 2 * half_w_room + 1 or crop_w * ratio > 2 * half_h_room + 1:
            widest = 2 * math.degrees(math.atan(min(half_w_room, half_h_room / ratio) / fx))
            raise CropError(f"a {fov_deg:g} degree output does not fit this {width}x{height} recording; at most "
                            f"{widest:.2f} degrees fits around the principal point above the barcode")
    w = _even_floor(crop_w) if fov_deg is None else _even_round(crop_w)
    w = max(2, min(w, _even_floor(width)))
    h = max(2, min(_even_round(w * ratio), _even_floor(usable_h)))
    x = min(max(0, _even_round(cx - w / 2)), _even_floor(width - w))
    y = min(max(0, _even_round(cy - h / 2)), _even_floor(usable_h - h))
    sx, sy = output_width / w, output_height / h
    ofx, ofy = fx * sx, fy * sy
    out = Intrinsics(fx=ofx, fy=ofy, cx=(cx - x) * sx, cy=(cy - y) * sy,
                     fov_deg=2 * math.degrees(math.atan(output_width / (2 * ofx))))
    src = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, fov_deg=2 * math.degrees(math.atan(width / (2 * fx))))
    return CropPlan(width, height, x, y, w, h, output_width, output_height, src, out)
