"""Pipeline parallelism: the causal Wan transformer's blocks split over the GPUs of one pod (the 14B model).

As in StreamDiffusionV2's multi-GPU mode, the DiT's blocks are partitioned into contiguous stages, one
per device, and successive model calls (micro-batches: chunks) flow through the stages so that while
stage k runs chunk n, stage k-1 already runs chunk n+1. The model is not changed: a stage runs
CausalWanTransformer.run_blocks over its blocks (model.py); the first stage also runs the input
embedding and the last the output head.

- **Partition** (`stage_bounds`): balanced by block count. n blocks over s devices give the first
  n % s stages n // s + 1 blocks and the others n // s (5 over 2: 3 + 2; 30 over 4: 8, 8, 7, 7; the
  14B's 40 over 4: 10 each). The first stage also holds the patch embedding, the timestep and text
  embedders and the RoPE tables; the last the output norm and projection (both small beside a block,
  so they do not move the balance).
- **Placement**: each stage's blocks go to its device, and with them everything those blocks keep:
  their KV caches fill on that device (a block's keys are made there), and TextContext computes each
  block's cross-attention keys on the block's device.
- **Schedule**: one worker thread per stage, joined by single-slot hand-off queues (a stage waits
  while the next has not taken its previous output: no queue grows). Each stage takes calls in the
  order they came, so a block sees chunk n's keys written to its cache before chunk n+1 reaches it,
  which is what makes the pipelined result the single-device one: the same calls in the same order,
  block by block, give the same tensors (`torch.equal` in float32 on the CPU, test_wan_pipeline.py).
  Calls from several streams (one thread each) share the pipeline and fill it the same way.
- **CUDA**: every stage queues its kernels on its device's current (default) stream, from its own
  thread, so the devices run at once; the hand-off `.to(next device)` is issued by the producing
  stage, and torch orders a device-to-device copy after the source stream's work and before the
  destination stream's next, so no event or host synchronisation is needed between stages.
- **Grad mode**: each call runs in its caller's inference/grad mode (those are per thread in torch).

Only the transformer is split; the VAE and the text encoder stay on the first device (backend.py).
Exercised on the CPU only (two stages on "cpu"); no multi-GPU run has been made.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import torch

from sd_diffusion.backends import BackendError
from sd_diffusion.backends.wan.model import Activations, CausalWanTransformer, FrameKVCache, TextContext


class ModelCall(NamedTuple):
    """The arguments of one CausalWanTransformer call (one micro-batch of the pipeline)."""

    latents: torch.Tensor
    timesteps: torch.Tensor
    text: torch.Tensor | list[TextContext]
    caches: list[list[FrameKVCache]]
    first_frame_ids: list[int]
    write_cache: bool = True


@dataclass(frozen=True)
class Stage:
    """Blocks start..stop-1 on one device."""

    device: torch.device
    start: int
    stop: int


def stage_bounds(num_blocks: int, num_stages: int) -> list[tuple[int, int]]:
    """Contiguous (start, stop) block ranges, balanced by count: the first num_blocks % num_stages get one more."""
    if not 1 <= num_stages <= num_blocks:
        raise BackendError(f"cannot split {num_blocks} blocks into {num_stages} stages (1..{num_blocks})")
    base, extra = divmod(num_blocks, num_stages)
    bounds, start = [], 0
    for s in range(num_stages):
        stop = start + base + (1 if s < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def resolve_devices(names: Sequence[str], num_blocks: int) -> list[torch.device]:
    """The pipeline's devices from their names (WanConfig.devices); BackendError says what is wrong with them."""
    listed = ",".join(names)
    if len(names) < 2:
        raise BackendError(f"wan devices {listed!r}: a pipeline needs two devices or more (for one, set device)")
    if len(names) > num_blocks:
        raise BackendError(f"wan devices {listed!r}: {len(names)} devices for {num_blocks} blocks; at most one "
                           f"device a block")
    devices = []
    for name in names:
        if name == "auto":
            raise BackendError(f"wan devices {listed!r}: name every device (cuda:0,cuda:1,...); 'auto' is for device")
        try:
            device = torch.device(name)
        except RuntimeError:
            raise BackendError(f"wan devices {listed!r}: {name!r} is not a device (cpu, cuda:N)") from None
        if device.type not in ("cpu", "cuda"):
            raise BackendError(f"wan devices {listed!r}: {name!r} is neither cpu nor cuda:N")
        if device.type == "cuda" and device.index is None:
            raise BackendError(f"wan devices {listed!r}: give each GPU's index (cuda:N), not {name!r}")
        devices.append(device)
    if len({d.type for d in devices}) > 1:
        raise BackendError(f"wan devices {listed!r}: mixes the CPU and GPUs (the stages run in one dtype: bf16 on "
                           f"GPUs, float32 on the CPU)")
    twice = sorted({str(d) for d in devices if d.type == "cuda" and devices.count(d) > 1})
    if twice:
        raise BackendError(f"wan devices {listed!r}: {', '.join(twice)} named twice; one stage a GPU (only cpu "
                           f"may repeat, for tests)")
    if devices[0].type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(f"wan devices {listed!r} asked for, but torch sees no CUDA device")
        count = torch.cuda.device_count()
        absent = [str(d) for d in devices if d.index >= count]
        if absent:
            raise BackendError(f"wan devices {listed!r}: {', '.join(absent)} not there; torch sees {count} CUDA "
                               f"device(s)")
    return devices


