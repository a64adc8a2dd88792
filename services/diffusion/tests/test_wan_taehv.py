"""The tiny TAEHV-style decoder (backends/wan/taehv.py) on the CPU: frame counts and sizes, causality,
chunk-by-chunk streaming against one-shot decoding, strict loading from a local file, the published
taew2_1 layout and size on the meta device, and the wan backend decoding with it (the ChunkedBackend
contract, barcodes through the real stream path). Random weights only; nothing is downloaded."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import torch

from av import VideoFrame  # noqa: E402
from diffusion_peers import scene  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from sd_common.session_format import barcode  # noqa: E402
from sd_diffusion.backends import BackendError, ChunkedBackend, make_backend  # noqa: E402
from sd_diffusion.backends.wan import WanBackend, WanConfig  # noqa: E402
from sd_diffusion.backends.wan.taehv import (  # noqa: E402
    MemBlock, TGrow, TinyDecoderConfig, TinyVideoDecoder, load_decoder)
from sd_diffusion.stream import Input, Stream  # noqa: E402

W, H = 40, 36  # as test_wan_backend.py: the backend works at 32x32 and resizes back
PROMPT = "a photoreal city street sunny afternoon"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread (conftest.py)."""


@pytest.fixture(scope="module")
def decoder() -> TinyVideoDecoder:
    torch.manual_seed(0)
    return TinyVideoDecoder(TinyDecoderConfig.tiny()).eval()


@pytest.fixture(scope="module")
def backend() -> WanBackend:
    return make_backend("wan", preset="tiny", tiny_vae_decoder="random")


def _latents(frames: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 16, frames, 4, 5, generator=torch.Generator().manual_seed(seed))


def _decode_in_chunks(decoder, latents, sizes):
    state, out, start = decoder.new_state(), [], 0
    for n in sizes:
        out.append(decoder.decode(state, latents[:, :, start:start + n]))
        start += n
    assert start == latents.shape[2]
    return out


def test_the_first_latent_frame_gives_one_pixel_frame_every_later_one_four_at_8x_the_size(decoder):
    with torch.inference_mode():
        out = _decode_in_chunks(decoder, _latents(6), [2, 1, 3])  # as the backend: 5 frames, then 4 a latent
        assert [tuple(o.shape) for o in out] == [(1, 3, 5, 32, 40), (1, 3, 4, 32, 40), (1, 3, 12, 32, 40)]
        assert all(o.min() >= 0.0 and o.max() <= 1.0 for o in out)
        assert tuple(decoder(_latents(3, batch=2)).shape) == (2, 3, 9, 32, 40)  # 1 + 4 x 2, batched
        assert tuple(decoder(_latents(1)).shape) == (1, 3, 1, 32, 40)
        with pytest.raises(ValueError, match="16 x F>=1"):
            decoder(torch.zeros(1, 8, 2, 4, 5))
        state = decoder.new_state()
        decoder.decode(state, _latents(1))
        with pytest.raises(ValueError, match="one state per stream and frame size"):
            decoder.decode(state, torch.zeros(1, 16, 1, 6, 6))


def test_a_decoded_frame_never_depends_on_a_later_latent_frame(decoder):
    z = _latents(5)
    with torch.inference_mode():
        base = decoder(z)
        assert base.shape[2] == 1 + 4 * 4
        for k in range(5):
            changed = z.clone()
            g = torch.Generator().manual_seed(k)
            changed[:, :, k] += 3.0 * torch.randn(changed[:, :, k].shape, generator=g)
            out = decoder(changed)
            first = 0 if k == 0 else 1 + 4 * (k - 1)  # latent k's frames: 0 for the first, then 4 each
            own = 1 if k == 0 else 4
            assert torch.equal(out[:, :, :first], base[:, :, :first]), k  # bit-identical before latent k's
            for t in range(first, first + own):
                assert not torch.equal(out[:, :, t], base[:, :, t]), (k, t)


