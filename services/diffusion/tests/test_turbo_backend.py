"""The turbo backend (per-frame few-step image-to-image) on the CPU with tiny random models: sizes, the
img2img recipe against diffusers' own pipeline, determinism, a still input, the prompt cache, the model
directory (checked, loaded locally), the tiny VAE, the settings, and the barcode through the server's
frame path. Nothing is downloaded: every model is built here from a config object."""

from __future__ import annotations

import json
import sys
from fractions import Fraction

import numpy as np
import pytest

import torch

from av import VideoFrame  # noqa: E402
from diffusion_peers import scene  # noqa: E402

from sd_common.session_format import barcode  # noqa: E402
from sd_diffusion.backends import BACKENDS, BackendError, ChunkedBackend, make_backend  # noqa: E402
from sd_diffusion.backends.turbo import TurboBackend, TurboConfig  # noqa: E402
from sd_diffusion.backends.turbo.weights import tiny_tiny_vae, tiny_vocab  # noqa: E402
from sd_diffusion.server import build_backend  # noqa: E402
from sd_diffusion.settings import DiffusionSettings  # noqa: E402
from sd_diffusion.stream import Input, Stream  # noqa: E402

PROMPT = "a photoreal city street in the sun"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread (conftest.py)."""


@pytest.fixture(scope="module")
def backend() -> TurboBackend:
    return make_backend("turbo", preset="tiny", num_steps=2, strength=0.5)


def _frame(width: int, height: int, shift: int = 0) -> np.ndarray:
    """A gradient with a bright square: neither flat nor random."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = 128 + 60 * np.sin((xx + shift) / 7.0)[..., None] * np.array([1.0, 0.6, 0.3]) + yy[..., None]
    img[height // 4:height // 2, width // 4:width // 2] = 245
    return np.clip(img, 0, 255).astype(np.uint8)


def _pixels(frame: np.ndarray) -> torch.Tensor:
    """1 x 3 x H x W float in [-1, 1], as the backend hands frames to the VAE."""
    return torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def _save_sd_turbo_layout(backend: TurboBackend, root) -> None:
    """The backend's parts as stabilityai/sd-turbo lays them out: the pipeline's save_pretrained, with the
    tokenizer as vocab.json + merges.txt + tokenizer_config.json (the hub's files)."""
    from diffusers import StableDiffusionPipeline

    p = backend.parts
    StableDiffusionPipeline(vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer, unet=p.unet,
                            scheduler=p.scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(root)
    tok = root / "tokenizer"
    for f in tok.iterdir():
        f.unlink()
    vocab, merges = tiny_vocab()
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    (tok / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": p.tokenizer.model_max_length,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>"}))


@pytest.fixture(scope="module")
def model_dir(backend, tmp_path_factory):
    root = tmp_path_factory.mktemp("sd-turbo")
    _save_sd_turbo_layout(backend, root)
    return root


def test_frames_come_back_as_uint8_of_the_input_size_padded_not_resized(backend):
    assert isinstance(backend, TurboBackend) and not isinstance(backend, ChunkedBackend) and "turbo" in BACKENDS
    for w, h in ((64, 48), (70, 50)):
        state = backend.new_stream(w, h, PROMPT)
        out = backend.process(state, _frame(w, h), 0)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8
        assert out.std() > 1.0  # a picture, not a constant
    # 70x50 is padded to 72x56 by repeating its edges, not resized: its output is the top-left of the
    # output of that padded frame (the noise, drawn for 72x56 either way, is the same)
    frame = _frame(70, 50)
    padded = np.pad(frame, ((0, 6), (0, 2), (0, 0)), mode="edge")
    small = backend.process(backend.new_stream(70, 50, PROMPT), frame, 0)
    big = backend.process(backend.new_stream(72, 56, PROMPT), padded, 0)
    assert np.array_equal(small, big[:50, :70])
    state = backend.new_stream(64, 48, PROMPT)
    with pytest.raises(BackendError, match="64x48"):
        backend.process(state, _frame(70, 50), 0)
    with pytest.raises(BackendError, match="uint8"):
        backend.process(state, _frame(64, 48).astype(np.float32), 0)


