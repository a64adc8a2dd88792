"""A procedural street grid rendered with a pinhole camera, for synthetic sessions.

The city is an endless grid of square blocks separated by roads (x east, y north, z up, metres);
each block holds up to four box buildings on a sidewalk. Faces are projected with the manifest's
intrinsics, clipped at a near plane and filled with OpenCV in painter's order (far to near).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BLOCK_PITCH_M = 80.0  # distance between parallel road centre lines
ROAD_HALF_WIDTH_M = 7.0
SIDEWALK_M = 3.0
LANE_OFFSET_M = 1.75  # right-hand traffic: the lane centre is this far right of the road centre line

_NEAR_M = 0.5
_VIEW_RADIUS_M = 220.0
_DASH_RADIUS_M = 90.0
_WINDOW_RADIUS_M = 60.0
_SUBPIXEL_BITS = 4  # cv2.fillPoly shift: vertices at 1/16 px
_SKY_TOP = np.array([200, 150, 90], np.float32)  # BGR
_SKY_HORIZON = np.array([235, 215, 190], np.float32)
_ASPHALT = (70, 70, 72)
_SIDEWALK = (150, 155, 160)
_GRASS = (70, 140, 80)
_DASH = (230, 230, 230)


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Body-to-world rotation for x forward, y left, z up: yaw CCW about z, pitch nose-up, roll right-down."""
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    cz, sz, cp, sp, cr, sr = math.cos(y), math.sin(y), math.cos(p), math.sin(p), math.cos(r), math.sin(r)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, -sp], [0, 1, 0], [sp, 0, cp]])  # about y by -pitch: nose up is positive
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def angles(r: np.ndarray) -> tuple[float, float, float]:
    """(yaw_deg, pitch_deg, roll_deg) of a rotation built as :func:`rotation` does."""
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, r[2, 0]))))
    roll = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    yaw = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return yaw, pitch, roll


@dataclass(frozen=True)
class Box:
    """An axis-aligned building: footprint [x0, x1] x [y0, y1], height h, base colour BGR."""

    x0: float
    y0: float
    x1: float
    y1: float
    h: float
    color: tuple[int, int, int]


