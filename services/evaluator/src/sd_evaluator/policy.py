"""The trained model as an agent: a trainer checkpoint, its camera, and nothing written by hand.

`CheckpointAgent.load` reads a checkpoint the trainer wrote (a local file, a store key, or the
`s3://bucket/key` URI the trainer reports as `checkpoint_uri`), rebuilds CILRS from the configuration
stored in it and loads its weights. Each step prepares the frame exactly as the dataset's frames were
made (`CameraSpec.prepare`), runs the network with the measured speed, takes the branch of the route
command (sd_trainer.config's mapping) and only clips the result to the valid control ranges.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import torch
from sd_common.objectstore import InvalidKey, ObjectNotFound, make_store
from sd_common.settings import StoreSettings
from sd_trainer.checkpoints import MAX_CHECKPOINT_BYTES
from sd_trainer.config import ConfigError, TrainConfig, branch_of_command
from sd_trainer.model import CILRS

from sd_evaluator.agents import MODEL, AgentError, Control, Observation
from sd_evaluator.camera_input import CameraSpec, CameraSpecError


class CheckpointError(AgentError):
    """A checkpoint that is missing, unreadable, or lacks what the agent needs (weights, config, camera)."""


def read_checkpoint_bytes(path_or_uri: str | Path, store_settings: StoreSettings | None = None) -> bytes:
    """The checkpoint file's bytes: a local path if one exists, else a store key or `s3://<bucket>/<key>`."""
    text = str(path_or_uri).strip()
    if not text:
        raise CheckpointError("no checkpoint given; pass a file path, a store key or an s3:// URI")
    path = Path(text)
    if path.is_file():
        return path.read_bytes()
    settings = store_settings or StoreSettings()
    key = text
    if text.startswith("s3://"):
        bucket, _, key = text[5:].partition("/")
        if settings.backend != "s3" or bucket != settings.bucket:
            raise CheckpointError(f"checkpoint {text} is in bucket {bucket!r}, but the store is "
                                  f"{settings.backend} {settings.bucket!r} (set SD_STORE_BACKEND=s3 and "
                                  f"SD_STORE_BUCKET={bucket})")
    elif "://" in text:
        raise CheckpointError(f"checkpoint {text}: only local paths, store keys and s3:// URIs are read")
    elif path.is_absolute() or text.startswith("."):
        raise CheckpointError(f"checkpoint {text} not found: no such file")

    async def fetch() -> bytes:
        store = make_store(settings)
        try:
            return await store.get_bytes(key, max_bytes=MAX_CHECKPOINT_BYTES)
        finally:
            await store.close()

    try:
        return asyncio.run(fetch())
    except ObjectNotFound:
        raise CheckpointError(f"checkpoint {text} not found: no such file, and no object {key!r} in the "
                              f"{settings.backend} store") from None
    except InvalidKey as e:
        raise CheckpointError(f"checkpoint {text} is neither a file nor a store key: {e}") from None


class CheckpointAgent:
    """The `model` agent: a trained CILRS checkpoint driving from the front camera and the speedometer."""

    name = MODEL
    privileged = False
    needs_image = True

    def __init__(self, model: CILRS, camera: CameraSpec, *, device: str | torch.device = "cpu", source: str = ""):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.camera = camera
        self.source = source

    @classmethod
    def load(cls, path_or_uri: str | Path, *, store_settings: StoreSettings | None = None,
             device: str | torch.device = "cpu") -> CheckpointAgent:
        """The agent of a trainer checkpoint; CheckpointError names a missing, corrupt or camera-less one."""
        data = read_checkpoint_bytes(path_or_uri, store_settings)
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as e:  # torch raises several kinds for a truncated or foreign file
            raise CheckpointError(f"checkpoint {path_or_uri} cannot be read as a trainer checkpoint "
                                  f"({type(e).__name__}: {e})") from None
        return cls.from_state(state, device=device, source=str(path_or_uri))

    @classmethod
    def from_state(cls, state: Any, *, device: str | torch.device = "cpu", source: str = "") -> CheckpointAgent:
        """The agent of a checkpoint's loaded state dict."""
        where = source or "checkpoint"
        if not isinstance(state, dict) or "model" not in state or "config" not in state:
            raise CheckpointError(f"{where} is not a trainer checkpoint (it has no `model` and `config` entries)")
        if state.get("camera") is None:
            raise CheckpointError(f"{where} names no camera: it was trained from a dataset whose segments.json "
                                  "has no camera mount, or by a trainer that did not record it; retrain it")
        try:
            camera = CameraSpec.from_dict(state["camera"])
        except CameraSpecError as e:
            raise CheckpointError(f"{where}: its camera is unusable: {e}") from None
        try:
            cfg = TrainConfig.from_overrides(state["config"])
        except ConfigError as e:
            raise CheckpointError(f"{where}: its config does not rebuild the network: {e}") from None
        model = CILRS(cfg.model)
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, KeyError) as e:
            raise CheckpointError(f"{where}: its weights do not fit the network its config describes: {e}") from None
        if (cfg.model.image_height, cfg.model.image_width) not in (
                (0, 0), (camera.input_height, camera.input_width)):
            raise CheckpointError(f"{where}: the config's input {cfg.model.image_width}x{cfg.model.image_height} "
                                  f"disagrees with its camera's {camera.input_width}x{camera.input_height}")
        return cls(model, camera, device=device, source=source)

    def reset(self, route_id: str) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: Observation) -> Control:
        """The network's control for this frame, speed and route command, clipped to the valid ranges."""
        if obs.image is None:
            raise AgentError("the model agent needs the camera frame; the runner sent none")
        try:
            branch = branch_of_command(obs.command)
        except ConfigError as e:
            raise AgentError(str(e)) from None
        picture = torch.from_numpy(self.camera.prepare(obs.image)).permute(2, 0, 1)[None].to(self.device)
        speed = torch.tensor([float(obs.speed_mps)], dtype=torch.float32, device=self.device)
        steer, throttle, brake = self.model(picture, speed).branches[0, branch].tolist()
        return Control.clipped(steer, throttle, brake)
