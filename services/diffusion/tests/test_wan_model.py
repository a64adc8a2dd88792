"""The wan backend's model parts on the CPU: the causal transformer against diffusers' own forward, the
rolling KV cache, the streaming VAE against diffusers' one-shot encode/decode, the 1.3B and 14B sizes on
the meta device. Tiny random models from config objects; nothing is downloaded."""

from __future__ import annotations

import pytest

import torch

from sd_diffusion.backends.wan.config import WanConfig  # noqa: E402
from sd_diffusion.backends.wan.model import CausalWanTransformer, FrameKVCache  # noqa: E402
from sd_diffusion.backends.wan.vae import StreamingVAE  # noqa: E402
from sd_diffusion.backends.wan.weights import build_transformer, random_parts  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread (conftest.py)."""


@pytest.fixture(scope="module")
def parts():
    return random_parts(WanConfig.tiny(), torch.device("cpu"), torch.float32, seed=0)


def _caches(model: CausalWanTransformer, cfg: WanConfig) -> list[FrameKVCache]:
    return [FrameKVCache(cfg.kv_cache_frames, cfg.sink_frames) for _ in model.dit.blocks]


def test_one_latent_frame_with_an_empty_cache_is_exactly_diffusers_forward(parts):
    # The wiring check: with nothing to be causal about, our attention path is diffusers' block forward.
    model = CausalWanTransformer(parts.transformer)
    g = torch.Generator().manual_seed(1)
    x, text = torch.randn(2, 16, 1, 4, 6, generator=g), torch.randn(2, 8, 32, generator=g)
    t = torch.tensor([700.0, 500.0])
    with torch.inference_mode():
        ours = model(x, t, text, [_caches(model, WanConfig.tiny()) for _ in range(2)], [0, 0])
        theirs = parts.transformer(x, t, text, return_dict=False)[0]
    assert ours.shape == theirs.shape == x.shape
    assert torch.equal(ours, theirs)


def test_a_latent_frame_never_sees_a_later_one_in_its_chunk_or_after_it(parts):
    cfg = WanConfig.tiny()
    model = CausalWanTransformer(parts.transformer)
    g = torch.Generator().manual_seed(2)
    x, text, t = torch.randn(1, 16, 3, 4, 4, generator=g), torch.randn(1, 8, 32, generator=g), torch.tensor([500.0])
    changed = x.clone()
    changed[:, :, 2] += 1.0
    with torch.inference_mode():
        a = model(x, t, text, [_caches(model, cfg)], [0])
        b = model(changed, t, text, [_caches(model, cfg)], [0])
    assert torch.equal(a[:, :, :2], b[:, :, :2])  # frames 0 and 1 do not see frame 2
    assert not torch.equal(a[:, :, 2], b[:, :, 2])


def test_the_cache_rolls_keeps_its_sinks_and_positions_stay_bounded(parts, monkeypatch):
    cfg = WanConfig.tiny(kv_cache_frames=4, sink_frames=2)
    model = CausalWanTransformer(parts.transformer)
    positions: list[int] = []
    rope = model._rope
    monkeypatch.setattr(model, "_rope", lambda pos, h, w: (positions.append(int(pos.max()) if pos.numel() else -1),
                                                             rope(pos, h, w))[1])
    caches = _caches(model, cfg)
    g = torch.Generator().manual_seed(3)
    text = torch.randn(1, 8, 32, generator=g)
    first_keys = None
    frame_id = 0
    with torch.inference_mode():
        for chunk in range(12):
            frames = 2 if chunk == 0 else 1
            model(torch.randn(1, 16, frames, 4, 4, generator=g), torch.tensor([500.0]), text, [caches], [frame_id])
            frame_id += frames
            if chunk == 0:
                first_keys = [c.keys.clone() for c in caches]
            assert all(c.frames <= cfg.kv_cache_frames for c in caches)
    for cache, keys in zip(caches, first_keys):
        assert cache.frames == cfg.kv_cache_frames
        assert cache.frame_ids == [0, 1, frame_id - 2, frame_id - 1]  # the sinks, then the newest
        assert torch.equal(cache.keys[:2], keys[:2])  # the sinks' keys are the very first ones
    # 13 latent frames went through, but positions never passed the cache's (0..3) and the chunk's (4)
    assert max(positions) == cfg.kv_cache_frames


def test_an_adaptive_sink_gives_its_place_to_a_frame_of_a_new_scene():
    cache = FrameKVCache(max_frames=4, sink_frames=2, adapt_threshold=0.2)
    g = torch.Generator().manual_seed(5)
    scene = torch.randn(1, 4, 2, 6, generator=g)
    frame = lambda s: s + 0.1 * torch.randn(1, 4, 2, 6, generator=g)  # noqa: E731 - the same scene, a bit changed
    for i in range(6):
        cache.append(frame(scene), frame(scene), i)
    assert cache.frame_ids == [0, 1, 4, 5]  # similar frames roll; the sinks stay
    cache.append(-scene, -scene, 6)  # a new scene: cosine -1 against both sinks; one of them goes
    assert 6 in cache.frame_ids[:2] and cache.frame_ids[2:] == [4, 5]
    assert torch.equal(cache.keys[cache.frame_ids.index(6)], -scene[0])
    cache.append(frame(scene), frame(scene), 7)  # the old scene again: unlike the new sink, so it takes its place
    assert 6 not in cache.frame_ids and 7 in cache.frame_ids[:2] and cache.frame_ids[2:] == [4, 5]


def test_the_streaming_vae_matches_diffusers_one_shot_encode_and_decode(parts):
    vae = StreamingVAE(parts.vae)
    g = torch.Generator().manual_seed(4)
    video = torch.rand(1, 3, 9, 32, 32, generator=g) * 2 - 1
    with torch.inference_mode():
        stream = vae.new_stream()
        streamed = torch.cat([vae.encode(stream, video[:, :, :5]), vae.encode(stream, video[:, :, 5:])], dim=2)
        whole = parts.vae.encode(video).latent_dist.mode()
        assert torch.allclose(streamed, (whole - vae.mean) / vae.std, atol=1e-5)
        stream = vae.new_stream()
        frames = [vae.decode(stream, streamed[:, :, i:i + 1]) for i in range(streamed.shape[2])]
        assert [f.shape[2] for f in frames] == [1, 4, 4]  # Wan's causal VAE: 1 frame, then 4 per latent frame
        assert torch.allclose(torch.cat(frames, dim=2), parts.vae.decode(whole).sample, atol=1e-5)


@pytest.fixture(scope="module")
def meta_1_3b() -> CausalWanTransformer:
    with torch.device("meta"):
        return CausalWanTransformer(build_transformer(WanConfig()))


def test_the_1_3b_configuration_on_the_meta_device_counts_1_418_996_800_parameters(meta_1_3b):
    cfg = WanConfig()
    assert (cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.ffn_dim, cfg.text_dim, cfg.patch_size,
            cfg.latent_channels) == (30, 12, 128, 8960, 4096, (1, 2, 2), 16)
    model = meta_1_3b
    assert all(p.is_meta for p in model.parameters())
    d = 1536  # 12 heads x 128
    attn = 4 * (d * d + d) + 2 * d  # q, k, v, out with biases, plus the q/k RMS norms' weights
    block = 2 * attn + 2 * d + (d * 8960 + 8960 + 8960 * d + d) + 6 * d  # self, cross, norm2, ffn, modulation
    patch = 16 * 4 * d + d  # Conv3d 16 -> 1536 over a 1x2x2 patch
    time_ = (256 * d + d) + (d * d + d) + (d * 6 * d + 6 * d)  # timestep MLP and its 6-way projection
    text = (4096 * d + d) + (d * d + d)  # the text projection
    head = (d * 64 + 64) + 2 * d  # proj_out to 16 x 1x2x2, and the output modulation
    expected = 30 * block + patch + time_ + text + head
    assert expected == 1_418_996_800  # the notes' "1.419 B": the causal wrapper adds no parameter
    assert sum(p.numel() for p in model.parameters()) == expected


def test_the_1_3b_model_takes_a_480p_first_chunk_on_the_meta_device(meta_1_3b):
    # shapes only (meta tensors hold no data): the real sizes go through RoPE, the mask and the cache
    cfg = WanConfig()
    with torch.device("meta"):
        text = meta_1_3b.text_context(torch.empty(1, cfg.text_len_tokens, cfg.text_dim))
        caches = [FrameKVCache(cfg.kv_cache_frames, cfg.sink_frames) for _ in meta_1_3b.dit.blocks]
        out = meta_1_3b(torch.empty(1, 16, 2, 60, 104), torch.full((1,), 700.0), [text], [caches], [0])
    assert out.shape == (1, 16, 2, 60, 104)  # 832x480 pixels: 2 latent frames of 60x104
    assert all(c.keys.shape == (2, 30 * 52, 12, 128) for c in caches)  # 1,560 tokens a latent frame


def _wan_parameters(d: int, ffn: int, layers: int, text_dim: int = 4096, freq_dim: int = 256,
                    channels: int = 16, patch: int = 1 * 2 * 2) -> int:
    """Wan2.1's transformer parameter count from its layer shapes (the same sum as the 1.3B test's, by width)."""
    attn = 4 * (d * d + d) + 2 * d  # q, k, v, out with biases, plus the q/k RMS norms' weights
    block = 2 * attn + 2 * d + (d * ffn + ffn + ffn * d + d) + 6 * d  # self, cross, norm2, ffn, modulation
    embed = (channels * patch * d + d) + (freq_dim * d + d) + (d * d + d) + (d * 6 * d + 6 * d)  # patch, time
    text = (text_dim * d + d) + (d * d + d)
    head = (d * channels * patch + channels * patch) + 2 * d
    return layers * block + embed + text + head


def test_the_14b_configuration_on_the_meta_device_counts_14_288_491_584_parameters():
    cfg = WanConfig.from_options(preset="14b")
    assert (cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.ffn_dim, cfg.text_dim, cfg.freq_dim, cfg.patch_size,
            cfg.latent_channels) == (40, 40, 128, 13824, 4096, 256, (1, 2, 2), 16)  # Wan2.1-T2V-14B's config
    with torch.device("meta"):
        model = CausalWanTransformer(build_transformer(cfg))
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    assert _wan_parameters(1536, 8960, 30) == 1_418_996_800  # the sum, checked on the 1.3B's published count
    expected = _wan_parameters(5120, 13824, 40)
    # the published Wan2.1-T2V-14B transformer: 1,095 tensors, 14,288,491,584 elements
    assert expected == 14_288_491_584
    assert sum(p.numel() for p in params) == expected and len(params) == 1095
    assert model.heads * model.head_dim == 5120 and len(model.dit.blocks) == 40
