"""The video, decoded once and streamed: barcode from the full Y plane, crop and scale while still YUV.

Per frame the Python side touches only the barcode strip of the decoded picture and the small output
picture: libavfilter crops and scales the YUV planes (and converts to full-range for JPEG), and the
output planes are handed on as NumPy views. Nothing holds more than a couple of frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.filter import Graph
from sd_common.problems import Problem
from sd_common.session_format import barcode
from sd_common.session_format.spec import MANIFEST_NAME, VIDEO_NAME
from sd_common.session_format.video import luma_view, pts_ms, stream_codec, webm_structure

from .geometry import CropPlan

_PLANAR_420 = ("yuv420p", "yuvj420p")


class VideoRejected(Exception):
    """The video cannot be processed at all; ``problems`` say why (the last is the fatal one)."""

    def __init__(self, problem: Problem, *, notes: list[Problem] | None = None) -> None:
        super().__init__(problem.message)
        self.problems = [*(notes or []), problem]


@dataclass
class VideoProbe:
    """What a demux pass (and decoding the first few frames) tells about the video."""

    codec: str
    width: int
    height: int
    pts_ms: list[int]  # every packet's pts in stream order (VP8: one packet, one picture)
    probed: int = 0  # frames decoded to look for barcodes
    barcodes_read: int = 0
    first_unreadable: bool = False  # the first frame shows no barcode (a canvas recorder's warm-up picture)
    truncated: str | None = None  # why the file looks cut, if it does
    demux_error: str | None = None
    notes: list[Problem] = field(default_factory=list)  # non-fatal findings

    @property
    def barcode_share(self) -> float:
        """Share of probed frames whose barcode read, not counting a warm-up first frame before a readable one."""
        warm_up = int(self.first_unreadable and self.barcodes_read > 0)
        counted = self.probed - warm_up
        return self.barcodes_read / counted if counted else 0.0


def _why(exc: BaseException) -> str:
    # Never echo server paths: FFmpeg errors carry the file name, their strerror does not.
    return getattr(exc, "strerror", None) or type(exc).__name__


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), "r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoRejected(Problem("video_unreadable", VIDEO_NAME,
                                    f"{VIDEO_NAME} cannot be opened as a video ({_why(exc)}); record VP8 in "
                                    "WebM with MediaRecorder")) from None


def codec_problem(ctx: av.CodecContext) -> Problem | None:
    """The problem of a stream that is not VP8 (named by its codec, not by the decoder FFmpeg chose)."""
    codec = stream_codec(ctx)
    if codec == "vp8":
        return None
    return Problem("video_codec_mismatch", VIDEO_NAME, f"{VIDEO_NAME} is coded {codec}; format v1 requires vp8")


def probe_video(path: Path, *, expected_size: tuple[int, int], cell_px: int, probe_frames: int) -> VideoProbe:
    """Checks container, codec and size, lists every packet's pts, and reads the first frames' barcodes.

    Raises VideoRejected for a video that cannot be processed at all.
    """
    if path.stat().st_size == 0:
        raise VideoRejected(Problem("video_unreadable", VIDEO_NAME, f"{VIDEO_NAME} is empty"))
    structure = webm_structure(path)
    with _open(path) as container:
        if structure.doc_type != "webm":
            raise VideoRejected(Problem("video_container_mismatch", VIDEO_NAME,
                                        f"{VIDEO_NAME} is not a WebM file (EBML DocType {structure.doc_type!r}; "
                                        f"{structure.detail})"))
        if not container.streams.video:
            raise VideoRejected(Problem("video_no_stream", VIDEO_NAME, f"{VIDEO_NAME} has no video stream"))
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec, width, height = stream_codec(ctx), ctx.width, ctx.height
        if (wrong := codec_problem(ctx)) is not None:
            raise VideoRejected(wrong)
        if (width, height) != expected_size:
            raise VideoRejected(Problem("video_resolution_mismatch", VIDEO_NAME,
                                        f"{VIDEO_NAME} is {width}x{height} but {MANIFEST_NAME} recording says "
                                        f"{expected_size[0]}x{expected_size[1]}"))
        probe = VideoProbe(codec, width, height, [],
                           truncated=structure.detail if structure.truncated else None)
        ctx.thread_count = 1
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except (av.FFmpegError, OSError, ValueError) as exc:
                probe.demux_error = _why(exc)
                break
            if packet.pts is None or packet.size == 0:
                continue
            probe.pts_ms.append(round(packet.pts * packet.time_base * 1000))
            if probe.probed < probe_frames:
                try:
                    frames = ctx.decode(packet)
                except av.FFmpegError:
                    continue
                for frame in frames:
                    if probe.probed >= probe_frames:
                        break
                    probe.probed += 1
                    if (frame.width, frame.height) == expected_size and frame.format.name in _PLANAR_420 + (
                            "yuva420p",):
                        if barcode.read(luma_view(frame), cell_px) is not None:
                            probe.barcodes_read += 1
                        elif probe.probed == 1:
                            probe.first_unreadable = True
                    elif probe.probed == 1:
                        probe.first_unreadable = True
    if not probe.pts_ms:
        notes = [truncated_problem(probe.truncated)] if probe.truncated else []
        raise VideoRejected(Problem("video_empty", VIDEO_NAME, f"{VIDEO_NAME} has no video packet"), notes=notes)
    return probe


def truncated_problem(detail: str) -> Problem:
    """The (frame-local) problem of a video file that ends early."""
    return Problem("video_truncated", VIDEO_NAME, f"{VIDEO_NAME} is cut short: {detail}; frames up to the cut "
                   "are processed")


def decoded_pictures(path: Path, threads: int, errors: list[str]) -> Iterator[av.VideoFrame]:
    """Every decodable picture of the file in stream order; rejected packets are described in ``errors``."""
    with _open(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_count = threads
        demux = container.demux(stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except (av.FFmpegError, OSError, ValueError) as exc:
                errors.append(f"demuxing stopped: {_why(exc)}")
                break
            try:
                decoded = ctx.decode(packet)
            except av.FFmpegError as exc:
                errors.append(f"packet at pts {packet.pts} ms: {_why(exc)}")
                continue
            yield from decoded


@dataclass(frozen=True)
class BarcodeTrack:
    """Per decoded picture, in the order FrameDecoder yields them: its pts and the id its barcode shows.

    ``pts_ms`` is None for a picture that cannot be used (no pts, or another size than the stream's).
    """

    pts_ms: list[int | None]
    frame_ids: list[int | None]


def read_barcode_track(path: Path, *, expected_size: tuple[int, int], cell_px: int, threads: int = 1) -> BarcodeTrack:
    """Decodes the whole video once, reading only each picture's barcode strip (timestamp mode's first pass)."""
    pts: list[int | None] = []
    ids: list[int | None] = []
    for frame in decoded_pictures(path, threads, []):
        if (frame.width, frame.height) != expected_size:
            pts.append(None)
            ids.append(None)
            continue
        if frame.format.name not in _PLANAR_420 + ("yuva420p",):
            frame = frame.reformat(format="yuv420p")
        pts.append(pts_ms(frame))
        ids.append(barcode.read(luma_view(frame), cell_px))
    return BarcodeTrack(pts, ids)


@dataclass
class DecodedFrame:
    """One decoded picture: its pts, the id its barcode shows, and the output picture's planes.

    ``y``/``u``/``v`` are views into a frame libavfilter owns (``keep`` holds it alive); they are None
    when the picture could not be scaled (a frame whose size differs from the stream's).
    """

    index: int
    pts_ms: int | None
    frame_id: int | None
    y: np.ndarray | None
    u: np.ndarray | None
    v: np.ndarray | None
    keep: object = None


def _plane(frame: av.VideoFrame, k: int) -> np.ndarray:
    plane = frame.planes[k]
    return np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


class FrameDecoder:
    """Decodes a VP8 file and crops/scales each picture to the plan's output size in a libavfilter graph."""

    def __init__(self, path: Path, plan: CropPlan, *, cell_px: int, read_barcodes: bool, threads: int = 1) -> None:
        self.path = path
        self.plan = plan
        self.cell_px = cell_px
        self.read_barcodes = read_barcodes
        self.threads = threads
        self.decode_errors: list[str] = []
        self.size_changes = 0

    def _graph(self) -> Graph:
        p = self.plan
        graph = Graph()
        src = graph.add_buffer(width=p.source_width, height=p.source_height, format="yuv420p",
                               time_base=Fraction(1, 1000))
        crop = graph.add("crop", p.filter)
        # area averaging for downscaling; bicubic when a small recording is enlarged. out_range=full:
        # JPEG (JFIF) expects full-range YCbCr, the decoder gives limited range.
        flags = "bicubic" if p.upscales else "area"
        scale = graph.add("scale", f"{p.output_width}:{p.output_height}:flags={flags}:out_range=full")
        fmt = graph.add("format", "yuvj420p")
        sink = graph.add("buffersink")
        src.link_to(crop)
        crop.link_to(scale)
        scale.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        return graph

    def frames(self) -> Iterator[DecodedFrame]:
        """Every decodable picture in stream order; packets the decoder rejects are noted and skipped."""
        graph = self._graph()
        size = (self.plan.source_width, self.plan.source_height)
        for index, frame in enumerate(decoded_pictures(self.path, self.threads, self.decode_errors)):
            yield self._convert(graph, frame, index, size)

    def _convert(self, graph: Graph, frame: av.VideoFrame, index: int, size: tuple[int, int]) -> DecodedFrame:
        t = pts_ms(frame)
        if (frame.width, frame.height) != size:
            self.size_changes += 1
            return DecodedFrame(index, t, None, None, None, None)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        fid = barcode.read(luma_view(frame), self.cell_px) if self.read_barcodes else None
        graph.push(frame)
        out = graph.pull()
        return DecodedFrame(index, t, fid, _plane(out, 0), _plane(out, 1), _plane(out, 2), out)