def place(model: CausalWanTransformer, stages: Sequence[Stage]) -> None:
    """Moves each stage's blocks to its device, the input embedding to the first's and the head to the last's."""
    dit = model.dit
    first, last = stages[0].device, stages[-1].device
    for part in (dit.patch_embedding, dit.condition_embedder, dit.rope):
        part.to(first)
    for stage in stages:
        for i in range(stage.start, stage.stop):
            dit.blocks[i].to(stage.device)
    for part in (dit.norm_out, dit.proj_out):
        part.to(last)
    table = dit.scale_shift_table  # the head's modulation: a parameter of the model itself, not of a submodule
    dit.scale_shift_table = torch.nn.Parameter(table.detach().to(last), requires_grad=table.requires_grad)


@dataclass(eq=False)
class _Job:
    call: ModelCall
    seq: int
    inference: bool
    grad: bool
    act: Activations | None = None
    result: torch.Tensor | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class PipelineParallelWan:
    """See the module docstring. `run(calls)` gives the same outputs as calling `model` on each call in turn."""

    def __init__(self, model: CausalWanTransformer, devices: Sequence[torch.device | str],
                 output_device: torch.device | str | None = None) -> None:
        devices = [torch.device(d) for d in devices]
        self.model = model
        self.stages = [Stage(d, start, stop) for d, (start, stop) in zip(devices, stage_bounds(len(model.dit.blocks),
                                                                                               len(devices)))]
        self.output_device = torch.device(output_device) if output_device is not None else devices[0]
        place(model, self.stages)
        # what each stage did, in order: (perf_counter seconds, stage, call number, "start" | "end")
        self.log: deque[tuple[float, int, int, str]] = deque(maxlen=4096)
        self._seq = itertools.count()
        self._inboxes = [queue.Queue(maxsize=1) for _ in self.stages]
        self._closed = False
        self._threads = [threading.Thread(target=self._work, args=(s,), name=f"wan-stage-{s}", daemon=True)
                         for s in range(len(self.stages))]
        for t in self._threads:
            t.start()

    def __call__(self, latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor | list[TextContext],
                 caches: list[list[FrameKVCache]], first_frame_ids: list[int],
                 write_cache: bool = True) -> torch.Tensor:
        """One call, as CausalWanTransformer.forward takes it (nothing else in flight from this caller)."""
        return self.run([ModelCall(latents, timesteps, text, caches, first_frame_ids, write_cache)])[0]

    def run(self, calls: Sequence[ModelCall]) -> list[torch.Tensor]:
        """The flow of each call, on output_device; the calls are in flight together, in this order."""
        if self._closed:
            raise BackendError("the wan pipeline is closed")
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
        jobs = []
        for call in calls:  # each put waits while the first stage's slot is taken
            job = _Job(ModelCall(*call), next(self._seq), inference, grad)
            self._inboxes[0].put(job)
            jobs.append(job)
        for job in jobs:
            job.done.wait()
        for job in jobs:
            if job.error is not None:
                raise job.error
        return [job.result for job in jobs]

    def close(self) -> None:
        """Stops the stage threads (after the calls in flight)."""
        if not self._closed:
            self._closed = True
            self._inboxes[0].put(None)
            for t in self._threads:
                t.join()

    def __enter__(self) -> PipelineParallelWan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self, s: int) -> None:
        stage = self.stages[s]
        last = s == len(self.stages) - 1
        if stage.device.type == "cuda":
            torch.cuda.set_device(stage.device)
        inbox = self._inboxes[s]
        while True:
            job = inbox.get()
            if job is None:
                if not last:
                    self._inboxes[s + 1].put(None)
                return
            try:
                with torch.inference_mode(job.inference), torch.set_grad_enabled(job.grad):
                    self.log.append((time.perf_counter(), s, job.seq, "start"))
                    if s == 0:
                        c = job.call
                        act = self.model.embed(c.latents.to(stage.device), c.timesteps.to(stage.device), c.text,
                                               c.caches, c.first_frame_ids, c.write_cache)
                    else:
                        act = job.act
                    act = self.model.run_blocks(act, stage.start, stage.stop)
                    if last:
                        job.result = self.model.head(act).to(self.output_device)
                    else:
                        job.act = act.to(self.stages[s + 1].device)  # the hand-off copy, queued behind this stage
                    self.log.append((time.perf_counter(), s, job.seq, "end"))
            except BaseException as e:  # the caller re-raises it; the stage goes on with the next call
                job.error = e
                job.done.set()
                continue
            if last:
                job.act = None
                job.done.set()
            else:
                self._inboxes[s + 1].put(job)
