"""The frame-index barcode: exact round trips, detected misreads, and survival through real VP8."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sd_common.session_format import barcode
from sd_common.session_format.scene import City, Renderer, rotation
from sd_common.session_format.spec import BARCODE_CELLS, MAX_FRAME_ID
from sd_common.session_format.video import VideoWriter, iter_frames

frame_ids = st.integers(min_value=0, max_value=MAX_FRAME_ID)


def test_encode_layout_markers_msb_first_and_even_parity():
    bits = barcode.encode(5)
    assert len(bits) == BARCODE_CELLS == 23
    assert bits[:2] == [1, 0]
    assert bits[2:22] == [0] * 17 + [1, 0, 1]
    assert bits[22] == 0  # two data ones: already even
    assert barcode.encode(1)[22] == 1
    assert sum(barcode.encode(MAX_FRAME_ID)[2:]) % 2 == 0


@pytest.mark.parametrize("bad", [-1, MAX_FRAME_ID + 1, 2.0, "3"])
def test_encode_rejects_ids_the_code_cannot_carry(bad):
    with pytest.raises(ValueError):
        barcode.encode(bad)


@given(frame_id=frame_ids, cell_px=st.integers(2, 20), extra_w=st.integers(0, 50), extra_h=st.integers(0, 50),
       seed=st.integers(0, 2**32 - 1))
def test_draw_then_read_round_trips_on_any_background(frame_id, cell_px, extra_w, extra_h, seed):
    rng = np.random.default_rng(seed)
    h, w = cell_px + extra_h, BARCODE_CELLS * cell_px + extra_w
    gray = rng.integers(0, 256, (h, w), dtype=np.uint8)
    barcode.draw(gray, frame_id, cell_px)
    assert barcode.read(gray, cell_px) == frame_id
    bgr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    barcode.draw(bgr, frame_id, cell_px)
    assert barcode.read(bgr[:, :, 0], cell_px) == frame_id


@given(frame_id=frame_ids, cell=st.integers(0, BARCODE_CELLS - 1))
def test_a_single_misread_cell_is_detected(frame_id, cell):
    cell_px = 4
    img = np.zeros((8, BARCODE_CELLS * cell_px), np.uint8)
    barcode.draw(img, frame_id, cell_px)
    x = cell * cell_px
    img[-cell_px:, x:x + cell_px] = 255 - img[-cell_px:, x:x + cell_px]
    assert barcode.read(img, cell_px) is None


def test_read_is_none_without_a_barcode_or_on_a_too_small_image():
    assert barcode.read(np.zeros((720, 1280), np.uint8), 16) is None
    assert barcode.read(np.full((720, 1280), 255, np.uint8), 16) is None
    assert barcode.read(np.zeros((10, 100), np.uint8), 16) is None


def test_read_accepts_a_strided_read_only_view_like_a_decoder_plane():
    padded = np.zeros((144, 320), np.uint8)  # line size 320, picture 256 wide
    barcode.draw(padded[:, :256], 777, 4)
    view = padded[:, :256]
    view.flags.writeable = False
    assert barcode.read(view, 4) == 777


def test_read_touches_only_the_strip():
    luma = np.full((720, 1280), 128, np.uint8)
    barcode.draw(luma, 123_456, 16)
    strip_w = BARCODE_CELLS * 16
    luma[:-16, :] = 255  # anything above the strip
    luma[:, strip_w:] = 0  # and right of it
    assert barcode.read(luma, 16) == 123_456


def test_default_cell_px_matches_the_verified_sizes():
    assert barcode.default_cell_px(720) == 16
    assert barcode.default_cell_px(360) == 8
    assert barcode.default_cell_px(144) == 4


def _through_vp8(tmp: Path, images: list[np.ndarray], bitrate: int) -> list[np.ndarray]:
    path = tmp / "probe.webm"
    h, w = images[0].shape[:2]
    with VideoWriter(path, w, h, bitrate=bitrate) as writer:
        for k, img in enumerate(images):
            writer.write_bgr(img, 33 * k + (k % 3))
    with av.open(str(path)) as container:
        return [f.luma.copy() for f in iter_frames(container)]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(frame_ids, min_size=3, max_size=8), seed=st.integers(0, 2**32 - 1))
def test_barcodes_survive_a_real_vp8_encode_on_noise(tmp_path, ids, seed):
    rng = np.random.default_rng(seed)
    images = []
    for fid in ids:
        img = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)  # worst case: no redundancy to exploit
        barcode.draw(img, fid, 4)
        images.append(img)
    lumas = _through_vp8(tmp_path, images, bitrate=300_000)
    assert [barcode.read(y, 4) for y in lumas] == ids


def test_barcodes_survive_720p_vp8_at_500_kbps(tmp_path):
    w, h = 1280, 720
    fx = (w / 2) / math.tan(math.radians(50))
    renderer = Renderer(City(3), w, h, fx, fx, w / 2, h / 2)
    ids = [0, 1, 2, 524_287, 524_288, MAX_FRAME_ID, 99_999, 3]
    images = []
    for k, fid in enumerate(ids):
        img = renderer.render(np.array([1.75, 10.0 + 2 * k, 2.3]), rotation(90, 0, 0)).copy()
        barcode.draw(img, fid, barcode.default_cell_px(h))
        images.append(img)
    lumas = _through_vp8(tmp_path, images, bitrate=500_000)
    assert [barcode.read(y, 16) for y in lumas] == ids
