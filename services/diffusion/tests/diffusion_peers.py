"""A browser-like aiortc peer that drives the diffusion service, and the barcoded scene it sends."""

from __future__ import annotations

import asyncio
import fractions
import time

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from sd_common.session_format import barcode
from scale_diffusion.diffusion.v1 import diffusion_pb2 as pb


def scene(frame_id: int, width: int, height: int) -> np.ndarray:
    """A moving gradient with a bright patch (so the look's bloom has something), barcoded with `frame_id`."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = ((x + frame_id * 3) % 256).astype(np.uint8)
    img[..., 1] = (y * 0.8 + 20).astype(np.uint8)
    img[..., 2] = ((x[::-1] * 0.5 + y * 0.3) % 256).astype(np.uint8)
    cx = (frame_id * 5) % max(1, width - 40)
    img[height // 4:height // 4 + 30, cx:cx + 40] = 250
    barcode.draw(img, frame_id, barcode.default_cell_px(height))
    return img


class GameTrack(MediaStreamTrack):
    """What the game sends: one barcoded frame per tick at `fps`, ids 0, 1, 2, …; `sent` maps id → time."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 180, fps: float = 30.0) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.next_id = 0
        self.sent: dict[int, float] = {}
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.next_id / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = VideoFrame.from_ndarray(scene(self.next_id, self.width, self.height), format="rgb24")
        frame.pts = self.next_id * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent[self.next_id] = time.monotonic()
        self.next_id += 1
        return frame


class Player:
    """A browser-like peer: sends a GameTrack, receives the service's track, reads each frame's barcode."""

    def __init__(self, width: int = 320, height: int = 180, fps: float = 30.0) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = GameTrack(width, height, fps)
        self.received: list[tuple[int | None, float, int]] = []  # (barcode id, arrival, newest id sent then)
        self.frames: list[np.ndarray] = []
        self._reader: asyncio.Task | None = None
        self.first_frame = asyncio.Event()

    async def offer(self) -> str:
        self.pc.addTrack(self.track)

        @self.pc.on("track")
        def on_track(track) -> None:
            self._reader = asyncio.ensure_future(self._read(track))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def _read(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                luma = frame.to_ndarray(format="yuv420p")[:frame.height]
                fid = barcode.read(luma, barcode.default_cell_px(frame.height))
                self.received.append((fid, now, self.track.next_id - 1))
                if len(self.frames) < 3:
                    self.frames.append(frame.to_ndarray(format="rgb24"))
                self.first_frame.set()
        except MediaStreamError:
            pass

    async def wait_frames(self, n: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < n:
            assert time.monotonic() < deadline, f"only {len(self.received)} of {n} frames came back"
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.track.stop()
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()


async def connect(stub, player: Player, session_id: str = "s1", prompt: str = "a sunny afternoon"):
    resp = await stub.CreateStream(pb.CreateStreamRequest(session_id=session_id, sdp_offer=await player.offer(),
                                                          prompt=prompt), timeout=10)
    await player.answer(resp.sdp_answer)
    return resp
