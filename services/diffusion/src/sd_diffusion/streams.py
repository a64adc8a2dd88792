"""The pod's streams: one slot and one aiortc peer connection per player, freed as soon as it ends.

CreateStream takes a slot before anything is awaited (so two offers never share the last one),
answers the browser's SDP offer with the transformed track, and the stream runs until one of:
CloseStream; the peer connection going `failed` or `closed` (ICE lost, the tab closed its side); the
browser's track ending; no input frame for `idle_timeout_s`; no frame at all within
`connect_timeout_s`. Each path ends in `close(stream_id, reason)`, which frees the slot and closes
the peer connection; nothing else holds one.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import vpx

from sd_common.ice import ice_servers_for
from sd_diffusion import metrics
from sd_diffusion.backends import Backend
from sd_diffusion.errors import InvalidOffer, NoFreeSlot, StreamNotFound
from sd_diffusion.settings import DiffusionSettings
from sd_diffusion.stream import Stream

log = structlog.get_logger()

_MAX_SDP_BYTES = 64 * 1024


def configure_video_encoder(max_bitrate_bps: int, max_fps: int) -> None:
    """Raises aiortc's VP8 ceilings (module constants, its only knobs): its 1.5 Mbps / 30 fps blur 720p."""
    vpx.MAX_BITRATE = max_bitrate_bps
    vpx.DEFAULT_BITRATE = min(max(vpx.MIN_BITRATE, max_bitrate_bps // 3), max_bitrate_bps)
    vpx.MAX_FRAME_RATE = max_fps


class StreamManager:
    """Slots, peer connections and streams of one pod."""

    def __init__(self, settings: DiffusionSettings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.streams: dict[str, Stream] = {}
        self.peers: dict[str, RTCPeerConnection] = {}
        self._reserved = 0
        self._watchdog: asyncio.Task | None = None
        configure_video_encoder(settings.video_max_bitrate_bps, settings.video_max_fps)

    # --- capacity ------------------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Slots taken (streams being created count)."""
        return len(self.streams) + self._reserved

    @property
    def peer_connections(self) -> int:
        return len(self.peers)

    def _ice(self, stream_id: str) -> RTCConfiguration:
        """The pod's ICE servers for one stream: the configured ones, and TURN with credentials of its own."""
        st = self.settings
        secret = st.turn_secret.get_secret_value() if st.turn_secret else None
        servers, _ = ice_servers_for(st.ice_servers, st.turn_urls, secret, f"diffusion-{stream_id[:16]}", st.turn_ttl_s)
        return RTCConfiguration(iceServers=[RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                                            for s in servers])

    # --- create and close ----------------------------------------------------------------------------

    async def create(self, session_id: str, sdp_offer: str, prompt: str) -> tuple[str, str]:
        """(stream_id, SDP answer) for a browser's offer; NoFreeSlot or InvalidOffer otherwise."""
        if not sdp_offer.startswith("v=0") or len(sdp_offer.encode()) > _MAX_SDP_BYTES:
            raise InvalidOffer("sdp_offer must be an SDP offer (starting 'v=0') of at most 64 KiB")
        if "m=video" not in sdp_offer:
            raise InvalidOffer("the offer has no video: send the game's canvas track")
        if self.active >= self.settings.max_streams:
            metrics.BUSY.inc()
            raise NoFreeSlot(f"all {self.settings.max_streams} diffusion streams of this pod are in use; "
                             f"try again in {self.settings.busy_retry_after_s:g} s",
                             self.settings.busy_retry_after_s)
        self._reserved += 1
        stream_id = uuid.uuid4().hex
        pc = RTCPeerConnection(self._ice(stream_id))
        stream = Stream(stream_id, session_id, self.backend, prompt)
        try:
            @pc.on("track")
            def on_track(track) -> None:
                if track.kind == "video":
                    stream.attach(track)

                    @track.on("ended")
                    async def on_ended() -> None:
                        await self.close(stream_id, "input_ended")

            @pc.on("connectionstatechange")
            async def on_state() -> None:
                if pc.connectionState in ("failed", "closed"):
                    await self.close(stream_id, f"peer_{pc.connectionState}")

            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp_offer, type="offer"))
            except (ValueError, KeyError, IndexError) as exc:
                raise InvalidOffer(f"the SDP offer cannot be used: {exc}") from None
            pc.addTrack(stream.output)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except BaseException:
            self._reserved -= 1
            await stream.close()
            await pc.close()
            raise
        self._reserved -= 1
        self.streams[stream_id] = stream
        self.peers[stream_id] = pc
        self._gauges()
        log.info("stream created", stream_id=stream_id, session_id=session_id, backend=self.backend.info.name)
        return stream_id, pc.localDescription.sdp

    async def close(self, stream_id: str, reason: str = "closed") -> bool:
        """Ends a stream and frees its slot; False when there was none of that id."""
        stream = self.streams.pop(stream_id, None)
        pc = self.peers.pop(stream_id, None)
        if stream is None and pc is None:
            return False
        self._gauges()
        metrics.STREAMS_CLOSED.labels(reason).inc()
        if stream is not None:
            c = stream.counters
            log.info("stream closed", stream_id=stream_id, reason=reason, frames_in=c.frames_in,
                     frames_out=c.frames_out, inputs_dropped=stream.inputs.dropped, barcodes_unread=c.barcodes_unread,
                     size=list(stream.size) if stream.size else None)
        else:
            log.info("stream closed", stream_id=stream_id, reason=reason)
        if stream is not None:
            await stream.close()
        if pc is not None:
            await pc.close()
        return True

    def get(self, stream_id: str) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None:
            raise StreamNotFound(f"no stream {stream_id!r} on this pod (it closed, or never existed)")
        return stream

    def _gauges(self) -> None:
        metrics.STREAMS_ACTIVE.set(len(self.streams))
        metrics.PEER_CONNECTIONS.set(len(self.peers))

    # --- watchdog ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._watchdog = asyncio.create_task(self._watch(), name="stream-watchdog")

    async def stop(self) -> None:
        """Closes every stream (the service is stopping)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for stream_id in list(self.streams):
            await self.close(stream_id, "shutdown")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watchdog_interval_s)
            now = time.monotonic()
            for stream_id, stream in list(self.streams.items()):
                if stream.counters.last_in is None:
                    if now - stream.created > self.settings.connect_timeout_s:
                        await self.close(stream_id, "connect_timeout")
                elif stream.idle_s(now) > self.settings.idle_timeout_s:
                    await self.close(stream_id, "idle_timeout")
                elif stream.closed:
                    await self.close(stream_id, "stream_ended")