def test_the_schedule_is_sd_turbos_img2img_the_last_steps_of_strength_times_steps():
    for steps, strength, schedule, timesteps in ((1, 0.5, 2, [499]), (2, 0.5, 4, [499, 249]),
                                                 (1, 1.0, 1, [999]), (4, 1.0, 4, [999, 749, 499, 249]),
                                                 (3, 0.6, 5, [599, 399, 199]), (1, 0.3, 4, [249])):
        config = TurboConfig(num_steps=steps, strength=strength, device="cpu")
        assert config.schedule_steps == schedule and int(schedule * strength) == steps
        tiny = TurboBackend(config)
        state = tiny.new_stream(16, 16, "")
        tiny.process(state, _frame(16, 16), 0)
        assert state.timesteps == timesteps, (steps, strength)


def test_a_frame_is_what_diffusers_img2img_pipeline_makes_of_it_at_guidance_0(backend):
    from diffusers import StableDiffusionImg2ImgPipeline

    p = backend.parts
    pipe = StableDiffusionImg2ImgPipeline(vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer, unet=p.unet,
                                          scheduler=type(p.scheduler).from_config(p.scheduler.config),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    frame = _frame(64, 48)
    ours = backend.process(backend.new_stream(64, 48, PROMPT), frame, 0)
    with torch.inference_mode():
        # the pipeline samples the VAE's latent distribution; the backend takes its mean: both start here
        latents = backend.encode(_pixels(frame))
        theirs = pipe(PROMPT, image=latents, strength=0.5, num_inference_steps=4, guidance_scale=0.0,
                      generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    diff = np.abs(ours.astype(np.float64) - theirs * 255.0)
    assert diff.max() <= 1.0, diff.max()  # the same image, up to the last level's rounding


def test_a_seed_gives_the_same_frames_and_another_seed_others(backend, model_dir):
    frames = [_frame(64, 48, shift) for shift in (0, 5)]
    again = make_backend("turbo", model_dir=str(model_dir), num_steps=2, strength=0.5)  # the same weights
    other = make_backend("turbo", model_dir=str(model_dir), num_steps=2, strength=0.5, seed=1)
    runs = []
    for b in (backend, again, other):
        state = b.new_stream(64, 48, PROMPT)
        runs.append([b.process(state, f, i) for i, f in enumerate(frames)])
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not any(np.array_equal(a, c) for a, c in zip(runs[0], runs[2]))  # only the noise differs


def test_a_still_input_gives_a_still_output_and_a_change_a_changed_one(backend):
    state = backend.new_stream(64, 48, PROMPT)
    still = _frame(64, 48)
    outs = [backend.process(state, still, i) for i in range(3)]
    assert all(np.array_equal(outs[0], o) for o in outs[1:])  # the stream's noise is the same every frame
    moved = backend.process(state, _frame(64, 48, shift=3), 3)
    assert not np.array_equal(moved, outs[0])
    assert np.array_equal(backend.process(state, still, 4), outs[0])  # and back


def test_the_prompt_is_encoded_once_per_prompt_and_set_prompt_changes_the_next_frame(backend):
    calls = []
    hook = backend.parts.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        prompt, other = "the night in the rain", "the fog in winter"
        frame = _frame(64, 48)
        a = backend.new_stream(64, 48, prompt)
        b = backend.new_stream(64, 48, prompt)
        first = [backend.process(a, frame, i) for i in range(2)] + [backend.process(b, frame, 0)]
        assert len(calls) == 1  # two streams and three frames: one encoding
        backend.set_prompt(a, other)
        assert len(calls) == 2
        changed = backend.process(a, frame, 2)
        assert not np.array_equal(changed, first[0])  # the prompt reaches the picture
        backend.set_prompt(a, prompt)
        assert len(calls) == 2  # kept
        assert np.array_equal(backend.process(a, frame, 3), first[0])
    finally:
        hook.remove()


def test_missing_weights_are_named_with_where_they_were_looked_for(tmp_path, model_dir):
    with pytest.raises(BackendError, match=f"{tmp_path / 'nowhere'} \\(the model directory itself\\)"):
        make_backend("turbo", model_dir=str(tmp_path / "nowhere"))
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "vocab.json").write_text("{}")
    with pytest.raises(BackendError) as err:
        make_backend("turbo", model_dir=str(tmp_path))
    msg = str(err.value)
    for missing in (f"{tmp_path}/model_index.json", f"{tmp_path}/unet/*.safetensors", f"{tmp_path}/vae/config.json",
                    f"{tmp_path}/vae/*.safetensors", f"{tmp_path}/text_encoder/config.json",
                    f"{tmp_path}/tokenizer/tokenizer_config.json", f"{tmp_path}/tokenizer/merges.txt",
                    f"{tmp_path}/scheduler/scheduler_config.json"):
        assert missing in msg, missing
    assert "unet/config.json" not in msg
    # one subfolder gone from a complete directory: only it is named
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(BackendError) as err:
        make_backend("turbo", model_dir=str(broken))
    assert str(err.value) == (f"turbo weights are incomplete; missing: {broken}/scheduler/scheduler_config.json "
                              "(see sd_diffusion.backends.turbo.weights for the layout)")
    (broken / "scheduler").mkdir()
    (broken / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "NoSuchScheduler"}))
    with pytest.raises(BackendError, match="NoSuchScheduler"):
        make_backend("turbo", model_dir=str(broken))
    with pytest.raises(BackendError, match="the tiny VAE directory itself"):
        make_backend("turbo", preset="tiny", tiny_vae_dir=str(tmp_path / "no-taesd"))
    with pytest.raises(BackendError, match="needs model_dir"):
        make_backend("turbo")
    with pytest.raises(BackendError, match="unknown turbo backend option.*guidance"):
        make_backend("turbo", preset="tiny", guidance=1.0)
    with pytest.raises(BackendError, match="num_steps must be within 1..4"):
        make_backend("turbo", preset="tiny", num_steps=5)
    with pytest.raises(BackendError, match="float32"):
        make_backend("turbo", preset="tiny", device="cpu", dtype="float16")


