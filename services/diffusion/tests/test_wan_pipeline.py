"""The wan transformer's pipeline parallelism on the CPU: two stages on "cpu" against one device (the same
tensors), the partition arithmetic, chunks in flight on both stages at once, where each stage's parts
and caches live (a "meta" second stage), the device list's checks, and the backend over two stages.
No GPU here: two stages on one CPU show the schedule and the equality, not a speed-up."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import torch

from sd_diffusion.backends import BackendError, make_backend  # noqa: E402
from sd_diffusion.backends.wan import WanBackend, WanConfig  # noqa: E402
from sd_diffusion.backends.wan.model import CausalWanTransformer, FrameKVCache  # noqa: E402
from sd_diffusion.backends.wan.pipeline import ModelCall, PipelineParallelWan, stage_bounds  # noqa: E402
from sd_diffusion.backends.wan.weights import build_transformer  # noqa: E402

CFG = WanConfig.tiny(num_layers=5)  # five blocks: 3 + 2 over two stages


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs torch on one thread (conftest.py)."""


def _model(seed: int = 0) -> CausalWanTransformer:
    torch.manual_seed(seed)
    return CausalWanTransformer(build_transformer(CFG).eval())


def _calls(model: CausalWanTransformer, n_calls: int, seed: int = 0):
    """(caches, calls): two streams (rows) in one batch, the second joining a call later, so its cache is
    shorter (the padding mask) until both roll; the second row's sinks adapt; a 2-frame chunk in the
    middle; text as an embedding and as contexts; the last call writes nothing."""
    g = torch.Generator().manual_seed(seed)
    a = [FrameKVCache(CFG.kv_cache_frames, 1) for _ in model.dit.blocks]
    b = [FrameKVCache(CFG.kv_cache_frames, 1, adapt_threshold=0.3) for _ in model.dit.blocks]
    text = torch.randn(2, 8, 32, generator=g)
    contexts = [model.text_context(text[r:r + 1]) for r in range(2)]
    calls = [ModelCall(torch.randn(1, 16, 2, 4, 6, generator=g), torch.tensor([700.0]), text[:1], [a], [0])]
    frame = 2
    for n in range(n_calls - 2):
        f = 2 if n == 3 else 1
        calls.append(ModelCall(torch.randn(2, 16, f, 4, 6, generator=g), torch.tensor([700.0, 500.0]),
                               contexts if n % 2 else text, [a, b], [frame, frame - 2]))
        frame += f
    calls.append(ModelCall(torch.randn(2, 16, 1, 4, 6, generator=g), torch.tensor([400.0, 200.0]), contexts,
                           [a, b], [frame, frame - 2], False))
    return [a, b], calls


def test_blocks_are_split_into_contiguous_stages_balanced_by_count():
    assert stage_bounds(5, 2) == [(0, 3), (3, 5)]
    assert stage_bounds(40, 4) == [(0, 10), (10, 20), (20, 30), (30, 40)]  # the 14B over four GPUs
    assert stage_bounds(30, 4) == [(0, 8), (8, 16), (16, 23), (23, 30)]
    assert stage_bounds(2, 2) == [(0, 1), (1, 2)]
    for n in range(1, 12):
        for s in range(1, n + 1):
            bounds = stage_bounds(n, s)
            sizes = [stop - start for start, stop in bounds]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(bounds[i][1] == bounds[i + 1][0] for i in range(s - 1))
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    for n, s in ((2, 3), (5, 0)):
        with pytest.raises(BackendError, match=f"cannot split {n} blocks into {s} stages"):
            stage_bounds(n, s)


def test_two_stages_on_the_cpu_give_exactly_the_single_device_outputs_and_caches():
    single, piped = _model(), _model()
    want_caches, want_calls = _calls(single, 10)
    with torch.inference_mode():
        want = [single(*call) for call in want_calls]
    with PipelineParallelWan(piped, ["cpu", "cpu"]) as pipeline, torch.inference_mode():
        assert [(s.start, s.stop) for s in pipeline.stages] == [(0, 3), (3, 5)]
        got_caches, got_calls = _calls(piped, 10)
        got = pipeline.run(got_calls)  # all ten in flight together
        again = pipeline(*_calls(piped, 1, seed=1)[1][0])  # one call, as forward takes it
    assert len(got) == len(want) == 10
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert torch.equal(again, single(*_calls(single, 1, seed=1)[1][0]))
    for got_row, want_row in zip(got_caches, want_caches):
        for g, w in zip(got_row, want_row):
            assert g.frame_ids == w.frame_ids and torch.equal(g.keys, w.keys) and torch.equal(g.values, w.values)
    a, b = want_caches
    assert a[0].frames == b[0].frames == CFG.kv_cache_frames  # both rolled
    assert b[0].frame_ids[0] != 0  # the second row's sink was replaced on the way: adaptation ran too