def test_a_stream_decoded_chunk_by_chunk_equals_the_clip_decoded_at_once(decoder):
    z, other = _latents(7), _latents(7, seed=1)
    with torch.inference_mode():
        whole, whole_other = decoder(z), decoder(other)
        # the same sums, with the convolutions run over batches of other sizes: equal up to float rounding
        # (here up to 6e-8 on pixels in 0..1, where one level in 255 is 4e-3; [5, 2] happens to be bit-equal)
        for sizes in ([2, 1, 1, 3], [1] * 7, [5, 2]):
            chunked = torch.cat(_decode_in_chunks(decoder, z, sizes), 2)
            torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
        # two streams interleaved on one decoder: each keeps its memory in its own state
        a, b = decoder.new_state(), decoder.new_state()
        got_a, got_b = [], []
        for lo, hi in [(0, 2), (2, 3), (3, 7)]:
            got_a.append(decoder.decode(a, z[:, :, lo:hi]))
            got_b.append(decoder.decode(b, other[:, :, lo:hi]))
        torch.testing.assert_close(torch.cat(got_a, 2), whole, rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.cat(got_b, 2), whole_other, rtol=0, atol=1e-6)
        # without the memory a later chunk would differ by far more: the state is what makes them agree
        state = decoder.new_state()
        state.latents_decoded = 2  # past the first chunk's trim, but nothing remembered
        fresh = decoder.decode(state, z[:, :, 2:3])
        assert (fresh - whole[:, :, 5:9]).abs().max() > 1e-3


def test_weights_load_strictly_from_a_local_pth_or_safetensors_file(decoder, tmp_path):
    state = decoder.state_dict()
    full = tmp_path / "taew2_1_like.pth"  # a whole TAEHV file: the encoder's keys are there and ignored
    torch.save({"encoder.0.weight": torch.zeros(64, 3, 3, 3), "encoder.0.bias": torch.zeros(64), **state},
               full)
    only = tmp_path / "decoder.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(only))
    z = _latents(3)
    with torch.inference_mode():
        want = decoder(z)
        for path in (full, only):
            loaded = load_decoder(path, TinyDecoderConfig.tiny())
            assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
            assert torch.equal(loaded(z), want)


def test_a_file_that_does_not_fit_is_refused_naming_the_file_and_the_keys(decoder, tmp_path):
    tiny = TinyDecoderConfig.tiny()
    state = decoder.state_dict()
    with pytest.raises(BackendError, match=f"missing: {tmp_path / 'nowhere.pth'}"):
        load_decoder(tmp_path / "nowhere.pth", tiny)
    text = tmp_path / "not-weights.pth"
    text.write_text("<html>a login page, not weights</html>")
    with pytest.raises(BackendError, match=f"{text} cannot be read"):
        load_decoder(text, tiny)

    short = tmp_path / "short.pth"
    extra = {"decoder.99.weight": torch.zeros(1), "head.weight": torch.zeros(1)}
    torch.save({k: v for k, v in state.items() if k != "decoder.19.bias"} | extra, short)
    with pytest.raises(BackendError) as err:
        load_decoder(short, tiny)
    msg = str(err.value)
    assert str(short) in msg and "1 missing keys (decoder.19.bias)" in msg
    assert "2 unexpected keys (decoder.99.weight, head.weight)" in msg

    torch.manual_seed(1)
    narrow = tmp_path / "narrow.pth"  # the last stage 2 wide, not 4: same keys, two shapes differ
    torch.save(TinyVideoDecoder(TinyDecoderConfig.tiny(channels=(8, 8, 4, 2))).state_dict(), narrow)
    with pytest.raises(BackendError) as err:
        load_decoder(narrow, tiny)
    msg = str(err.value)
    assert "2 of another shape" in msg
    assert "decoder.17.weight (2, 4, 3, 3) (the layout's: (4, 4, 3, 3))" in msg
    assert "missing" not in msg and "unexpected" not in msg

    # the tiny file against the real layout (what a production config would read)
    tiny_file = tmp_path / "tiny.pth"
    torch.save(state, tiny_file)
    with pytest.raises(BackendError, match=f"{tiny_file} does not fit the tiny VAE decoder \\(channels "
                                           f"\\(256, 128, 64, 64\\), 3 MemBlocks"):
        load_decoder(tiny_file)