def test_a_model_in_the_sd_turbo_layout_loads_from_its_directory_and_is_named(backend, model_dir):
    assert sorted(p.name for p in (model_dir / "tokenizer").iterdir()) == ["merges.txt", "tokenizer_config.json",
                                                                           "vocab.json"]
    loaded = make_backend("turbo", model_dir=str(model_dir), num_steps=2, strength=0.5)
    frame = _frame(64, 48)
    want = backend.process(backend.new_stream(64, 48, PROMPT), frame, 0)
    got = loaded.process(loaded.new_stream(64, 48, PROMPT), frame, 0)
    assert np.array_equal(want, got)
    model = loaded.info.model
    assert model.startswith(f"{model_dir.name} (StableDiffusionPipeline, {model_dir})") and loaded.info.name == "turbo"
    assert "per-frame image-to-image" in model and "2 step(s) at strength 0.5" in model and loaded.info.device == "cpu"
    assert "tests only" in backend.info.model


def test_weights_saved_only_as_the_fp16_variant_are_read(backend, model_dir, tmp_path):
    import shutil

    root = tmp_path / "fp16"
    shutil.copytree(model_dir, root)
    shutil.rmtree(root / "unet")
    backend.parts.unet.save_pretrained(root / "unet", variant="fp16")  # float32 values under the variant's name
    assert [p.name for p in (root / "unet").glob("*.safetensors")] == ["diffusion_pytorch_model.fp16.safetensors"]
    loaded = make_backend("turbo", model_dir=str(root), num_steps=2, strength=0.5)
    frame = _frame(64, 48)
    assert np.array_equal(loaded.process(loaded.new_stream(64, 48, PROMPT), frame, 0),
                          backend.process(backend.new_stream(64, 48, PROMPT), frame, 0))


