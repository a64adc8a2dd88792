"""A local stand-in for Decart's hosted Mirage: its token endpoint and its realtime WebSocket signaling.

There is no internet here, so the hosted path (the gateway's token minting, the game's direct stream)
is exercised against this instead of Decart. It speaks the messages Decart's public SDK speaks
(DecartAI/sdk, packages/sdk/src/tokens/client.ts, shared/request.ts, and, before its move to LiveKit,
realtime/client.ts, realtime/types.ts and realtime/webrtc-connection.ts; docs/diffusion.md, "Hosted
(Mirage)"):

- `POST /v1/client/tokens`, the API key in `X-API-KEY`, an optional JSON body with `expiresIn`
  (seconds, 1-3600, default 60) and `allowedModels`; answers `{"apiKey": "ek_…", "expiresAt": "…Z"}`.
  A wrong key is 401; `fail_status` makes every call answer that status (a provider outage).
- `GET /v1/stream?api_key=<client token or API key>&model=<model>`, a WebSocket of JSON messages.
  The client sends `prompt` {prompt, enhance_prompt} (answered by `prompt_ack` {prompt, success,
  error}), `offer` {sdp} (answered by `answer` {sdp}, then `session_id`), and `ice-candidate`
  {candidate: RTCIceCandidateInit or null}. The server also sends `generation_started` once the first
  frame goes out, and `error` {error} for anything it refuses. An unknown, expired or other model's
  token gets `error` and the socket is closed (code 1008): that is this stand-in's choice, the SDK
  only says that an `error` message fails the connection.

The model is the look backend (sd_diffusion.backends.look), run on each received frame, behind a delay
line of `delay_ms` (a hosted model's latency) that holds at most a few seconds of frames. `barcode`
says what happens to the game's barcode strip: "keep" copies the input's strip onto the output, as a
model that preserves it; "lose" paints it over, as a generative model that repaints those pixels does.

Run it for local play: `python -m sd_diffusion.mirage_standin --port 8765` prints the gateway settings.
Needs aiohttp (the `standin` extra), besides aiortc.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from av import VideoFrame

from sd_common.session_format import barcode
from sd_diffusion.backends.look import LookBackend

log = structlog.get_logger()

MAX_TTL_S = 3600
DEFAULT_TTL_S = 60
MAX_PROMPT_CHARS = 1000
_VIDEO_CLOCK = fractions.Fraction(1, 90000)
_MAX_LINE_FRAMES = 256  # the delay line's bound: a few seconds at any frame rate the game sends


@dataclass
class Session:
    """One realtime WebSocket session: what the client said and what the stand-in did."""

    session_id: str
    model: str
    messages: list[dict] = field(default_factory=list)  # every JSON message received, in order
    prompt: str = ""
    frames_in: int = 0
    frames_out: int = 0
    pc: RTCPeerConnection | None = None


def _iso_z(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class StandInTrack(MediaStreamTrack):
    """The returned video: the look of each received frame, sent `delay_ms` after that frame arrived."""

    kind = "video"

    def __init__(self, standin: MirageStandIn, session: Session, on_first_frame: Callable[[], None]) -> None:
        super().__init__()
        self._standin = standin
        self._session = session
        self._on_first = on_first_frame
        self._line: deque[tuple[float, np.ndarray]] = deque(maxlen=_MAX_LINE_FRAMES)
        self._ready = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self._state = None
        self._start: float | None = None

    def attach(self, source: MediaStreamTrack) -> None:
        self._reader = asyncio.ensure_future(self._read(source))

    async def _read(self, source: MediaStreamTrack) -> None:
        index = 0
        try:
            while True:
                frame = await source.recv()
                arrived = time.monotonic()
                self._session.frames_in += 1
                image = await asyncio.to_thread(self._transform, frame.to_ndarray(format="rgb24"), index)
                index += 1
                self._line.append((arrived + self._standin.delay_ms / 1000.0, image))
                self._ready.set()
        except MediaStreamError:
            pass

    def _transform(self, rgb: np.ndarray, index: int) -> np.ndarray:
        h, w = rgb.shape[:2]
        look = self._standin.look
        if self._state is None or (self._state.width, self._state.height) != (w, h):
            self._state = look.new_stream(w, h, self._session.prompt)
        if self._state.prompt != self._session.prompt:
            look.set_prompt(self._state, self._session.prompt)
        out = look.process(self._state, rgb, index)
        cell = barcode.default_cell_px(h)
        strip_w, strip_h = barcode.strip_size(cell)
        if strip_w <= w and strip_h <= h:
            strip = (slice(h - strip_h, h), slice(0, strip_w))
            if self._standin.barcode == "keep":
                out[strip] = rgb[strip]
            else:  # repainted: the strip's cells become one flat colour, which no reader takes for markers
                out[strip] = out[strip].reshape(-1, 3).mean(axis=0).astype(np.uint8)
        return out

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        while not self._line:
            self._ready.clear()
            await self._ready.wait()
        due, image = self._line.popleft()
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        if self._start is None:
            self._start = now
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = int((now - self._start) * 90000)
        frame.time_base = _VIDEO_CLOCK
        self._session.frames_out += 1
        if self._session.frames_out == 1:
            self._on_first()
        return frame

    def stop(self) -> None:
        super().stop()
        if self._reader is not None:
            self._reader.cancel()


class MirageStandIn:
    """The token endpoint and the realtime signaling of a Mirage-like provider, on loopback."""

    def __init__(self, api_key: str, *, model: str = "mirage_v2", barcode_strip: str = "keep",
                 delay_ms: float = 0.0, look_strength: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        if barcode_strip not in ("keep", "lose"):
            raise ValueError(f"barcode_strip must be keep or lose, got {barcode_strip!r}")
        self.api_key = api_key
        self.model = model
        self.barcode = barcode_strip
        self.delay_ms = delay_ms
        self.look = LookBackend(strength=look_strength)
        self.clock = clock  # unix seconds; tests move it to expire tokens
        self.fail_status: int | None = None  # every token call answers this status (an outage), when set
        self.echo_key_in_errors = False  # a careless provider: its error bodies quote the key it was sent
        self.reply_override: dict | None = None  # a correct key is answered with this body instead (malformed)
        self.tokens: dict[str, tuple[float, list[str] | None]] = {}  # token -> (expiry, allowed models)
        self.keys_seen: list[str] = []  # the X-API-KEY of every token call
        self.token_bodies: list[dict] = []
        self.sessions: list[Session] = []
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.base_url = ""

    @property
    def realtime_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/v1/stream"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/client/tokens", self._mint)
        app.router.add_get("/v1/stream", self._stream)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serves on host:port (0: a free port); returns the base URL."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        """Closes every session and the server."""
        for ws in list(self._sockets):
            await ws.close()
        for s in self.sessions:
            if s.pc is not None:
                await s.pc.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # the token endpoint ----------------------------------------------------------------------------

    async def _mint(self, request: web.Request) -> web.Response:
        key = request.headers.get("X-API-KEY", "")
        self.keys_seen.append(key)
        if self.fail_status is not None:
            words = f"stand-in outage (key {key})" if self.echo_key_in_errors else "stand-in outage"
            return web.json_response({"error": words}, status=self.fail_status)
        if key != self.api_key:
            words = f"invalid API key {key}" if self.echo_key_in_errors else "invalid API key"
            return web.json_response({"error": words}, status=401)
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body must be an object"}, status=400)
        self.token_bodies.append(body)
        if self.reply_override is not None:
            return web.json_response(self.reply_override)
        ttl = body.get("expiresIn", DEFAULT_TTL_S)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL_S:
            return web.json_response({"error": f"expiresIn must be an integer 1-{MAX_TTL_S}"}, status=400)
        models = body.get("allowedModels")
        if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)
                                   or len(models) > 20):
            return web.json_response({"error": "allowedModels must be a list of at most 20 names"}, status=400)
        token = "ek_" + secrets.token_hex(16)
        expires = self.clock() + ttl
        self.tokens[token] = (expires, models)
        return web.json_response({"apiKey": token, "expiresAt": _iso_z(expires)})

    def _refusal(self, token: str, model: str) -> str | None:
        """Why a realtime session with this token and model is refused, or None."""
        if model != self.model:
            return f"unknown model {model!r}; this provider serves {self.model!r}"
        if token == self.api_key:
            return None
        entry = self.tokens.get(token)
        if entry is None:
            return "invalid api_key"
        expires, models = entry
        if expires <= self.clock():
            return "the client token has expired"
        if models is not None and model not in models:
            return f"the client token does not allow model {model!r}"
        return None

    # the realtime signaling ------------------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        refusal = self._refusal(request.query.get("api_key", ""), request.query.get("model", ""))
        if refusal:
            await ws.send_json({"type": "error", "error": refusal})
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"unauthorized")
            self._sockets.discard(ws)
            return ws
        session = Session(session_id=secrets.token_hex(8), model=self.model)
        self.sessions.append(session)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    await ws.send_json({"type": "error", "error": "messages must be JSON"})
                    continue
                if not isinstance(data, dict):
                    await ws.send_json({"type": "error", "error": "messages must be JSON objects"})
                    continue
                session.messages.append(data)
                await self._handle(ws, session, data, request)
        finally:
            self._sockets.discard(ws)
            if session.pc is not None:
                await session.pc.close()
        return ws

    async def _handle(self, ws: web.WebSocketResponse, session: Session, data: dict, request: web.Request) -> None:
        kind = data.get("type")
        if kind == "prompt":
            prompt = data.get("prompt")
            if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
                await ws.send_json({"type": "prompt_ack", "prompt": prompt if isinstance(prompt, str) else "",
                                    "success": False, "error": f"prompt must be text of at most {MAX_PROMPT_CHARS}"})
                return
            session.prompt = prompt
            await ws.send_json({"type": "prompt_ack", "prompt": prompt, "success": True, "error": None})
        elif kind == "offer":
            await self._answer(ws, session, data, request)
        elif kind == "ice-candidate":
            candidate = data.get("candidate")
            if candidate is None or session.pc is None:
                return  # end of candidates, or before the offer (a full offer carries its own)
            try:
                c = candidate_from_sdp(str(candidate["candidate"]).removeprefix("candidate:"))
                c.sdpMid = candidate.get("sdpMid")
                c.sdpMLineIndex = candidate.get("sdpMLineIndex")
                await session.pc.addIceCandidate(c)
            except (KeyError, TypeError, ValueError) as exc:
                await ws.send_json({"type": "error", "error": f"ice-candidate could not be used: {exc}"})
        else:
            await ws.send_json({"type": "error", "error": f"unknown message type {kind!r}"})

    async def _answer(self, ws: web.WebSocketResponse, session: Session, data: dict, request: web.Request) -> None:
        sdp = data.get("sdp")
        if session.pc is not None:
            await ws.send_json({"type": "error", "error": "this session already has a stream"})
            return
        if not isinstance(sdp, str) or not sdp.startswith("v=0") or "m=video" not in sdp:
            await ws.send_json({"type": "error", "error": "offer.sdp must be an SDP offer with a video m-line"})
            return
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session.pc = pc

        def first_frame() -> None:
            if not ws.closed:
                asyncio.ensure_future(ws.send_json({"type": "generation_started"}))

        out = StandInTrack(self, session, first_frame)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                out.attach(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not ws.closed:
                await ws.close()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            pc.addTrack(out)
            await pc.setLocalDescription(await pc.createAnswer())
        except (ValueError, RuntimeError, AttributeError) as exc:
            await ws.send_json({"type": "error", "error": f"the offer could not be used: {exc}"})
            return
        await ws.send_json({"type": "answer", "sdp": pc.localDescription.sdp})
        host, port = (request.transport.get_extra_info("sockname") or ("127.0.0.1", 0))[:2]
        await ws.send_json({"type": "session_id", "session_id": session.session_id, "server_ip": host,
                            "server_port": port})


def main() -> None:
    """`python -m sd_diffusion.mirage_standin`: serve the stand-in until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default="standin-key", help="the key the gateway must send")
    parser.add_argument("--model", default="mirage_v2")
    parser.add_argument("--barcode", choices=("keep", "lose"), default="lose",
                        help="whether returned frames keep the game's barcode strip")
    parser.add_argument("--delay-ms", type=float, default=120.0, help="latency added to every frame")
    args = parser.parse_args()

    async def serve() -> None:
        standin = MirageStandIn(args.api_key, model=args.model, barcode_strip=args.barcode, delay_ms=args.delay_ms)
        base = await standin.start(args.host, args.port)
        print(f"Mirage stand-in at {base}. Gateway settings:\n"
              f"  SD_GATEWAY_HOSTED_DIFFUSION=mirage SD_GATEWAY_MIRAGE_API_KEY={args.api_key} "
              f"SD_GATEWAY_MIRAGE_API_URL={base} SD_GATEWAY_MIRAGE_REALTIME_URL={standin.realtime_url}\n"
              f"Then open the game with ?diffusion=mirage.", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await standin.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