def _published_layout() -> dict[str, tuple[int, ...]]:
    """taew2_1's decoder as TAEHV lays it out (the nn.Sequential indices of madebyollin/taehv), written out
    here from the layer list, not from our module: the names and shapes a strict load must find."""
    want: dict[str, tuple[int, ...]] = {"decoder.1.weight": (256, 16, 3, 3), "decoder.1.bias": (256,)}
    i = 3
    for width, nxt, stride in ((256, 128, 1), (128, 64, 2), (64, 64, 2)):
        for _ in range(3):  # MemBlocks: conv(2w -> w), ReLU, conv, ReLU, conv; no skip conv (same width)
            for j, n_in in ((0, 2 * width), (2, width), (4, width)):
                want[f"decoder.{i}.conv.{j}.weight"] = (width, n_in, 3, 3)
                want[f"decoder.{i}.conv.{j}.bias"] = (width,)
            i += 1
        i += 1  # the upsample
        want[f"decoder.{i}.conv.weight"] = (width * stride, width, 1, 1)  # TGrow
        want[f"decoder.{i + 1}.weight"] = (nxt, width, 3, 3)  # the stage's last conv, no bias
        i += 2
    assert i == 21  # then ReLU, and the conv to RGB
    want |= {"decoder.22.weight": (3, 64, 3, 3), "decoder.22.bias": (3,)}
    return want


def test_the_real_size_decoder_has_the_published_taew2_1_layout_and_size():
    with torch.device("meta"):
        real = TinyVideoDecoder(TinyDecoderConfig())
    got = {k: tuple(v.shape) for k, v in real.state_dict().items()}
    want = _published_layout()
    assert got == want
    count = sum(int(np.prod(s)) for s in want.values())
    assert sum(p.numel() for p in real.parameters()) == count == 9_844_611
    assert [type(m).__name__ for m in real.decoder].count("MemBlock") == 9
    assert [m.stride for m in real.decoder if isinstance(m, TGrow)] == [1, 2, 2]
    assert all(isinstance(real.decoder[i], MemBlock) for i in (3, 4, 5, 9, 10, 11, 15, 16, 17))


def test_a_file_in_the_published_layout_loads_strictly_into_the_real_size_decoder(tmp_path):
    # what taew2_1.pth holds, as far as the names and shapes go (fp16 here; the values are not the real ones)
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen).half() for k, s in _published_layout().items()}
    path = tmp_path / "taew2_1.pth"
    torch.save({"encoder.0.weight": torch.zeros(64, 3, 3, 3), **state}, path)
    real = load_decoder(path)
    assert all(torch.equal(v, state[k].float()) for k, v in real.state_dict().items())
    with torch.inference_mode():
        assert tuple(real(torch.randn(1, 16, 2, 2, 3)).shape) == (1, 3, 5, 16, 24)


# --- the wan backend decoding with it -----------------------------------------------------------------------


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    wave = [60 * np.sin((xx + 2 * i) / 7.0)[..., None] * np.array([1.0, 0.6, 0.3]) for i in range(n)]
    noisy = [128 + w + yy[..., None] + rng.normal(0, 4, (H, W, 3)) for w in wave]
    return [np.clip(f, 0, 255).astype(np.uint8) for f in noisy]


def _run(backend, frames):
    state = backend.new_stream(W, H, PROMPT)
    per_push = [backend.push(state, f, 100 + i) for i, f in enumerate(frames)]
    rest = backend.flush(state)
    return per_push, dict(p for push in per_push for p in push) | dict(rest)