def test_the_tiny_vae_decodes_in_place_of_the_vae(backend, tmp_path):
    torch.manual_seed(0)
    tiny_tiny_vae().save_pretrained(tmp_path / "taesd")
    taesd = make_backend("turbo", preset="tiny", num_steps=2, strength=0.5, tiny_vae_dir=str(tmp_path / "taesd"))
    assert f"decoded by the tiny VAE {tmp_path / 'taesd'}" in taesd.info.model
    decoded = []
    hooks = [taesd.parts.tiny_vae.decoder.register_forward_hook(lambda *_: decoded.append("taesd")),
             taesd.parts.vae.decoder.register_forward_hook(lambda *_: decoded.append("vae"))]
    try:
        frame = _frame(70, 50)
        out = taesd.process(taesd.new_stream(70, 50, PROMPT), frame, 0)
    finally:
        for h in hooks:
            h.remove()
    assert decoded == ["taesd"] and out.shape == (50, 70, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, backend.process(backend.new_stream(70, 50, PROMPT), frame, 0))
    # the same latents through the tiny VAE's own decode give the same picture
    state = taesd.new_stream(70, 50, PROMPT)
    padded = np.pad(frame, ((0, 6), (0, 2), (0, 0)), mode="edge")
    with torch.inference_mode():
        latents = taesd.denoise(state, taesd.encode(_pixels(padded)))
        image = taesd.parts.tiny_vae.decode(latents).sample[0]
    want = ((image + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()[:50, :70]
    assert np.array_equal(out, want)
    wrong = tmp_path / "taesd-8"
    from diffusers import AutoencoderTiny

    AutoencoderTiny(encoder_block_out_channels=(8,), decoder_block_out_channels=(8,), num_encoder_blocks=(1,),
                    num_decoder_blocks=(1,), latent_channels=8).save_pretrained(wrong)
    with pytest.raises(BackendError, match="8 latent channels; the UNet takes 4"):
        make_backend("turbo", preset="tiny", tiny_vae_dir=str(wrong))


async def test_the_server_draws_the_input_barcode_on_a_turbo_frame(backend):
    width, height = 150, 90  # neither a multiple of 8
    cell = barcode.default_cell_px(height)
    fid = 517
    rgb = scene(fid, width, height)
    # the model alone does not keep the barcode (random weights make a different picture of the strip)
    assert barcode.read(backend.process(backend.new_stream(width, height, PROMPT), rgb, 0)[..., 1], cell) != fid
    stream = Stream("s" * 32, "session", backend, PROMPT)
    try:
        for fid in (0, 517, 2**20 - 1):
            frame = VideoFrame.from_ndarray(scene(fid, width, height), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = 0, Fraction(1, 90000)
            (out,) = stream._make(Input(frame, 0.0))
            assert out.frame_id == fid
            assert barcode.read(out.frame.to_ndarray(format="yuv420p")[:height], cell) == fid
            assert (out.frame.width, out.frame.height) == (width, height)
    finally:
        await stream.close()


def test_the_settings_reach_the_backend(monkeypatch, tmp_path):
    for key, value in (("BACKEND", "turbo"), ("TURBO_PRESET", "tiny"), ("TURBO_STRENGTH", "0.75"),
                       ("TURBO_NUM_STEPS", "3"), ("TURBO_SEED", "7"), ("DEVICE", "cpu"), ("TURBO_DTYPE", "float32")):
        monkeypatch.setenv(f"SD_DIFFUSION_{key}", value)
    built = build_backend(DiffusionSettings())
    assert isinstance(built, TurboBackend)
    assert built.config == TurboConfig(strength=0.75, num_steps=3, seed=7, device="cpu", dtype="float32")
    assert "3 step(s) at strength 0.75" in built.info.model
    monkeypatch.setenv("SD_DIFFUSION_TURBO_PRESET", "sd-turbo")
    monkeypatch.setenv("SD_DIFFUSION_MODEL_DIR", str(tmp_path / "models"))
    with pytest.raises(BackendError, match=f"{tmp_path / 'models'} \\(the model directory itself\\)"):
        build_backend(DiffusionSettings())
    monkeypatch.setenv("SD_DIFFUSION_TURBO_TINY_VAE_DIR", str(tmp_path / "taesd"))
    assert DiffusionSettings().turbo_tiny_vae_dir == tmp_path / "taesd"


def test_without_the_models_extra_the_error_names_it(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("sd_diffusion.backends.turbo")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed: its import raises ImportError
    with pytest.raises(BackendError, match=r"the turbo backend needs the models extra \(pip install"):
        make_backend("turbo", preset="tiny")


def test_the_benchmark_times_the_turbo_backend():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "bench" / "diffusion_bench.py"
    spec = importlib.util.spec_from_file_location("diffusion_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.run_backend("turbo", 160, 96, 2, frames=4, device="cpu")
    assert r["frames_out"] == 4 and r["latency_ms"]["n"] == 4 and r["fps_out"] > 0
    assert "tiny" in r["label"] and "random weights" in r["label"] and "2 steps" in r["label"]
