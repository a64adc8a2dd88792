"""The wan backend's push() contract on the CPU with a tiny random model: sizes and indices, causality
across chunks, determinism, prompt changes, stream batching against one-step-after-another, the noise
scale, and the weights directory (checked, loaded locally). Nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest

import torch

from sd_diffusion.backends import BackendError, ChunkedBackend, make_backend  # noqa: E402
from sd_diffusion.backends.wan import WanBackend, WanConfig  # noqa: E402
from sd_diffusion.backends.wan.weights import CAUSAL_GENERATOR  # noqa: E402

W, H = 40, 36  # not multiples of 16: the backend works at 32x32 and resizes back
PROMPT = "a photoreal city street sunny afternoon"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread (conftest.py)."""


@pytest.fixture(scope="module")
def backend() -> WanBackend:
    return make_backend("wan", preset="tiny")


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """A moving gradient with a little noise: neither still nor random."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = []
    for i in range(n):
        base = 128 + 60 * np.sin((xx + 2 * i) / 7.0)[..., None] * np.array([1.0, 0.6, 0.3]) + yy[..., None]
        out.append(np.clip(base + rng.normal(0, 4, (H, W, 3)), 0, 255).astype(np.uint8))
    return out


def _run(backend, frames, prompt=PROMPT, prompt_at=None, new_prompt=None):
    """Pushes frames; returns (what each push returned, everything after the flush as a dict by index)."""
    state = backend.new_stream(W, H, prompt)
    per_push = []
    for i, f in enumerate(frames):
        if prompt_at is not None and i == prompt_at:
            backend.set_prompt(state, new_prompt)
        per_push.append(backend.push(state, f, 100 + i))
    rest = backend.flush(state)
    return per_push, dict(p for push in per_push for p in push) | dict(rest), state


def test_every_frame_comes_back_once_in_order_of_its_size_paired_with_its_input_index(backend):
    assert isinstance(backend, ChunkedBackend)
    per_push, out, state = _run(backend, _frames(21))  # 5 + 4 x 4: five chunks
    returned = [i for push in per_push for i, _ in push]
    # two steps in a pipeline: a chunk comes back when the next one is complete; the flush gives the last
    assert [len(p) for p in per_push] == [0] * 8 + [5] + [0, 0, 0, 4] * 3
    assert returned == list(range(100, 117))
    assert sorted(out) == list(range(100, 121))
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in out.values())
    # chunk 0 alone; chunks 1 and 0 in two calls (2 latent frames against 1); then one call a chunk; the flush
    assert state.model_calls == 1 + 2 + 3 + 1
    with pytest.raises(BackendError, match="push"):
        backend.process(state, _frames(1)[0], 0)
    with pytest.raises(BackendError, match="40x36"):
        backend.push(state, np.zeros((32, 32, 3), np.uint8), 0)


def test_an_output_never_depends_on_a_later_chunk(backend):
    frames = _frames(21)
    changed = frames[:13] + [255 - f for f in frames[13:]]  # chunk 3 (inputs 13..16) on differ
    _, a, _ = _run(backend, frames)
    _, b, _ = _run(backend, changed)
    assert all(np.array_equal(a[100 + i], b[100 + i]) for i in range(13))
    assert not np.array_equal(a[113], b[113])


def test_a_seeded_stream_is_reproducible_and_the_seed_matters(backend):
    frames = _frames(13)
    _, a, _ = _run(backend, frames)
    _, b, _ = _run(backend, frames)
    assert all(np.array_equal(a[i], b[i]) for i in a)
    other = WanBackend(WanConfig.tiny(seed=1))
    _, c, _ = _run(other, frames)
    assert not np.array_equal(a[100], c[100])


def test_a_prompt_change_changes_the_output_from_the_next_chunk_on_and_is_encoded_once(backend):
    frames = _frames(17)
    _, a, _ = _run(backend, frames)
    computed = backend.prompts.computed
    _, b, _ = _run(backend, frames, prompt_at=9, new_prompt="night rain wet road")  # before chunk 2 (9..12)
    assert all(np.array_equal(a[100 + i], b[100 + i]) for i in range(9))
    assert all(not np.array_equal(a[100 + i], b[100 + i]) for i in range(9, 17))
    assert backend.prompts.computed == computed + 1  # the old prompt came from the cache
    _run(backend, frames[:5], prompt_at=2, new_prompt="night rain wet road")
    assert backend.prompts.computed == computed + 1


def test_stream_batching_gives_the_frames_of_running_each_chunks_steps_one_after_another(backend):
    frames = _frames(25)
    per_push_b, batched, state_b = _run(backend, frames)
    sequential = WanBackend(WanConfig.tiny(stream_batch=False))
    per_push_s, one_by_one, state_s = _run(sequential, frames)
    # each chunk reads the cache of its step and draws its own noise either way, so the frames agree up to the
    # float rounding of batched kernels (here: a few pixels one level off out of 25 frames; the design
    # guarantees the same context and noise, not the same rounding)
    assert sorted(batched) == sorted(one_by_one)
    diffs = [np.abs(batched[i].astype(int) - one_by_one[i].astype(int)) for i in batched]
    assert max(d.max() for d in diffs) <= 1 and sum(int((d > 0).sum()) for d in diffs) < 0.001 * 25 * H * W * 3
    # one after another: a chunk's frames come back on the push that completes it, at two calls a chunk
    assert [len(p) for p in per_push_s] == [0] * 4 + [5] + [0, 0, 0, 4] * 5
    assert state_s.model_calls == 2 * 6 and state_b.model_calls == 1 + 2 + 4 + 1


def test_the_noise_scale_is_the_configured_one_for_a_still_input_and_drops_with_motion(backend):
    still = [np.full((H, W, 3), 90, np.uint8)] * 13
    _, _, state = _run(backend, still)
    assert state.noise_scales == pytest.approx([0.8, 0.8, 0.8])
    _, _, state = _run(backend, _frames(13))
    s = state.noise_scales
    assert all(0.65 <= x < 0.8 for x in s) and s[0] > s[1]  # smoothed: it moves a part of the way each chunk


def test_missing_weights_are_named_with_where_they_were_looked_for(tmp_path):
    with pytest.raises(BackendError, match=f"{tmp_path / 'nowhere'} \\(the weights directory itself\\)"):
        make_backend("wan", weights_dir=str(tmp_path / "nowhere"))
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text("{}")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_text("{}")
    with pytest.raises(BackendError) as err:
        make_backend("wan", weights_dir=str(tmp_path))
    msg = str(err.value)
    for missing in (f"{tmp_path}/transformer/*.safetensors", f"{tmp_path}/vae/config.json",
                    f"{tmp_path}/vae/*.safetensors", f"{tmp_path}/text_encoder/config.json",
                    f"{tmp_path}/tokenizer/tokenizer_config.json"):
        assert missing in msg
    assert "transformer/config.json" not in msg and "tokenizer.json or" not in msg
    with pytest.raises(BackendError, match="needs weights_dir"):
        make_backend("wan")
    with pytest.raises(BackendError, match="unknown wan backend option.*kv_cache_size"):
        make_backend("wan", preset="tiny", kv_cache_size=3)
    with pytest.raises(BackendError, match="sink_frames must be within"):
        make_backend("wan", preset="tiny", sink_frames=4)
    with pytest.raises(BackendError, match="below the second step"):
        make_backend("wan", preset="tiny", noise_scale=0.5, noise_scale_min=0.5)


def test_weights_load_from_a_local_directory_with_the_causal_generator_over_them(backend, tmp_path):
    parts = backend.parts
    for name in ("transformer", "vae", "text_encoder", "tokenizer"):
        getattr(parts, name).save_pretrained(tmp_path / name)
    frames = _frames(9)
    _, want, _ = _run(backend, frames)
    loaded = make_backend("wan", preset="tiny", weights_dir=str(tmp_path))
    _, got, _ = _run(loaded, frames)
    assert all(np.array_equal(want[i], got[i]) for i in want)
    # a causal generator checkpoint as CausVid saves it: {"generator": {"model.<name>": tensor}}
    state = {f"model.{k}": v.clone() for k, v in parts.transformer.state_dict().items()}
    state["model.proj_out.bias"] += 0.5
    torch.save({"generator": state}, tmp_path / CAUSAL_GENERATOR)
    loaded = make_backend("wan", preset="tiny", weights_dir=str(tmp_path))
    assert torch.equal(loaded.parts.transformer.proj_out.bias, parts.transformer.proj_out.bias + 0.5)


def _original_wan_name(key: str) -> str:
    """diffusers' name of a Wan transformer weight back to the original Wan (and CausVid) one."""
    renames = [("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
               ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
               ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
               ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
               ("condition_embedder.time_proj", "time_projection.1"), ("attn2", "cross_attn"),
               ("attn1", "self_attn"), (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."),
               (".to_v.", ".v."), ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), ("proj_out", "head.head"),
               (".norm2.", ".norm3.")]
    for new, old in renames:
        key = key.replace(new, old)
    if key == "scale_shift_table":
        return "head.modulation"
    return key.replace("scale_shift_table", "modulation")


def test_a_causal_generator_in_the_original_wan_names_is_converted_on_load(backend, tmp_path):
    parts = backend.parts
    for name in ("transformer", "vae", "text_encoder", "tokenizer"):
        getattr(parts, name).save_pretrained(tmp_path / name)
    state = {f"model.{_original_wan_name(k)}": v.clone() for k, v in parts.transformer.state_dict().items()}
    assert "model.blocks.0.self_attn.q.weight" in state and "model.head.modulation" in state
    state["model.blocks.1.cross_attn.o.weight"] += 0.25
    torch.save({"generator": state}, tmp_path / CAUSAL_GENERATOR)
    loaded = make_backend("wan", preset="tiny", weights_dir=str(tmp_path))
    got, want = loaded.parts.transformer.state_dict(), parts.transformer.state_dict()
    assert torch.equal(got["blocks.1.attn2.to_out.0.weight"], want["blocks.1.attn2.to_out.0.weight"] + 0.25)
    assert all(torch.equal(got[k], want[k]) for k in want if k != "blocks.1.attn2.to_out.0.weight")


def test_chunks_of_two_latent_frames_come_back_whole_and_in_order():
    wide = WanBackend(WanConfig.tiny(chunk_frames=8, num_steps=3))
    per_push, out, state = _run(wide, _frames(5 + 8 * 2))
    # three steps: a chunk comes back when the second after it is complete (here: only the first chunk)
    assert [len(p) for p in per_push] == [0] * 20 + [5]
    assert sorted(out) == list(range(100, 121))
    assert all(f.shape == (H, W, 3) for f in out.values())
    assert all(c.frames <= 4 for step in state.caches for c in step)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_asking_for_cuda_without_one_is_refused():
    with pytest.raises(BackendError, match="no CUDA device"):
        make_backend("wan", preset="tiny", device="cuda:0")


def test_with_adaptive_sinks_a_scene_cut_replaces_sinks_and_the_stream_goes_on():
    # a threshold near 1 makes nearly every frame "a new scene" once the cache is full: the hardest case
    eager = WanBackend(WanConfig.tiny(adapt_sink_threshold=0.99))
    frames = _frames(13) + [255 - f for f in _frames(12, seed=1)]
    _, out, state = _run(eager, frames)
    assert sorted(out) == list(range(100, 125))
    caches = [c for step in state.caches for c in step]
    assert all(c.frames == 4 for c in caches)
    assert any(c.frame_ids[0] != 0 for c in caches)  # some sink gave its place


def test_the_service_with_missing_weights_exits_2_naming_them(tmp_path):
    import os
    import subprocess
    import sys

    missing = tmp_path / "no-models"
    env = dict(os.environ, SD_DIFFUSION_BACKEND="wan", SD_DIFFUSION_MODEL_DIR=str(missing),
               SD_DIFFUSION_GRPC_PORT="0", SD_DIFFUSION_METRICS_PORT="0", SD_DIFFUSION_LOG_FORMAT="json")
    run = subprocess.run([sys.executable, "-m", "sd_diffusion"], env=env, capture_output=True, text=True,
                         timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode == 2, out
    assert str(missing) in out and "cannot start" in out and "Traceback" not in out
