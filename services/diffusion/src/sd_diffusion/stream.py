"""One player's stream: the game's frames in, the backend's frames out, never queued.

    browser track ──recv──▶ [input slot: newest only] ──model thread──▶ [output slot: newest only] ──▶ OutputTrack.recv ──▶ browser

- Receiving runs as fast as frames arrive; each goes into a one-slot buffer, replacing the frame the
  model has not taken yet (`inputs_dropped`). So when the model falls behind, the oldest input is
  dropped and the model always starts on the newest frame: latency stays bounded instead of growing.
- The model runs in one worker thread per stream (the event loop never waits on it). It reads the
  input's frame-index barcode from the luma plane, runs the backend, and draws the same barcode,
  exactly, on the output: the game logs that id as `diffusion_frame_id` for the frame it shows.
- The output track hands the sender the newest generated frame; one it never took is counted in
  `outputs_dropped`. Frame age is measured per frame from input arrival to the moment the sender takes
  the output made from it.
- A chunked backend (a causal video model) returns several frames at once, each with the input it was
  made from. The output slot then holds that chunk: the track sends its frames in order, spaced as
  their inputs arrived, and a newer chunk replaces what is left of the one being sent (those frames
  count as dropped). So the output still never lags by more than one chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import structlog
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from sd_common.session_format import barcode
from sd_diffusion import metrics
from sd_diffusion.backends import Backend, ChunkedBackend
from sd_diffusion.slot import LatestSlot, SlotClosed

log = structlog.get_logger()

VIDEO_CLOCK = 90_000  # RTP's video clock
_MAX_PACING_GAP_S = 0.1  # frames of one chunk are sent at most this far apart
_WINDOW = 600  # recent frames kept for the stats' percentiles


@dataclass
class Input:
    frame: VideoFrame
    arrived: float  # time.monotonic()


@dataclass
class Output:
    frame: VideoFrame
    arrived: float  # the input's arrival
    frame_id: int | None
    ready: float = 0.0  # time.monotonic() when the model thread had made it


# The stages of the media path timed per frame (StreamStats.stages, sd_diffusion_stage_seconds). aiortc's
# own VP8 decode and encode run inside its track machinery and are not among them (they show in frame_age).
STAGES = ("queued", "decode", "model", "encode", "send_wait")
# A backend may time its own parts (the wan backend: vae_encode, denoise, vae_decode) in a dict
# `stage_s` on the stream state it made; they are recorded as "model.<name>" and the dict is cleared.
BACKEND_STAGE_PREFIX = "model."


def _summary(values: deque[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0, "count": 0}
    a = np.fromiter(values, dtype=np.float64) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "max_ms": float(a.max()), "count": len(a)}


def _luma(frame: VideoFrame) -> np.ndarray:
    """The frame's luma plane (H x W uint8): a view of the decoder's Y plane when it is YUV 4:2:0, so the
    barcode reader touches only its strip; other formats are converted."""
    if frame.format.name != "yuv420p":
        return frame.to_ndarray(format="yuv420p")[:frame.height]
    plane = frame.planes[0]
    return np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, :frame.width]


@dataclass
class StreamCounters:
    frames_in: int = 0
    frames_out: int = 0
    barcodes_unread: int = 0
    first_in: float | None = None
    last_in: float | None = None
    first_out: float | None = None
    last_out: float | None = None
    frame_age_s: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    model_s: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))
    stage_s: dict[str, deque[float]] = field(default_factory=dict)  # per stage (STAGES, model.*)

    def stage(self, name: str, seconds: float) -> None:
        """One frame's (or one call's) time in a stage."""
        self.stage_s.setdefault(name, deque(maxlen=_WINDOW)).append(seconds)


class OutputTrack(MediaStreamTrack):
    """The transformed video the browser receives: the newest generated frames, each sent once."""

    kind = "video"

    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self._stream = stream
        self.slot: LatestSlot[list[Output]] = LatestSlot()
        self._sending: deque[Output] = deque()  # what is left of the chunk being sent
        self._previous: Output | None = None  # the frame sent last from that chunk
        self._sent_at = 0.0
        self._t0: float | None = None
        self._last_put = 0  # frames in the chunk put last (dropped if a newer one replaces it untaken)
        self.dropped = 0  # generated frames the sender never took

    def put(self, outputs: list[Output]) -> int:
        """Offers the newest chunk (one frame for a frame backend); returns the frames it replaced."""
        dropped = self._last_put if self.slot.put(outputs) else 0
        self._last_put = len(outputs)
        self._count_dropped(dropped)
        return dropped

    def _count_dropped(self, n: int) -> None:
        if n:
            self.dropped += n
            metrics.OUTPUTS_DROPPED.labels(self._stream.backend.info.name).inc(n)

    async def recv(self) -> VideoFrame:
        if self.slot.ready or not self._sending:
            try:
                chunk = await self.slot.get()
            except SlotClosed:
                self.stop()
                raise MediaStreamError from None
            self._count_dropped(len(self._sending))  # a newer chunk replaces the rest of this one
            self._sending, self._previous = deque(chunk), None
        out = self._sending.popleft()
        if self._previous is not None:  # the next frame of a chunk: spaced as its input arrived
            gap = min(max(out.arrived - self._previous.arrived, 0.0), _MAX_PACING_GAP_S)
            wait = self._sent_at + gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        self._previous = out if self._sending else None
        now = time.monotonic()
        self._sent_at = now
        if self._t0 is None:
            self._t0 = now
        frame = out.frame
        frame.pts = int((now - self._t0) * VIDEO_CLOCK)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        self._stream.sent(out, now)
        return frame


class Stream:
    """The media path of one peer connection; `attach(track)` starts it, `close()` ends it."""

    def __init__(self, stream_id: str, session_id: str, backend: Backend, prompt: str) -> None:
        self.stream_id = stream_id
        self.session_id = session_id
        self.backend = backend
        self._chunked = isinstance(backend, ChunkedBackend)  # push() a chunk at a time, not process()
        self.prompt = prompt
        self.created = time.monotonic()
        self.state = "connecting"
        self.inputs: LatestSlot[Input] = LatestSlot()
        self.output = OutputTrack(self)
        self.counters = StreamCounters()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{stream_id[:8]}")
        self._model_state: Any = None
        self._size: tuple[int, int] | None = None
        self._prompt_changed = False
        self._index = 0
        self._waiting: dict[int, tuple[int | None, float]] = {}  # a chunked backend's inputs: id, arrival
        self._tasks: list[asyncio.Task] = []
        self._closed = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------------------

    def attach(self, track: MediaStreamTrack) -> None:
        """Starts receiving from the browser's video track and generating."""
        if self._tasks:
            return  # one input track per stream; a second video track is ignored
        self._tasks = [asyncio.create_task(self._receive(track), name=f"receive-{self.stream_id}"),
                       asyncio.create_task(self._generate(), name=f"generate-{self.stream_id}")]

    async def close(self) -> None:
        """Stops both loops and the worker thread; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.state = "closed"
        self.inputs.close()
        self.output.slot.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the frames the model last took."""
        return self._size

    def set_prompt(self, prompt: str) -> None:
        """The next frame the model starts uses `prompt`."""
        self.prompt = prompt
        self._prompt_changed = True

    def idle_s(self, now: float) -> float:
        """Seconds since the last input frame (since creation before the first)."""
        return now - (self.counters.last_in or self.created)

    # --- the two loops -------------------------------------------------------------------------------

    async def _receive(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                c = self.counters
                c.frames_in += 1
                c.first_in = c.first_in or now
                c.last_in = now
                if self.inputs.put(Input(frame, now)):
                    metrics.INPUTS_DROPPED.labels(self.backend.info.name).inc()
                metrics.FRAMES.labels(self.backend.info.name, "in").inc()
        except MediaStreamError:
            log.info("input track ended", stream_id=self.stream_id)
            self.inputs.close()
        except SlotClosed:
            pass

    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await self.inputs.get()
                self.state = "streaming"
                try:
                    out = await loop.run_in_executor(self._executor, self._make, item)
                except RuntimeError as exc:  # the executor shut down under us: the stream is closing
                    if self.closed:
                        return
                    raise exc
                if out:
                    self.output.put(out)
        except SlotClosed:
            self.output.slot.close()
        except Exception:
            log.exception("the model failed; closing the stream", stream_id=self.stream_id)
            self.output.slot.close()
            raise

    def _make(self, item: Input) -> list[Output]:
        """In the worker thread: barcode, model, barcode again; the outputs ready now (a chunked
        backend returns none until its chunk is complete, then the whole chunk)."""
        name = self.backend.info.name
        t0 = time.perf_counter()
        queued = time.monotonic() - item.arrived  # in the input slot, waiting for the model thread
        frame = item.frame
        w, h = frame.width, frame.height
        luma = _luma(frame)
        cell = barcode.default_cell_px(h)
        frame_id = barcode.read(luma, cell)
        rgb = frame.to_ndarray(format="rgb24")
        t1 = time.perf_counter()
        if self._size != (w, h):
            self._model_state = self.backend.new_stream(w, h, self.prompt)
            self._size, self._prompt_changed = (w, h), False
            self._waiting.clear()
        elif self._prompt_changed:
            self.backend.set_prompt(self._model_state, self.prompt)
            self._prompt_changed = False
        if frame_id is None:
            self.counters.barcodes_unread += 1
        index, self._index = self._index, self._index + 1
        if self._chunked:
            self._waiting[index] = (frame_id, item.arrived)
            made = []
            for k, image in self.backend.push(self._model_state, rgb, index):
                if k not in self._waiting:
                    raise RuntimeError(f"the {name} backend returned a frame for input {k}, which is not waiting")
                for skipped in [j for j in self._waiting if j < k]:  # inputs the backend made nothing of
                    del self._waiting[skipped]
                made.append((image, *self._waiting.pop(k)))
        else:
            made = [(self.backend.process(self._model_state, rgb, index), frame_id, item.arrived)]
        t2 = time.perf_counter()
        outputs = []
        for image, fid, arrived in made:
            if image.shape != rgb.shape:
                raise RuntimeError(f"the {name} backend returned {image.shape} for a {rgb.shape} frame")
            image = np.ascontiguousarray(image)
            if fid is not None:
                barcode.draw(image, fid, cell)
            outputs.append(Output(VideoFrame.from_ndarray(image, format="rgb24"), arrived, fid))
        t3 = time.perf_counter()
        ready = time.monotonic()
        for out in outputs:
            out.ready = ready
        timed = [("queued", queued), ("decode", t1 - t0), ("model", t2 - t1), ("encode", t3 - t2)]
        parts = getattr(self._model_state, "stage_s", None)
        if isinstance(parts, dict):
            timed += [(BACKEND_STAGE_PREFIX + k, float(v)) for k, v in parts.items()]
            parts.clear()
        for stage, seconds in timed:
            metrics.STAGE_SECONDS.labels(name, stage).observe(seconds)
            self.counters.stage(stage, seconds)
        self.counters.model_s.append(t2 - t1)
        return outputs

    # --- accounting ----------------------------------------------------------------------------------

    def sent(self, out: Output, now: float) -> None:
        """The sender took `out` at `now`."""
        c = self.counters
        c.frames_out += 1
        c.first_out = c.first_out or now
        c.last_out = now
        age = now - out.arrived
        c.frame_age_s.append(age)
        if out.ready:
            c.stage("send_wait", now - out.ready)
            metrics.STAGE_SECONDS.labels(self.backend.info.name, "send_wait").observe(now - out.ready)
        metrics.FRAME_AGE_SECONDS.labels(self.backend.info.name).observe(age)
        metrics.FRAMES.labels(self.backend.info.name, "out").inc()

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """The stream's StreamStats as a dict (the proto's field names)."""
        now = time.monotonic() if now is None else now
        c = self.counters

        def fps(n: int, first: float | None, last: float | None) -> float:
            return (n - 1) / (last - first) if first is not None and last is not None and last > first else 0.0

        return {"stream_id": self.stream_id, "session_id": self.session_id, "state": self.state,
                "frames_in": c.frames_in, "frames_out": c.frames_out, "inputs_dropped": self.inputs.dropped,
                "outputs_dropped": self.output.dropped, "barcodes_unread": c.barcodes_unread,
                "fps_in": fps(c.frames_in, c.first_in, c.last_in), "fps_out": fps(c.frames_out, c.first_out, c.last_out),
                "frame_age": _summary(c.frame_age_s), "model": _summary(c.model_s),
                "stages": {k: _summary(v) for k, v in sorted(c.stage_s.items())},
                "age_s": now - self.created, "prompt": self.prompt}