def test_with_the_tiny_decoder_every_frame_comes_back_once_in_order_as_with_the_vae(backend):
    assert isinstance(backend, ChunkedBackend)
    assert "TAEHV tiny decoder random" in backend.info.model and backend.vae.tiny_decoder is not None
    frames = _frames(21)  # 5 + 4 x 4: five chunks
    per_push, out = _run(backend, frames)
    vae_per_push, vae_out = _run(WanBackend(WanConfig.tiny()), frames)
    assert [len(p) for p in per_push] == [len(p) for p in vae_per_push] == [0] * 8 + [5] + [0, 0, 0, 4] * 3
    assert [i for push in per_push for i, _ in push] == list(range(100, 117))
    assert sorted(out) == list(range(100, 121))
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in out.values())
    # the same latents, another decoder: the frames are the tiny decoder's, not the VAE's
    assert all(not np.array_equal(out[i], vae_out[i]) for i in out)
    _, again = _run(backend, frames)  # the decoder's memory is per stream: a new stream starts afresh
    assert all(np.array_equal(out[i], again[i]) for i in out)


def test_with_the_tiny_decoder_an_output_never_depends_on_a_later_chunk(backend):
    frames = _frames(21)
    changed = frames[:13] + [255 - f for f in frames[13:]]  # chunk 3 (inputs 13..16) on differ
    _, a = _run(backend, frames)
    _, b = _run(backend, changed)
    assert all(np.array_equal(a[100 + i], b[100 + i]) for i in range(13))
    assert not np.array_equal(a[113], b[113])


async def test_through_the_stream_path_every_output_carries_the_barcode_of_its_own_input(backend):
    width, height = 256, 144
    stream = Stream("t" * 32, "session", backend, PROMPT)
    try:
        cell = barcode.default_cell_px(height)
        outs = []
        for fid in range(500, 513):  # 5 + 4 x 2: chunks 0 and 1 come back, chunk 2 is still in flight
            frame = VideoFrame.from_ndarray(scene(fid, width, height), format="rgb24")
            frame = frame.reformat(format="yuv420p")  # as a decoder hands it over
            frame.pts, frame.time_base = 0, Fraction(1, 90000)
            outs += stream._make(Input(frame, 0.0))
        assert [o.frame_id for o in outs] == list(range(500, 509))
        for o in outs:
            assert (o.frame.width, o.frame.height) == (width, height)
            assert barcode.read(o.frame.to_ndarray(format="yuv420p")[:height], cell) == o.frame_id
        assert stream.counters.barcodes_unread == 0
    finally:
        await stream.close()


def test_the_tiny_decoder_option_is_checked(tmp_path):
    missing = tmp_path / "taew2_1.pth"
    with pytest.raises(BackendError, match=f"tiny VAE decoder's weights are missing: {missing}"):
        make_backend("wan", preset="tiny", tiny_vae_decoder=str(missing))
    # with real weights asked for too, the decoder file is named first (before any large weights load)
    with pytest.raises(BackendError, match=f"missing: {missing}"):
        make_backend("wan", weights_dir=str(tmp_path / "no-weights"), tiny_vae_decoder=str(missing))
    with pytest.raises(BackendError, match="'random' goes with random weights only"):
        make_backend("wan", weights_dir=str(tmp_path), tiny_vae_decoder="random")
    with pytest.raises(BackendError, match="tiny_vae_decoder must be"):
        make_backend("wan", preset="tiny", tiny_vae_decoder="")
    # a file of the tiny layout is refused by the real one, naming it
    torch.manual_seed(0)
    wrong = tmp_path / "tiny.pth"
    torch.save(TinyVideoDecoder(TinyDecoderConfig.tiny()).state_dict(), wrong)
    with pytest.raises(BackendError, match=f"{wrong} does not fit the tiny VAE decoder"):
        make_backend("wan", preset="tiny", tiny_vae_decoder=str(wrong))
