"""The wan backend: StreamDiffusionV2-style causal video-to-video, chunk by chunk (a ChunkedBackend).

Per stream:
1. `push` collects input frames into chunks: `first_chunk_frames` (1 + 4k) first, then `chunk_frames`.
2. A full chunk is resized to the model's size (a multiple of 16 pixels), encoded by the streaming VAE,
   and noised SDEdit-style: noise*s + latent*(1-s). s starts at `noise_scale` and drops with motion
   (d: the largest frame-to-frame RMS difference over motion_full_scale, at most 1):
   s = (noise_scale - motion_gain*d)*(1-m) + s_prev*m. The first
   timestep the model is told is 1000*s - 100 (StreamDiffusionV2's mapping: s = 0.8 -> t = 700); the
   later ones are step_list[1:num_steps].
3. Each model call advances every chunk in flight by one denoising step (stream batching): the newest
   at step 0, the one before at step 1, …, so once the pipeline is full each call finishes one chunk.
   A step predicts the clean latent x0 = x - sigma*flow and re-noises it to the next step's sigma
   (sigma = t/1000) with fresh noise; after the last step x0 is decoded.
4. Every denoising step has its own KV caches (one per block): a chunk at step j reads the keys of the
   earlier chunks as they were at step j. So a chunk sees the same context whether its steps ran in a
   batch with other chunks or one after another (`stream_batch=False`), and the two give the same frames.
5. The finished chunk is decoded by the VAE, or by the tiny TAEHV decoder when `tiny_vae_decoder` is
   set (taehv.py: the same frame counts). Its frames are resized back to the input size and returned
   paired with the indices of the input frames they were made from, in input order.

With `devices` (two or more) the transformer's blocks are a pipeline over them (pipeline.py) and a
step's chunks go into it as one micro-batch each, in flight on different stages at once, instead of
one batch: the frames are then exactly those of `stream_batch=False` (the same one-chunk calls, on the
same caches), returned on the same pushes as with stream batching.

Noise comes from a generator per chunk, seeded by (seed, chunk number): a stream is reproducible.
The prompt's text embedding and its cross-attention keys and values are computed once per prompt
(PromptEmbeddings, TextContext) and fixed per chunk when
the chunk's last frame arrives; set_prompt takes effect from the next chunk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from sd_diffusion.backends import BackendError, BackendInfo, torch_device
from sd_diffusion.backends.wan.config import WanConfig
from sd_diffusion.backends.wan.model import CausalWanTransformer, FrameKVCache, TextContext
from sd_diffusion.backends.wan.taehv import build_tiny_decoder
from sd_diffusion.backends.wan.pipeline import ModelCall, PipelineParallelWan, resolve_devices
from sd_diffusion.backends.wan.vae import StreamingVAE, VAEStream
from sd_diffusion.backends.wan.weights import PromptEmbeddings, load_parts, random_parts

Ready = list[tuple[int, np.ndarray]]  # (index of the input frame, output frame H x W x 3 uint8)


@dataclass
class Chunk:
    """One chunk in flight: its latents at the step it has reached."""

    number: int  # the stream's chunk count, 0 first
    indices: list[int]  # its input frames' indices
    first_latent_id: int  # the stream's number of its first latent frame
    latents: torch.Tensor  # 1 x channels x latent frames x h x w, at `step`'s noise level
    text: TextContext  # its prompt's cross-attention keys and values
    sigmas: list[float]  # the noise level at each step
    timesteps: list[float]  # what the model is told at each step
    generator: torch.Generator
    step: int = 0


@dataclass
class WanStream:
    """Per-stream state: the frames waiting for a chunk, the chunks in flight, the caches."""

    width: int
    height: int
    model_width: int
    model_height: int
    prompt: str
    text: TextContext
    caches: list[list[FrameKVCache]]  # [denoising step][block]
    vae: VAEStream
    noise_scale: float
    frames: list[np.ndarray] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    in_flight: list[Chunk] = field(default_factory=list)  # oldest first
    last_frame: np.ndarray | None = None  # the previous chunk's last frame (float, model size)
    chunks: int = 0
    latent_frames: int = 0
    model_calls: int = 0
    noise_scales: list[float] = field(default_factory=list)  # s per chunk (the tests read it)
    # seconds in each part since the server last read them (sd_diffusion.stream records and clears them)
    stage_s: dict[str, float] = field(default_factory=dict)


class WanBackend:
    """See the module docstring. Shared by a pod's streams; each stream is driven by one thread."""

    def __init__(self, config: WanConfig) -> None:
        self.config = config
        devices = resolve_devices(config.devices, config.num_layers) if config.devices else []
        self.device = devices[0] if devices else torch_device(config.device, "wan")
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        # the tiny TAEHV decoder decodes instead of the VAE's own (which still encodes); built first, so a
        # missing file is named before the large weights load
        tiny = None if config.tiny_vae_decoder is None else build_tiny_decoder(
            config.tiny_vae_decoder, config.latent_channels, config.seed).to(self.device, self.dtype)
        load_to = torch.device("cpu") if devices else self.device  # the pipeline places the transformer itself
        if config.weights_dir is not None:
            parts = load_parts(Path(config.weights_dir), load_to, self.dtype)
            model = f"Wan2.1-T2V causal (StreamDiffusionV2-style), weights {config.weights_dir}, {config.num_steps} steps"
        else:
            parts = random_parts(config, load_to, self.dtype, seed=config.seed)
            model = f"wan random weights ({config.num_layers} layers x {config.num_heads * config.head_dim}): tests only"
        self.parts = parts
        self.transformer = CausalWanTransformer(parts.transformer)
        if tiny is not None:
            model += f", TAEHV tiny decoder {config.tiny_vae_decoder}"
        self.pipeline: PipelineParallelWan | None = None
        if devices:
            parts.vae.to(self.device)
            parts.text_encoder.to(self.device)
            self.pipeline = PipelineParallelWan(self.transformer, devices)
            sizes = "+".join(str(st.stop - st.start) for st in self.pipeline.stages)
            model += f", pipelined over {','.join(config.devices)} ({sizes} blocks)"
        self.vae = StreamingVAE(parts.vae, tiny_decoder=tiny)
        self.prompts = PromptEmbeddings(parts, config.text_len_tokens, prepare=self.transformer.text_context)
        self.info = BackendInfo(name="wan", model=model, device=str(self.device))

    # --- the Backend / ChunkedBackend interface ---

    def new_stream(self, width: int, height: int, prompt: str) -> WanStream:
        cfg = self.config
        px = cfg.pixels_per_token
        mw, mh = width // px * px, height // px * px
        if mw < px or mh < px:
            raise BackendError(f"frames of {width}x{height} are too small for the wan backend (at least {px}x{px})")
        if max(mw, mh) // px > cfg.rope_max_seq_len:
            raise BackendError(f"frames of {width}x{height} exceed the wan RoPE table ({cfg.rope_max_seq_len} tokens a side)")
        caches = [[FrameKVCache(cfg.kv_cache_frames, cfg.sink_frames, cfg.adapt_sink_threshold)
                   for _ in self.transformer.dit.blocks]
                  for _ in range(cfg.num_steps)]
        return WanStream(width, height, mw, mh, prompt, self.prompts(prompt), caches, self.vae.new_stream(),
                         cfg.noise_scale)

    def set_prompt(self, state: WanStream, prompt: str) -> None:
        state.prompt = prompt
        state.text = self.prompts(prompt)

    def process(self, state: WanStream, frame: np.ndarray, index: int) -> np.ndarray:
        raise BackendError("the wan backend works on chunks of frames: call push(state, frame, index), which "
                           "returns the (index, frame) pairs that are ready")

    def push(self, state: WanStream, frame: np.ndarray, index: int) -> Ready:
        """Takes one input frame; returns the output frames now ready, each with its input's index, in order."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise BackendError(f"expected an H x W x 3 uint8 frame, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if (w, h) != (state.width, state.height):
            raise BackendError(f"this stream's frames are {state.width}x{state.height}, got {w}x{h}")
        state.frames.append(frame)
        state.indices.append(index)
        need = self.config.first_chunk_frames if state.chunks == 0 else self.config.chunk_frames
        if len(state.frames) < need:
            return []
        with torch.inference_mode():
            self._start_chunk(state)
            if self.config.stream_batch:
                return self._tick(state)
            ready: Ready = []
            while state.in_flight:
                ready += self._tick(state)
            return ready

    def flush(self, state: WanStream) -> Ready:
        """Runs the chunks still in flight to the end (frames short of a chunk are dropped): a stream's end."""
        ready: Ready = []
        with torch.inference_mode():
            while state.in_flight:
                ready += self._tick(state)
        state.frames, state.indices = [], []
        return ready

    # --- the pipeline ---

    def _start_chunk(self, state: WanStream) -> None:
        cfg = self.config
        frames, indices = state.frames, state.indices
        state.frames, state.indices = [], []
        size = (state.model_width, state.model_height)
        pixels = np.stack([f if (f.shape[1], f.shape[0]) == size else cv2.resize(f, size, interpolation=cv2.INTER_AREA)
                           for f in frames]).astype(np.float32) / 127.5 - 1.0

        # motion-aware noise: a still scene gets noise_scale, a moving one less (StreamDiffusionV2's rule)
        seq = pixels if state.last_frame is None else np.concatenate([state.last_frame[None], pixels])
        rms = np.sqrt(np.mean((seq[1:] - seq[:-1]) ** 2, axis=(1, 2, 3))) if len(seq) > 1 else np.zeros(1)
        motion = min(1.0, float(rms.max()) / cfg.motion_full_scale)
        wanted = cfg.noise_scale - cfg.motion_gain * motion
        s = wanted * (1.0 - cfg.motion_smoothing) + state.noise_scale * cfg.motion_smoothing
        s = min(max(s, cfg.noise_scale_min), cfg.noise_scale_max)
        state.noise_scale, state.last_frame = s, pixels[-1]
        state.noise_scales.append(s)

        t0 = time.perf_counter()
        x = torch.from_numpy(pixels).permute(3, 0, 1, 2)[None].to(self.device, self.dtype)
        latents = self.vae.encode(state.vae, x)
        self._timed(state, "vae_encode", t0)
        generator = torch.Generator(device=self.device).manual_seed(cfg.seed * 1_000_003 + state.chunks)
        noise = torch.randn(latents.shape, generator=generator, device=self.device, dtype=torch.float32)
        sigmas = [s] + [t / 1000.0 for t in cfg.timesteps[1:]]
        timesteps = [max(1.0, 1000.0 * s - 100.0)] + [float(t) for t in cfg.timesteps[1:]]
        chunk = Chunk(state.chunks, indices, state.latent_frames, noise * s + latents * (1.0 - s), state.text,
                      sigmas, timesteps, generator)
        state.chunks += 1
        state.latent_frames += latents.shape[2]
        state.in_flight.append(chunk)

    def _tick(self, state: WanStream) -> Ready:
        """One model call per shape group (per chunk in a pipeline): every chunk in flight advances one step;
        finished ones are decoded."""
        cfg = self.config
        groups: dict[object, list[Chunk]] = {}
        for chunk in state.in_flight:  # one batch per shape; in a pipeline one micro-batch per chunk (see above)
            groups.setdefault(chunk.number if self.pipeline else tuple(chunk.latents.shape), []).append(chunk)
        calls = [ModelCall(torch.cat([c.latents for c in chunks]).to(self.dtype),
                           torch.tensor([c.timesteps[c.step] for c in chunks], device=self.device),
                           [c.text for c in chunks],
                           [state.caches[c.step] for c in chunks],
                           [c.first_latent_id for c in chunks])
                 for chunks in groups.values()]
        # the calls are independent: the chunks in flight are at different steps, so read different caches
        t0 = time.perf_counter()
        flows = self.pipeline.run(calls) if self.pipeline else [self.transformer(*call) for call in calls]
        self._timed(state, "denoise", t0)
        state.model_calls += len(calls)
        for chunks, flow in zip(groups.values(), flows):
            flow = flow.float()
            for row, chunk in enumerate(chunks):
                x0 = chunk.latents[0:1] - chunk.sigmas[chunk.step] * flow[row:row + 1]
                chunk.step += 1
                if chunk.step < cfg.num_steps:
                    sigma = chunk.sigmas[chunk.step]
                    noise = torch.randn(x0.shape, generator=chunk.generator, device=self.device, dtype=torch.float32)
                    chunk.latents = x0 * (1.0 - sigma) + noise * sigma
                else:
                    chunk.latents = x0
        ready: Ready = []
        while state.in_flight and state.in_flight[0].step >= cfg.num_steps:
            chunk = state.in_flight.pop(0)
            ready += self._decode(state, chunk)
        return ready

    def _timed(self, state: WanStream, part: str, t0: float) -> None:
        """Adds the time since t0 to the part (after the device finished its queued work, on a GPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        state.stage_s[part] = state.stage_s.get(part, 0.0) + time.perf_counter() - t0

    def _decode(self, state: WanStream, chunk: Chunk) -> Ready:
        t0 = time.perf_counter()
        pixels = self.vae.decode(state.vae, chunk.latents)[0].permute(1, 2, 3, 0).float().cpu().numpy()
        self._timed(state, "vae_decode", t0)
        frames = np.clip((pixels + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        if len(frames) != len(chunk.indices):
            raise BackendError(f"the VAE decoded {len(frames)} frames for a chunk of {len(chunk.indices)}")
        size = (state.width, state.height)
        return [(i, f if (f.shape[1], f.shape[0]) == size else cv2.resize(f, size, interpolation=cv2.INTER_LINEAR))
                for i, f in zip(chunk.indices, frames)]