def test_chunks_are_in_flight_on_both_stages_at_once():
    # A rendezvous inside the work: stage 0 in chunk n+1 and stage 1 in chunk n must both be there at the
    # same moment (a two-party barrier in a block of each). Stages that took turns (one thread, or a lock
    # around each stage's work) would leave the first to arrive waiting, and the barrier would time out.
    model = _model()
    n_calls = 6
    barrier = threading.Barrier(2, timeout=30)
    met: dict[int, list[bool]] = {0: [], 1: []}
    seen = {0: 0, 1: 0}

    def meet(stage: int):
        def hook(module, args, out):
            n = seen[stage]
            seen[stage] += 1
            if (stage == 0 and n >= 1) or (stage == 1 and n + 1 < n_calls):  # stage 0's chunk n+1 meets stage 1's n
                try:
                    barrier.wait()
                    met[stage].append(True)
                except threading.BrokenBarrierError:
                    met[stage].append(False)
        return hook

    hooks = [model.dit.blocks[0].ffn.register_forward_hook(meet(0)),  # block 0: stage 0
             model.dit.blocks[3].ffn.register_forward_hook(meet(1))]  # block 3: stage 1
    _, calls = _calls(model, n_calls)
    with PipelineParallelWan(model, ["cpu", "cpu"]) as pipeline, torch.inference_mode():
        pipeline.run(calls)
        log = [(stage, seq, event) for _, stage, seq, event in pipeline.log]
    for h in hooks:
        h.remove()
    assert met == {0: [True] * (n_calls - 1), 1: [True] * (n_calls - 1)}
    first = min(seq for _, seq, _ in log)
    at = {(stage, seq - first, event): i for i, (stage, seq, event) in enumerate(log)}
    assert len(at) == 2 * 2 * n_calls
    for n in range(n_calls):
        assert at[(0, n, "end")] < at[(1, n, "start")]  # a chunk goes through the stages in order
        if n + 1 < n_calls:
            assert at[(0, n + 1, "start")] < at[(1, n, "end")]  # the next chunk was on stage 0 meanwhile
            assert at[(1, n, "end")] < at[(1, n + 1, "start")]  # each stage takes its chunks in turn


def test_each_stage_holds_its_blocks_their_caches_and_text_keys_and_the_head_is_on_the_last():
    # A second stage on the "meta" device (shapes, no data) makes every placement visible on a CPU machine.
    model = _model()
    with PipelineParallelWan(model, ["cpu", "meta"], output_device="meta") as pipeline, torch.inference_mode():
        dit = model.dit
        devices = lambda m: {p.device.type for p in m.parameters()}  # noqa: E731
        assert [devices(b) for b in dit.blocks] == [{"cpu"}] * 3 + [{"meta"}] * 2
        assert devices(dit.patch_embedding) == devices(dit.condition_embedder) == {"cpu"}
        assert devices(dit.norm_out) | devices(dit.proj_out) <= {"meta"} and dit.scale_shift_table.is_meta
        text = model.text_context(torch.randn(1, 8, 32))
        assert [k.device.type for k in text.keys] == [v.device.type for v in text.values] == ["cpu"] * 3 + ["meta"] * 2
        caches = [FrameKVCache(CFG.kv_cache_frames, 1) for _ in dit.blocks]
        out = pipeline(torch.randn(1, 16, 2, 4, 6), torch.tensor([700.0]), [text], [caches], [0])
    assert out.is_meta and out.shape == (1, 16, 2, 4, 6)
    assert [c.keys.device.type for c in caches] == ["cpu"] * 3 + ["meta"] * 2


