"""The one-slot buffer and the CPU look backend, without a network."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import numpy as np
import pytest
from av import VideoFrame
from diffusion_peers import scene

from sd_common.session_format import barcode
from sd_diffusion.backends import BackendError, make_backend
from sd_diffusion.backends.look import MODEL, LookBackend
from sd_diffusion.slot import LatestSlot, SlotClosed
from sd_diffusion.stream import Input, Stream


async def test_the_slot_keeps_only_the_newest_and_counts_what_it_dropped():
    slot: LatestSlot[int] = LatestSlot()
    assert [slot.put(i) for i in range(5)] == [False, True, True, True, True]  # True: one was dropped
    assert await slot.get() == 4 and slot.dropped == 4 and slot.put_count == 5
    waiter = asyncio.create_task(slot.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()  # empty: get waits
    slot.put(7)
    assert await asyncio.wait_for(waiter, 1) == 7 and slot.dropped == 4
    waiter = asyncio.create_task(slot.get())
    await asyncio.sleep(0.01)
    slot.close()
    with pytest.raises(SlotClosed):
        await asyncio.wait_for(waiter, 1)
    with pytest.raises(SlotClosed):
        slot.put(1)


def test_the_look_changes_the_picture_reproducibly_and_says_it_is_not_diffusion():
    look = make_backend("look")
    assert isinstance(look, LookBackend) and look.info.model == MODEL and "not a diffusion model" in MODEL
    frame = scene(10, 320, 180)
    state = look.new_stream(320, 180, "a sunny afternoon")
    out = look.process(state, frame, 0)
    assert out.shape == frame.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(np.int16) - frame).mean()
    assert 3.0 < diff < 60.0, diff  # a look, not noise and not a copy
    assert np.array_equal(look.process(state, frame, 0), out)  # same frame and index: same output
    assert not np.array_equal(look.process(state, frame, 1), out)  # the grain moves every frame
    # warm by day, cool at night: the prompt reaches the grade
    night = look.new_stream(320, 180, "a rainy night")
    red_blue = lambda img: float(img[..., 0].mean() - img[..., 2].mean())  # noqa: E731
    assert red_blue(look.process(night, frame, 0)) < red_blue(out)
    look.set_prompt(night, "a sunny afternoon")
    assert np.array_equal(look.process(night, frame, 0), out)
    # strength 0 passes frames through
    plain = LookBackend(strength=0.0)
    assert np.array_equal(plain.process(plain.new_stream(320, 180, ""), frame, 3), frame)


def test_the_look_refuses_what_it_cannot_process():
    look = LookBackend()
    state = look.new_stream(320, 180, "")
    with pytest.raises(BackendError, match="320x180"):
        look.process(state, scene(0, 160, 90), 0)
    with pytest.raises(BackendError, match="uint8"):
        look.process(state, scene(0, 320, 180).astype(np.float32), 0)
    with pytest.raises(BackendError, match="unknown diffusion backend 'sd-turbo'; known: look, wan"):
        make_backend("sd-turbo")
    with pytest.raises(BackendError, match="strength"):
        LookBackend(strength=2.0)


@pytest.mark.parametrize("size", [(320, 180), (640, 360), (1280, 720)])
async def test_the_output_carries_the_input_frames_barcode_exactly(size):
    width, height = size
    stream = Stream("s" * 32, "session", make_backend("look"), "a sunny afternoon")
    try:
        cell = barcode.default_cell_px(height)
        for fid in (0, 1, 517, 2**20 - 1):
            frame = VideoFrame.from_ndarray(scene(fid, width, height), format="rgb24")
            frame = frame.reformat(format="yuv420p")  # as a decoder hands it over
            frame.pts, frame.time_base = 0, Fraction(1, 90000)
            (out,) = stream._make(Input(frame, 0.0))
            rgb = out.frame.to_ndarray(format="rgb24")
            assert out.frame_id == fid
            strip = rgb[height - cell:, :barcode.strip_size(cell)[0]]
            want = np.zeros_like(strip)
            barcode.draw(want, fid, cell)
            want = want[height - cell:] if want.shape[0] > cell else want
            assert np.array_equal(strip, want), fid  # pure black and white cells, the input's id
            assert barcode.read(out.frame.to_ndarray(format="yuv420p")[:height], cell) == fid
        # a frame without a readable barcode gets none drawn, and is counted
        blank = VideoFrame.from_ndarray(np.full((height, width, 3), 90, np.uint8), format="rgb24")
        (out,) = stream._make(Input(blank, 0.0))
        assert out.frame_id is None and stream.counters.barcodes_unread == 1
    finally:
        await stream.close()
