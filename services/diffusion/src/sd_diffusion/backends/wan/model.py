"""The causal Wan2.1 transformer: diffusers' WanTransformer3DModel weights, run frame-causally with a KV cache.

diffusers' model attends over a whole clip at once. A stream has no whole clip, so this module runs the
same parts (patch embedding, condition embedder, each block's projections, norms and feed-forward, the
output head) with its own self-attention:

- block-causal over latent frames: a token of latent frame i sees the tokens of frames <= i of its chunk
  and every frame in the cache, never a later frame;
- a rolling KV cache per block (FrameKVCache): the newest `kv_cache_frames - sink_frames` latent
  frames and, kept for ever, the stream's first `sink_frames` (attention sinks);
- keys are cached before RoPE. Each call lays the cache's frames out at temporal positions 0..n-1 and
  the chunk after them, so positions are re-based whenever the cache rolls and never exceed
  kv_cache_frames + the chunk's latent frames, however long the stream runs.

The prompt's cross-attention keys and values (TextContext) are computed once per prompt, not per call.

One call takes a batch of chunks, each with its own cache (stream batching puts chunks that are at
different denoising steps in one batch, each reading the cache of its step); contexts of different
lengths are padded and masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

try:  # GPU only; the `flash` extra. Without it attention is torch's scaled_dot_product_attention.
    from flash_attn import flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    flash_attn_func = None


@dataclass
class FrameKVCache:
    """One block's keys and values (before RoPE) for one stream and one denoising step, per latent frame."""

    max_frames: int
    sink_frames: int
    adapt_threshold: float = -1.0  # see append; -1: the sinks never change
    keys: torch.Tensor | None = None  # frames x tokens_per_frame x heads x head_dim
    values: torch.Tensor | None = None
    frame_ids: list[int] = field(default_factory=list)  # the stream's latent-frame number of each kept frame

    @property
    def frames(self) -> int:
        return len(self.frame_ids)

    def append(self, keys: torch.Tensor, values: torch.Tensor, first_id: int) -> None:
        """Adds a chunk's frames; past max_frames the oldest non-sink frames go.

        Adaptive sinks (StreamDiffusionV2's idea): once the cache is full, when a single new frame's mean
        key and value are, on average, less cosine-similar than adapt_threshold to some sink's, the scene
        has changed and the new frame takes the least similar sink's place (instead of joining the
        rolling frames). Only a full cache adapts, so every block's cache holds as many frames as the
        others whatever each decides.
        """
        n_sink = self.sink_frames
        if self.adapt_threshold > -1 and n_sink and keys.shape[0] == 1 and self.frames >= self.max_frames:
            def similarity(cached: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
                return F.cosine_similarity(cached[:n_sink].float().mean(1).flatten(1),
                                           new.float().mean(1).flatten(1), dim=-1)

            sim = (similarity(self.keys, keys) + similarity(self.values, values)) / 2
            if float(sim.min()) < self.adapt_threshold:
                i = int(sim.argmin())
                self.keys = torch.cat([self.keys[:i], keys, self.keys[i + 1:]])
                self.values = torch.cat([self.values[:i], values, self.values[i + 1:]])
                self.frame_ids[i] = first_id
                return
        self.keys = keys if self.keys is None else torch.cat([self.keys, keys])
        self.values = values if self.values is None else torch.cat([self.values, values])
        self.frame_ids.extend(range(first_id, first_id + keys.shape[0]))
        excess = self.frames - self.max_frames
        if excess > 0:
            keep = list(range(self.sink_frames)) + list(range(self.sink_frames + excess, self.frames))
            self.keys, self.values = self.keys[keep], self.values[keep]
            self.frame_ids = [self.frame_ids[i] for i in keep]

    def clear(self) -> None:
        self.keys = self.values = None
        self.frame_ids = []


@dataclass(frozen=True)
class TextContext:
    """A prompt's cross-attention keys and values, one pair per block (1 x text tokens x heads x head_dim),
    each on its block's device."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]


@dataclass
class Activations:
    """One call between the input embedding and the output head: what the blocks read, and the hidden states.

    forward is embed, then run_blocks over every block, then head. A pipeline stage (pipeline.py) runs
    a range of blocks and hands this on with `to(next device)`; the caches and text contexts it names
    are not moved: each block's live on that block's device.
    """

    x: torch.Tensor  # batch x tokens x dim: the hidden states
    temb: torch.Tensor  # batch x dim: the timestep embedding (the head's modulation)
    tproj: torch.Tensor  # batch x 6 x dim: the blocks' modulation
    rope: tuple[torch.Tensor, ...]  # cos_q, sin_q, cos_k, sin_k (batch x tokens x 1 x dim/2)
    mask: torch.Tensor | None  # batch x 1 x queries x keys (True: seen); None: nothing hidden
    text: list[TextContext]  # each row's
    caches: list[list[FrameKVCache]]  # [row][block]
    first_frame_ids: list[int]
    write_cache: bool
    frames: int  # latent frames of each row's chunk
    pph: int  # tokens per frame, down
    ppw: int  # and across
    ctx_frames: list[int]  # latent frames each row's caches held when the call began

    @property
    def per_frame(self) -> int:
        return self.pph * self.ppw

    @property
    def n_ctx(self) -> int:
        return max(self.ctx_frames)

    def to(self, device: torch.device) -> Activations:
        """The tensors on `device` (the next stage's); the rest as it is."""
        mask = None if self.mask is None else self.mask.to(device)
        return replace(self, x=self.x.to(device), temb=self.temb.to(device), tproj=self.tproj.to(device),
                       rope=tuple(t.to(device) for t in self.rope), mask=mask)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Batch x tokens x heads x dim in and out; flash-attn when it is there and nothing is masked."""
    if mask is None and flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return flash_attn_func(q, k, v)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on interleaved pairs (diffusers' convention for Wan): x is batch x tokens x heads x dim."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.type_as(x)


class CausalWanTransformer(nn.Module):
    """See the module docstring. `dit` is a diffusers WanTransformer3DModel; its weights are used as they are."""

    def __init__(self, dit: nn.Module) -> None:
        super().__init__()
        self.dit = dit
        cfg = dit.config
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.attention_head_dim
        self.patch_size = tuple(cfg.patch_size)
        rope = dit.rope
        self._rope_split = [rope.t_dim, rope.h_dim, rope.w_dim]
        self.rope_max_seq_len = rope.max_seq_len

    def _rope(self, frame_positions: torch.Tensor, pph: int, ppw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (tokens x 1 x dim/2) for latent frames at these temporal positions, row-major tokens."""
        rope = self.dit.rope
        out = []
        for table in (rope.freqs_cos, rope.freqs_sin):
            t, h, w = table.to(frame_positions.device, torch.float32).split(self._rope_split, dim=1)
            n = frame_positions.numel()
            parts = [t[frame_positions].view(n, 1, 1, t.shape[1]).expand(n, pph, ppw, -1),
                     h[:pph].view(1, pph, 1, h.shape[1]).expand(n, pph, ppw, -1),
                     w[:ppw].view(1, 1, ppw, w.shape[1]).expand(n, pph, ppw, -1)]
            full = torch.cat(parts, dim=-1).reshape(n * pph * ppw, 1, table.shape[1])
            out.append(full)
        cos, sin = out
        # the tables repeat each frequency for the pair's two members; one per pair is enough here
        return cos[..., 0::2], sin[..., 1::2]

    def text_context(self, text: torch.Tensor) -> TextContext:
        """The cross-attention keys and values of a text embedding (1 x tokens x text_dim), every block's."""
        dit = self.dit
        text_h = dit.condition_embedder.text_embedder(text.to(dit.patch_embedding.weight.dtype))
        keys, values = [], []
        for block in dit.blocks:
            attn = block.attn2
            h = text_h.to(attn.to_k.weight.device)  # a pipeline's later stages keep their blocks' keys
            keys.append(attn.norm_k(attn.to_k(h)).unflatten(2, (self.heads, -1)))
            values.append(attn.to_v(h).unflatten(2, (self.heads, -1)))
        return TextContext(keys, values)

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor | list[TextContext],
                caches: list[list[FrameKVCache]], first_frame_ids: list[int],
                write_cache: bool = True) -> torch.Tensor:
        """The flow prediction for a batch of chunks.

        latents: batch x channels x frames x height x width (one chunk per row, all the same shape);
        timesteps: batch; text: each row's TextContext (or a batch x tokens x text_dim embedding, whose
        contexts are then computed here); caches[b]: row b's cache, one per block;
        first_frame_ids[b]: the stream's number of row b's first latent frame (kept beside its keys).
        With write_cache the chunk's keys and values join its caches after the call.

        The three parts (embed, run_blocks, head) are what a pipeline stage runs a share of (pipeline.py).
        """
        act = self.embed(latents, timesteps, text, caches, first_frame_ids, write_cache)
        return self.head(self.run_blocks(act, 0, len(self.dit.blocks)))

    def embed(self, latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor | list[TextContext],
              caches: list[list[FrameKVCache]], first_frame_ids: list[int],
              write_cache: bool = True) -> Activations:
        """The input side of forward (same arguments): patch and timestep embeddings, RoPE tables, the mask.

        The caches' frame counts are read from block 0's; each block checks its own when it runs (in a
        pipeline the later blocks may still be writing the previous chunk's keys at this point).
        """
        dit = self.dit
        b, _, f, hgt, wid = latents.shape
        p_t, p_h, p_w = self.patch_size
        if p_t != 1:
            raise ValueError("the causal model needs a temporal patch of 1")
        pph, ppw = hgt // p_h, wid // p_w
        per_frame = pph * ppw
        n_tokens = f * per_frame
        device = latents.device
        if max(pph, ppw) > self.rope_max_seq_len:
            raise ValueError(f"{pph}x{ppw} tokens per frame exceed the RoPE table of {self.rope_max_seq_len}")

        x = dit.patch_embedding(latents).flatten(2).transpose(1, 2).contiguous()
        # the timestep embedding as diffusers' condition embedder makes it (its text half is in text_context)
        cond = dit.condition_embedder
        t_freq = cond.timesteps_proj(timesteps).to(next(cond.time_embedder.parameters()).dtype)
        temb = cond.time_embedder(t_freq).type_as(x)
        tproj = cond.time_proj(cond.act_fn(temb)).unflatten(1, (6, -1))
        if isinstance(text, torch.Tensor):
            text = [self.text_context(text[r:r + 1]) for r in range(b)]

        # positions: row r's cache at 0..n_r-1, its chunk at n_r..n_r+f-1
        ctx_frames = [row[0].frames for row in caches]
        n_ctx = max(ctx_frames)
        cos_q, sin_q, cos_k, sin_k = [], [], [], []
        for n in ctx_frames:
            cq, sq = self._rope(torch.arange(n, n + f, device=device), pph, ppw)
            ck, sk = self._rope(torch.arange(0, n_ctx, device=device), pph, ppw)  # padding rows: unused
            cos_q.append(cq), sin_q.append(sq), cos_k.append(torch.cat([ck, cq])), sin_k.append(torch.cat([sk, sq]))
        rope = tuple(torch.stack(t) for t in (cos_q, sin_q, cos_k, sin_k))

        # the mask: frame-causal inside the chunk, the cache fully visible, padding hidden
        q_frame = torch.arange(n_tokens, device=device) // per_frame
        own = q_frame[:, None] >= q_frame[None, :]
        mask = None
        if f > 1 or any(n != n_ctx for n in ctx_frames):
            rows = []
            for n in ctx_frames:
                ctx = torch.zeros(n_tokens, n_ctx * per_frame, dtype=torch.bool, device=device)
                ctx[:, : n * per_frame] = True
                rows.append(torch.cat([ctx, own], dim=1))
            mask = torch.stack(rows)[:, None]
        return Activations(x, temb, tproj, rope, mask, list(text), caches, list(first_frame_ids), write_cache,
                           f, pph, ppw, ctx_frames)

    def run_blocks(self, act: Activations, start: int, stop: int) -> Activations:
        """Blocks start..stop-1 on act.x (on their device, where their caches and text keys are); act, updated."""
        dit = self.dit
        x = act.x
        b, device = x.shape[0], x.device
        f, per_frame, n_ctx = act.frames, act.per_frame, act.n_ctx
        cos_q, sin_q, cos_k, sin_k = act.rope
        tproj = act.tproj
        for i in range(start, stop):
            block = dit.blocks[i]
            if any(row[i].frames != n for row, n in zip(act.caches, act.ctx_frames)):
                raise ValueError("a row's caches hold different numbers of frames from block to block")
            text_k = torch.cat([c.keys[i] for c in act.text])
            text_v = torch.cat([c.values[i] for c in act.text])
            shift, scale, gate, c_shift, c_scale, c_gate = (block.scale_shift_table + tproj.float()).chunk(6, dim=1)
            h = (block.norm1(x.float()) * (1 + scale) + shift).type_as(x)

            attn = block.attn1
            q = attn.norm_q(attn.to_q(h)).unflatten(2, (self.heads, -1))
            k = attn.norm_k(attn.to_k(h)).unflatten(2, (self.heads, -1))
            v = attn.to_v(h).unflatten(2, (self.heads, -1))
            ctx_k = torch.zeros(b, n_ctx * per_frame, self.heads, self.head_dim, dtype=k.dtype, device=device)
            ctx_v = torch.zeros_like(ctx_k)
            for r, row in enumerate(act.caches):
                cache = row[i]
                if cache.frames:
                    ctx_k[r, : cache.frames * per_frame] = cache.keys.flatten(0, 1)
                    ctx_v[r, : cache.frames * per_frame] = cache.values.flatten(0, 1)
            keys = rotate(torch.cat([ctx_k, k], dim=1), cos_k, sin_k)
            values = torch.cat([ctx_v, v], dim=1)
            out = attention(rotate(q, cos_q, sin_q), keys, values, act.mask).flatten(2, 3).type_as(q)
            out = attn.to_out[1](attn.to_out[0](out))
            x = (x.float() + out * gate).type_as(x)

            h = block.norm2(x.float()).type_as(x)
            cross = block.attn2
            q = cross.norm_q(cross.to_q(h)).unflatten(2, (self.heads, -1))
            out = attention(q, text_k, text_v, None).flatten(2, 3).type_as(q)
            x = x + cross.to_out[1](cross.to_out[0](out))

            h = (block.norm3(x.float()) * (1 + c_scale) + c_shift).type_as(x)
            x = (x.float() + block.ffn(h).float() * c_gate).type_as(x)

            if act.write_cache:
                for r, row in enumerate(act.caches):
                    row[i].append(k[r].unflatten(0, (f, per_frame)), v[r].unflatten(0, (f, per_frame)),
                                  act.first_frame_ids[r])
        act.x = x
        return act

    def head(self, act: Activations) -> torch.Tensor:
        """The output side of forward: the final norm and projection, unpatchified to the latents' shape."""
        dit = self.dit
        x, temb = act.x, act.temb
        b, f, pph, ppw = x.shape[0], act.frames, act.pph, act.ppw
        p_t, p_h, p_w = self.patch_size
        shift, scale = (dit.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        x = (dit.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = dit.proj_out(x)
        x = x.reshape(b, f, pph, ppw, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
