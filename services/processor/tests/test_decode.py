"""The video checks: the codec is judged by what the stream is coded in, not by the decoder's name."""

from __future__ import annotations

import av
import numpy as np
import pytest
from sd_common.session_format.video import VideoWriter, stream_codec
from sd_processor.decode import VideoRejected, codec_problem, probe_video


def _write(path, codec: str, n: int = 6) -> None:
    with VideoWriter(path, 256, 144, codec=codec, realtime=codec == "libvpx") as w:
        for i in range(n):
            w.write_bgr(np.full((144, 256, 3), 30 + 30 * i, np.uint8), 10 + 33 * i)


def test_vp8_passes_whichever_decoder_reads_it(tmp_path):
    video = tmp_path / "video.webm"
    _write(video, "libvpx")
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
    # FFmpeg's own VP8 decoder (PyAV's default) and libvpx's decode the same stream; both are VP8.
    for decoder in ("vp8", "libvpx"):
        ctx = av.CodecContext.create(decoder, "r")
        assert ctx.name == decoder and stream_codec(ctx) == "vp8"
        assert codec_problem(ctx) is None
        frames = [f for p in packets for f in ctx.decode(p)]
        assert len(frames) == 6 and (frames[0].width, frames[0].height) == (256, 144)


def test_another_codec_is_named_by_its_codec_not_its_decoder(tmp_path):
    video = tmp_path / "video.webm"
    _write(video, "libsvtav1")
    with av.open(str(video)) as container:
        assert container.streams.video[0].codec_context.name == "libdav1d"  # the decoder PyAV picks
    with pytest.raises(VideoRejected) as caught:
        probe_video(video, expected_size=(256, 144), cell_px=4, probe_frames=3)
    problem = caught.value.problems[-1]
    assert problem.code == "video_codec_mismatch"
    assert problem.message == "video.webm is coded av1; format v1 requires vp8"
    assert codec_problem(av.CodecContext.create("libvpx-vp9", "r")).message.startswith("video.webm is coded vp9;")


def test_the_warm_up_frame_does_not_count_against_the_probe_share():
    from sd_processor.decode import VideoProbe

    # A 2-frame probe of a short session: the warm-up picture, then frame 0 with its barcode.
    assert VideoProbe("vp8", 256, 144, [], probed=2, barcodes_read=1, first_unreadable=True).barcode_share == 1.0
    assert VideoProbe("vp8", 256, 144, [], probed=2, barcodes_read=1, first_unreadable=False).barcode_share == 0.5
    assert VideoProbe("vp8", 256, 144, [], probed=3, barcodes_read=0, first_unreadable=True).barcode_share == 0.0