def test_a_failing_call_is_raised_to_its_caller_and_the_pipeline_goes_on():
    model = _model()
    _, calls = _calls(model, 3)
    uneven = [FrameKVCache(4, 1) for _ in range(5)]  # block 4 (stage 1) holds a frame the others do not
    uneven[4].append(torch.zeros(1, 12, 2, 12), torch.zeros(1, 12, 2, 12), 0)
    bad = ModelCall(calls[0].latents, calls[0].timesteps, calls[0].text, [uneven], [0])
    with PipelineParallelWan(model, ["cpu", "cpu"]) as pipeline, torch.inference_mode():
        with pytest.raises(ValueError, match="different numbers of frames"):
            pipeline.run([calls[0], bad])
        assert pipeline.run([calls[1]])[0].shape == calls[1].latents.shape
    with pytest.raises(BackendError, match="closed"):
        pipeline.run([calls[0]])


@pytest.mark.parametrize("devices, message", [
    ("cpu", "needs two devices or more"),
    ("cpu,cpu,cpu", "3 devices for 2 blocks"),
    ("auto,cpu", "name every device"),
    ("gpu0,cpu", "'gpu0' is not a device"),
    ("meta,cpu", "'meta' is neither cpu nor cuda:N"),
    ("cpu,cuda:0", "mixes the CPU and GPUs"),
    ("cuda:0,cuda:0", "cuda:0 named twice"),
    ("cuda,cuda:1", "give each GPU's index"),
    ("cuda:98,cuda:99", "(no CUDA device|cuda:98, cuda:99 not there)"),
])
def test_a_bad_device_list_is_refused_naming_what_is_wrong(devices, message):
    with pytest.raises(BackendError, match=f"wan devices '{devices}'.*{message}"):
        make_backend("wan", preset="tiny", devices=devices)


def test_devices_come_from_a_comma_separated_option_or_a_comma_separated_device():
    assert WanConfig.from_options(preset="tiny", devices=" cuda:0, cuda:1 ").devices == ("cuda:0", "cuda:1")
    assert WanConfig.from_options(preset="tiny", devices=["cpu", "cpu"]).devices == ("cpu", "cpu")
    cfg = WanConfig.from_options(preset="tiny", device="cuda:2,cuda:3")  # SD_DIFFUSION_DEVICE as it is
    assert cfg.devices == ("cuda:2", "cuda:3") and cfg.device == "cuda:2"
    assert WanConfig.tiny().devices == () and WanConfig.tiny().device == "cpu"
    assert WanConfig.from_options(preset="14b").num_layers == 40


W, H = 40, 36


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    xx = np.arange(W, dtype=np.float32)[None, :, None]
    return [np.clip(100 + 60 * np.sin((xx + 3 * i) / 6.0) + rng.normal(0, 6, (H, W, 3)), 0, 255).astype(np.uint8)
            for i in range(n)]


def _run(backend, frames):
    state = backend.new_stream(W, H, "a city street at night")
    per_push = [backend.push(state, f, i) for i, f in enumerate(frames)]
    return per_push, dict(p for push in per_push for p in push) | dict(backend.flush(state)), state


def test_the_backend_over_two_devices_returns_on_the_stream_batched_pushes_the_frames_of_one_chunk_calls():
    piped = make_backend("wan", preset="tiny", devices="cpu,cpu")
    assert piped.pipeline is not None and "pipelined over cpu,cpu (1+1 blocks)" in piped.info.model
    frames = _frames(17)  # 5 + 4 x 3: four chunks
    per_push, out, state = _run(piped, frames)
    # the push contract of stream batching: a chunk comes back when the next one is complete, the last on flush
    assert [len(p) for p in per_push] == [0] * 8 + [5] + [0, 0, 0, 4] * 2
    assert [i for p in per_push for i, _ in p] == list(range(13)) and sorted(out) == list(range(17))
    assert state.model_calls == 1 + 2 + 2 + 2 + 1  # one micro-batch per chunk in flight
    _, one_by_one, _ = _run(WanBackend(WanConfig.tiny(stream_batch=False)), frames)
    assert all(np.array_equal(out[i], one_by_one[i]) for i in range(17))  # exactly: the same one-chunk calls
    piped.pipeline.close()