class City:
    """An endless, seeded grid of blocks; each block's buildings are drawn from its own generator."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._blocks: dict[tuple[int, int], tuple[list[Box], list[list[list[float]]]]] = {}

    def block(self, i: int, j: int) -> tuple[list[Box], list[list[list[float]]]]:
        """(buildings, grass patches) of the block whose south-west road crossing is (i, j)."""
        key = (i, j)
        if key not in self._blocks:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, i & 0xFFFFFFFF, j & 0xFFFFFFFF])
            x0 = i * BLOCK_PITCH_M + ROAD_HALF_WIDTH_M + SIDEWALK_M
            y0 = j * BLOCK_PITCH_M + ROAD_HALF_WIDTH_M + SIDEWALK_M
            span = BLOCK_PITCH_M - 2 * (ROAD_HALF_WIDTH_M + SIDEWALK_M)
            half, gap = span / 2, 2.0
            boxes: list[Box] = []
            grass: list[list[list[float]]] = []
            for a in range(2):
                for b in range(2):
                    lx0, ly0 = x0 + a * half + (gap if a else 0), y0 + b * half + (gap if b else 0)
                    lx1, ly1 = x0 + (a + 1) * half - (0 if a else gap), y0 + (b + 1) * half - (0 if b else gap)
                    if rng.random() < 0.15:
                        grass.append([[lx0, ly0, 0], [lx1, ly0, 0], [lx1, ly1, 0], [lx0, ly1, 0]])
                        continue
                    tone = rng.integers(90, 200)
                    color = (int(tone * rng.uniform(0.7, 1.0)), int(tone * rng.uniform(0.7, 1.0)), int(tone))
                    boxes.append(Box(lx0, ly0, lx1, ly1, float(rng.uniform(8, 45)), color))
            self._blocks[key] = (boxes, grass)
        return self._blocks[key]


class Renderer:
    """Renders the city seen from a camera pose into a reused BGR buffer."""

    def __init__(self, city: City, width: int, height: int, fx: float, fy: float, cx: float, cy: float) -> None:
        self.city, self.width, self.height = city, width, height
        self.fx, self.fy, self.cx, self.cy = fx, fy, cx, cy
        rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
        sky = _SKY_TOP * (1 - rows) + _SKY_HORIZON * rows
        self._sky = np.repeat(sky[:, None, :], width, axis=1).astype(np.uint8)
        self._image = np.empty((height, width, 3), np.uint8)

    def render(self, position: np.ndarray, rot: np.ndarray) -> np.ndarray:
        """The view from a camera at ``position`` with body-to-world rotation ``rot`` (x fwd, y left, z up)."""
        img = self._image
        np.copyto(img, self._sky)
        cam_x, cam_y, cam_z = float(position[0]), float(position[1]), float(position[2])
        quads: list[list[list[float]]] = []  # world-space quads in painter's order
        colors: list[tuple[int, int, int]] = []

        def add(quad: list[list[float]], color: tuple[int, int, int]) -> None:
            quads.append(quad)
            colors.append(color)

        # Ground: one large asphalt square around the camera, then sidewalks, grass and lane dashes.
        g = 3000.0
        add([[cam_x - g, cam_y - g, 0], [cam_x + g, cam_y - g, 0], [cam_x + g, cam_y + g, 0],
             [cam_x - g, cam_y + g, 0]], _ASPHALT)
        r = _VIEW_RADIUS_M
        fwd_x, fwd_y = float(rot[0, 0]), float(rot[1, 0])
        boxes: list[Box] = []
        edge = ROAD_HALF_WIDTH_M
        for i in range(math.floor((cam_x - r) / BLOCK_PITCH_M), math.floor((cam_x + r) / BLOCK_PITCH_M) + 1):
            for j in range(math.floor((cam_y - r) / BLOCK_PITCH_M), math.floor((cam_y + r) / BLOCK_PITCH_M) + 1):
                bx0, by0 = i * BLOCK_PITCH_M + edge, j * BLOCK_PITCH_M + edge
                bx1, by1 = (i + 1) * BLOCK_PITCH_M - edge, (j + 1) * BLOCK_PITCH_M - edge
                if all((x - cam_x) * fwd_x + (y - cam_y) * fwd_y < 0
                       for x, y in ((bx0, by0), (bx1, by0), (bx1, by1), (bx0, by1))):
                    continue  # wholly behind the camera
                add([[bx0, by0, 0], [bx1, by0, 0], [bx1, by1, 0], [bx0, by1, 0]], _SIDEWALK)
                block_boxes, grass = self.city.block(i, j)
                for patch in grass:
                    add(patch, _GRASS)
                boxes.extend(block_boxes)
        self._add_dashes(add, cam_x, cam_y)

        def distance(b: Box) -> float:
            dx = max(b.x0 - cam_x, 0.0, cam_x - b.x1)
            dy = max(b.y0 - cam_y, 0.0, cam_y - b.y1)
            return dx * dx + dy * dy

        for b in sorted(boxes, key=distance, reverse=True):  # painter's order: far to near
            faces = []
            if cam_x < b.x0:
                faces.append(((b.x0, b.y0), (b.x0, b.y1), 0.75))
            if cam_x > b.x1:
                faces.append(((b.x1, b.y1), (b.x1, b.y0), 0.75))
            if cam_y < b.y0:
                faces.append(((b.x1, b.y0), (b.x0, b.y0), 0.95))
            if cam_y > b.y1:
                faces.append(((b.x0, b.y1), (b.x1, b.y1), 0.95))
            near = distance(b) < _WINDOW_RADIUS_M**2
            for (px, py), (qx, qy), k in faces:
                add([[px, py, 0], [qx, qy, 0], [qx, qy, b.h], [px, py, b.h]], tuple(int(c * k) for c in b.color))
                if near:  # window bands, one per storey: texture for blur and motion
                    dark = tuple(int(c * k * 0.55) for c in b.color)
                    ux, uy = (qx - px) / math.hypot(qx - px, qy - py), (qy - py) / math.hypot(qx - px, qy - py)
                    ax, ay, bx, by = px + ux, py + uy, qx - ux, qy - uy
                    z = 3.0
                    while z + 1.4 < b.h - 0.5:
                        add([[ax, ay, z], [bx, by, z], [bx, by, z + 1.4], [ax, ay, z + 1.4]], dark)
                        z += 3.5
            if cam_z > b.h:
                add([[b.x0, b.y0, b.h], [b.x1, b.y0, b.h], [b.x1, b.y1, b.h], [b.x0, b.y1, b.h]],
                    tuple(int(c * 0.6) for c in b.color))
        self._fill(img, np.asarray(quads, dtype=np.float64), colors, position, rot)
        return img

    def _fill(self, img: np.ndarray, quads: np.ndarray, colors: list, position: np.ndarray,
              rot: np.ndarray) -> None:
        """Projects all quads at once, culls and clips them, and fills them in order."""
        cam = (quads - position) @ rot  # (P, 4, 3): forward, left, up
        fwd = cam[:, :, 0]
        all_front = np.all(fwd >= _NEAR_M, axis=1)
        any_front = np.any(fwd >= _NEAR_M, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.cx - self.fx * cam[:, :, 1] / fwd
            v = self.cy - self.fy * cam[:, :, 2] / fwd
        outside = (np.all(u < 0, axis=1) | np.all(u > self.width, axis=1)
                   | np.all(v < 0, axis=1) | np.all(v > self.height, axis=1))
        scale = 1 << _SUBPIXEL_BITS
        polys = np.round(np.stack([u, v], axis=2) * scale)
        for k in np.flatnonzero(any_front & ~(all_front & outside)):
            if all_front[k]:
                poly = polys[k].astype(np.int32)
            else:
                pts = _clip_near(cam[k])
                if len(pts) < 3:
                    continue
                pu = self.cx - self.fx * pts[:, 1] / pts[:, 0]
                pv = self.cy - self.fy * pts[:, 2] / pts[:, 0]
                poly = np.round(np.stack([pu, pv], axis=1) * scale).astype(np.int32)
            cv2.fillPoly(img, [poly], colors[k], lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)

    def _add_dashes(self, add, cam_x: float, cam_y: float) -> None:
        length, period, half_w = 3.0, 9.0, 0.12
        r = _DASH_RADIUS_M
        for k in range(math.floor((cam_x - r) / BLOCK_PITCH_M), math.floor((cam_x + r) / BLOCK_PITCH_M) + 1):
            x = k * BLOCK_PITCH_M  # a north-south road
            if abs(x - cam_x) > r:
                continue
            s = math.floor((cam_y - r) / period) * period
            while s < cam_y + r:
                if _off_crossing(s, length):
                    add([[x - half_w, s, 0.01], [x + half_w, s, 0.01], [x + half_w, s + length, 0.01],
                         [x - half_w, s + length, 0.01]], _DASH)
                s += period
        for k in range(math.floor((cam_y - r) / BLOCK_PITCH_M), math.floor((cam_y + r) / BLOCK_PITCH_M) + 1):
            y = k * BLOCK_PITCH_M  # an east-west road
            if abs(y - cam_y) > r:
                continue
            s = math.floor((cam_x - r) / period) * period
            while s < cam_x + r:
                if _off_crossing(s, length):
                    add([[s, y - half_w, 0.01], [s + length, y - half_w, 0.01], [s + length, y + half_w, 0.01],
                         [s, y + half_w, 0.01]], _DASH)
                s += period


def _off_crossing(s: float, length: float) -> bool:
    """True when a dash from s to s+length stays clear of the crossings."""
    local = s % BLOCK_PITCH_M
    return local > ROAD_HALF_WIDTH_M and local + length < BLOCK_PITCH_M - ROAD_HALF_WIDTH_M


def _clip_near(cam: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon (camera coordinates) to forward >= near."""
    out = []
    n = len(cam)
    for k in range(n):
        a, b = cam[k], cam[(k + 1) % n]
        a_in, b_in = a[0] >= _NEAR_M, b[0] >= _NEAR_M
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (_NEAR_M - a[0]) / (b[0] - a[0])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.empty((0, 3))
