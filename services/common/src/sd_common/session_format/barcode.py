"""The frame-index barcode: a row of black/white squares in the bottom-left corner of every frame.

Layout (format v1): 23 square cells of ``cell_px`` pixels along the bottom edge, starting at the left
edge: cell 0 is white and cell 1 black (markers), cells 2..21 are the 20 bits of the frame id, most
significant first, and cell 22 is an even-parity bit (the count of white cells among 2..22 is even).
White is 255 and means 1; black is 0. A reader takes the mean of the inner half of each cell of the
luma plane and compares it with 127.
"""

from __future__ import annotations

import numpy as np

from .spec import BARCODE_CELLS, BARCODE_DATA_BITS, BARCODE_MARKER, BARCODE_THRESHOLD, MAX_FRAME_ID

_WEIGHTS = 1 << np.arange(BARCODE_DATA_BITS - 1, -1, -1, dtype=np.int64)


def default_cell_px(height: int) -> int:
    """The cell size the game uses for a video of this height: 16 px at 720p, never below 4 px."""
    return max(4, height // 45)


def encode(frame_id: int) -> list[int]:
    """The 23 cell values (1 white, 0 black) that show ``frame_id``."""
    if not isinstance(frame_id, (int, np.integer)) or not 0 <= frame_id <= MAX_FRAME_ID:
        raise ValueError(f"frame_id {frame_id!r} is outside 0..{MAX_FRAME_ID}")
    data = [(int(frame_id) >> (BARCODE_DATA_BITS - 1 - i)) & 1 for i in range(BARCODE_DATA_BITS)]
    return [*BARCODE_MARKER, *data, sum(data) & 1]


def strip_size(cell_px: int) -> tuple[int, int]:
    """(width, height) in pixels of the barcode strip."""
    return BARCODE_CELLS * cell_px, cell_px


def draw(image: np.ndarray, frame_id: int, cell_px: int) -> None:
    """Draws the barcode into ``image`` (H x W gray or H x W x C) in place, bottom-left."""
    height, width = image.shape[:2]
    strip_w, strip_h = strip_size(cell_px)
    if strip_w > width or strip_h > height:
        raise ValueError(f"a {strip_w}x{strip_h} barcode does not fit a {width}x{height} image")
    y0 = height - cell_px
    for i, bit in enumerate(encode(frame_id)):
        image[y0:height, i * cell_px:(i + 1) * cell_px] = 255 if bit else 0


def read(luma: np.ndarray, cell_px: int, *, threshold: int = BARCODE_THRESHOLD) -> int | None:
    """The frame id shown in a luma plane (H x W uint8), or None when markers or parity do not check.

    Touches only the pixels of the strip, so a NumPy view of a decoder's Y plane is read without a copy.
    """
    if luma.ndim != 2:
        raise ValueError(f"expected a 2-D luma plane, got shape {luma.shape}")
    height, width = luma.shape
    strip_w, _ = strip_size(cell_px)
    if strip_w > width or cell_px > height:
        return None
    inset = cell_px // 4
    size = max(1, cell_px - 2 * inset)  # the inner half of each cell, rounded towards its centre
    y0 = height - cell_px + inset
    rows = luma[y0:y0 + size, :strip_w]
    # (rows, cells, cell_px) -> the inner columns of each cell, averaged with the rows.
    cells = rows.reshape(size, BARCODE_CELLS, cell_px)[:, :, inset:inset + size]
    means = cells.mean(axis=(0, 2), dtype=np.float32)
    bits = means > threshold
    if not bits[0] or bits[1]:
        return None
    data = bits[2:2 + BARCODE_DATA_BITS]
    if (int(np.count_nonzero(data)) + int(bits[-1])) & 1:
        return None
    return int(np.dot(data.astype(np.int64), _WEIGHTS))
