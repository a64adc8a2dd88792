"""Reading and writing session video with PyAV: streamed frames, millisecond pts, WebM structure.

One place for the decoder and encoder settings, so the validator, the generator and later the
processor read video the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import numpy as np

MS = Fraction(1, 1000)


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded picture: its presentation time and a view of its luma plane (valid until the next)."""

    index: int
    pts_ms: int | None
    luma: np.ndarray  # H x W uint8, a view into the decoder's buffer


def luma_view(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane of a planar YUV frame as an H x W uint8 NumPy view, without a copy."""
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def stream_codec(ctx: av.CodecContext) -> str:
    """The codec a stream is coded in (``vp8``, ``av1``), whichever decoder FFmpeg picked for it.

    ``ctx.name`` is the decoder's name: ``libvpx`` or ``vp8`` for VP8, ``libdav1d`` for AV1.
    """
    return ctx.codec.canonical_name


def pts_ms(frame: av.VideoFrame) -> int | None:
    """The frame's presentation time in whole milliseconds, or None when the container has none."""
    if frame.pts is None or frame.time_base is None:
        return None
    return round(frame.pts * frame.time_base * 1000)


def iter_frames(container: av.container.InputContainer, *, threads: int = 1,
                errors: list[str] | None = None) -> Iterator[DecodedFrame]:
    """Decodes the first video stream picture by picture; never holds more than the decoder does.

    With ``errors`` given, a packet the decoder rejects is described there and decoding goes on with
    the next packet (VP8 recovers at the next key frame); without it, the error is raised.
    """
    stream = container.streams.video[0]
    stream.codec_context.thread_count = threads
    index = 0
    for packet in container.demux(stream):
        try:
            frames = stream.codec_context.decode(packet)
        except av.FFmpegError as exc:
            if errors is None:
                raise
            errors.append(f"packet at pts {packet.pts} ms: {exc.strerror or type(exc).__name__}")
            continue
        for frame in frames:
            if frame.format.name not in ("yuv420p", "yuvj420p", "yuva420p"):
                frame = frame.reformat(format="yuv420p")
            yield DecodedFrame(index=index, pts_ms=pts_ms(frame), luma=luma_view(frame))
            index += 1


class VideoWriter:
    """Encodes frames into a WebM file with caller-chosen millisecond pts, as a browser recorder does.

    ``speed`` options favour time over size: the generator and tests need many sessions quickly.
    """

    def __init__(self, path: Path, width: int, height: int, *, codec: str = "libvpx",
                 bitrate: int = 2_000_000, fps_hint: int = 30, realtime: bool = True) -> None:
        # live=1: no duration, cues or seek head in the header, like MediaRecorder's output.
        self._container = av.open(str(path), "w", format="webm", options={"live": "1"})
        stream = self._container.add_stream(codec, rate=fps_hint)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = MS
        stream.codec_context.time_base = MS
        stream.bit_rate = bitrate
        stream.codec_context.thread_count = 1
        if realtime:
            speed = "8" if codec == "libvpx-vp9" else "16"
            stream.codec_context.options = {"deadline": "realtime", "cpu-used": speed, "lag-in-frames": "0"}
        self._stream = stream
        self.width, self.height = width, height

    def write_bgr(self, image: np.ndarray, pts_ms: int) -> None:
        """Encodes one H x W x 3 BGR image shown from ``pts_ms``."""
        import cv2

        self.write_i420(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), pts_ms)

    def write_i420(self, planes: np.ndarray, pts_ms: int) -> None:
        """Encodes one (H*3/2) x W planar I420 image shown from ``pts_ms``."""
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = int(pts_ms), MS
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flushes the encoder and finishes the file."""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- WebM (EBML) structure ---------------------------------------------------------------------------

_EBML_ID = 0x1A45DFA3
_DOCTYPE_ID = 0x4282
_SEGMENT_ID = 0x18538067
_CLUSTER_ID = 0x1F43B675


@dataclass(frozen=True)
class WebmStructure:
    """What a walk over the element headers found; no payload is read."""

    doc_type: str | None
    truncated: bool
    detail: str


class _EbmlError(Exception):
    pass


def _read_vint(f, *, keep_marker: bool) -> tuple[int, int, bool]:
    """(value, length in bytes, all value bits set) of one EBML variable-length integer."""
    first = f.read(1)
    if not first:
        raise EOFError
    b = first[0]
    if b == 0:
        raise _EbmlError("invalid EBML variable-length integer")
    length = 8 - b.bit_length() + 1
    rest = f.read(length - 1)
    if len(rest) < length - 1:
        raise EOFError
    value = b if keep_marker else b & ((1 << (8 - length)) - 1)
    for c in rest:
        value = (value << 8) | c
    all_ones = not keep_marker and value == (1 << (7 * length)) - 1
    return value, length, all_ones


def webm_structure(path: Path) -> WebmStructure:
    """Walks the EBML element headers: the DocType, and whether an element runs past the end of file.

    Browser recordings leave the segment and clusters of unknown size, so a file cut at an element
    boundary looks complete; one cut inside an element does not.
    """
    size = os.path.getsize(path)
    doc_type: str | None = None
    with open(path, "rb") as f:
        try:
            ebml_id, _, _ = _read_vint(f, keep_marker=True)
            if ebml_id != _EBML_ID:
                return WebmStructure(None, False, "the file does not start with an EBML header")
            header_size, _, unknown = _read_vint(f, keep_marker=False)
            if unknown or header_size > 4096:
                return WebmStructure(None, False, "the EBML header has no usable size")
            header_end = f.tell() + header_size
            while f.tell() < header_end:
                eid, _, _ = _read_vint(f, keep_marker=True)
                esize, _, _ = _read_vint(f, keep_marker=False)
                payload = f.read(esize)
                if len(payload) < esize:
                    raise EOFError
                if eid == _DOCTYPE_ID:
                    doc_type = payload.rstrip(b"\x00").decode("ascii", "replace")
            f.seek(header_end)
            seg_id, _, _ = _read_vint(f, keep_marker=True)
            if seg_id != _SEGMENT_ID:
                return WebmStructure(doc_type, False, "no Segment follows the EBML header")
            seg_size, _, seg_unknown = _read_vint(f, keep_marker=False)
            seg_end = size if seg_unknown else f.tell() + seg_size
            if seg_end > size:
                return WebmStructure(doc_type, True, f"the Segment declares {seg_end} bytes; the file has {size}")
            while f.tell() < seg_end:
                start = f.tell()
                eid, _, _ = _read_vint(f, keep_marker=True)
                esize, _, unknown = _read_vint(f, keep_marker=False)
                if unknown:
                    if eid != _CLUSTER_ID:
                        return WebmStructure(doc_type, False, f"element {eid:#x} at byte {start} has "
                                             "unknown size; structure not checked further")
                    continue  # an open-ended cluster: its blocks follow as if they were siblings
                end = f.tell() + esize
                if end > seg_end:
                    return WebmStructure(doc_type, True, f"element {eid:#x} at byte {start} needs "
                                         f"{end - start} bytes; only {seg_end - start} remain")
                f.seek(end)
        except EOFError:
            return WebmStructure(doc_type, True,
                                 "the file ends inside an element header")
        except _EbmlError as exc:
            return WebmStructure(doc_type, False, str(exc))
    return WebmStructure(doc_type, False, "complete")
