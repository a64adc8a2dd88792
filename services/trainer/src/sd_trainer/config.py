"""Configuration of a CILRS training run, as dataclasses (docs/training.md).

Defaults follow coiltraine's CILRS configuration (Codevilla et al., ICCV 2019): ResNet-34 perception,
speed input divided by 12 m/s, four command branches plus a speed branch, L1 losses weighted
0.95/0.05 (branches/speed) and 0.5/0.45/0.05 (steer/throttle/brake), Adam at 2e-4 with step decay.
A run's overrides are a JSON object of the same shape (`TrainConfig.from_overrides`); an unknown key or
a value of the wrong type is an error that names the key, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

# The four CILRS command branches, in coiltraine's order (its directions 2/3/4/5 of CARLA 0.8).
BRANCH_NAMES: tuple[str, ...] = ("follow", "left", "right", "straight")

# CARLA RoadOption (measurements.json `command`) -> branch index. The lane changes have no branch of
# their own in CILRS and are learned by the follow-lane branch, as in coiltraine's CARLA 0.9 ports.
# VOID (-1) has no branch: the processor never exports such frames, and a reader that meets one fails.
ROAD_OPTION_TO_BRANCH: dict[int, int] = {
    4: 0,  # LANEFOLLOW
    5: 0,  # CHANGELANELEFT  -> follow
    6: 0,  # CHANGELANERIGHT -> follow
    1: 1,  # LEFT
    2: 2,  # RIGHT
    3: 3,  # STRAIGHT
}

CONTROL_NAMES: tuple[str, ...] = ("steer", "throttle", "brake")


class ConfigError(ValueError):
    """An override names no field, or gives a value of the wrong type or range."""


def branch_of_command(road_option: int) -> int:
    """The CILRS branch that learns frames with this RoadOption; ConfigError for VOID or unknown."""
    try:
        return ROAD_OPTION_TO_BRANCH[int(road_option)]
    except KeyError:
        raise ConfigError(f"route command {road_option} has no CILRS branch (known RoadOptions: "
                          f"{sorted(ROAD_OPTION_TO_BRANCH)}; VOID frames are never exported)") from None


@dataclass(frozen=True)
class ModelConfig:
    """The network: perception backbone, speed input, join, command branches and speed branch."""

    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet34"
    # Channels of the first ResNet stage (64 in the published networks; tests use 8 for tiny models).
    base_width: int = 64
    # Perception features fed to the join (ResNet-34's fc is replaced by 512 outputs in CILRS).
    perception_features: int = 512
    # Input image size (height, width); 0 means "the dataset version's output size" (segments.json).
    image_height: int = 0
    image_width: int = 0
    speed_factor_mps: float = 12.0  # coiltraine SPEED_FACTOR: speed input and target are speed / 12
    measurements_neurons: tuple[int, ...] = (128, 128)
    join_neurons: tuple[int, ...] = (512,)
    branch_neurons: tuple[int, ...] = (256, 256)
    branch_dropouts: tuple[float, ...] = (0.0, 0.5)
    speed_branch_neurons: tuple[int, ...] = (256, 256)
    speed_branch_dropouts: tuple[float, ...] = (0.0, 0.5)
    # A torchvision-format ResNet state dict on local disk (loaded by parameter name); "" = random init.
    # Nothing is ever downloaded.
    pretrained_path: str = ""


@dataclass(frozen=True)
class LossConfig:
    """coiltraine's branched L1 loss: the command's branch and the speed branch, weighted."""

    kind: Literal["l1", "l2"] = "l1"
    branch_weight: float = 0.95
    speed_weight: float = 0.05
    steer_weight: float = 0.5
    throttle_weight: float = 0.45
    brake_weight: float = 0.05


@dataclass(frozen=True)
class AugmentConfig:
    """Photometric augmentation of training images only (labels stay valid: nothing geometric).

    The transforms and strengths are coiltraine's (input/scheduler.py, the `medium` schedule, the set the
    CIL paper lists: contrast, brightness, tone, Gaussian blur, Gaussian noise, salt-and-pepper noise and
    region dropout). coiltraine ramps them up with the images seen; these defaults hold them at the values
    that schedule reaches after a 100,000-iteration batch-120 run (its NoCrash length). Its NoCrash CILRS
    configs themselves set `AUGMENTATION: None`: `enabled: false` reproduces that run. Every range is in
    [0, 1] image units. See sd_trainer/augment.py and docs/training.md.
    """

    enabled: bool = True
    probability: float = 0.117  # chance that each transform is applied to an image (coiltraine: 0.05 -> 0.117)
    # Chance that a transform draws its value per colour channel rather than once per image (colour shifts).
    per_channel_probability: float = 0.067
    random_order: bool = True  # each image takes its transforms in its own random order, as coiltraine
    brightness: float = 0.0566  # additive, U(-brightness, +brightness) (coiltraine Add ±14.4 of 255)
    brightness_multiply: tuple[float, float] = (0.879, 1.333)  # multiplicative, U(lo, hi)
    contrast: float = 0.067  # (v - 0.5) * U(1 - contrast, 1 + contrast) + 0.5
    saturation: float = 1.0  # blend toward the grey image by U(0, saturation) (coiltraine Grayscale)
    hue_deg: float = 0.0  # rotation of hue by U(-hue_deg, +hue_deg) (not in coiltraine: off)
    gaussian_blur_sigma_max: float = 0.833  # pixels, sigma ~ U(0, max)
    # Per-pixel noise, std ~ U(0, max). coiltraine passes 0.0574 to imgaug in 0-255 units, where it is
    # invisible (0.06 grey levels); read here as a fraction of the full range (about 15 grey levels).
    gaussian_noise_std: float = 0.0574
    salt_pepper_fraction: float = 0.0574  # pixels set to black, fraction ~ U(0, max) (coiltraine Dropout)
    region_dropout_fraction: float = 0.0574  # rectangles set to black, area fraction ~ U(0, max) (CoarseDropout)
    # Resolution of the dropout mask as a fraction of the image's, U(lo, hi): cells of 1/size pixels (5-12.5 px).
    region_dropout_size: tuple[float, float] = (0.08, 0.2)


@dataclass(frozen=True)
class DataConfig:
    """Where the dataset version comes from and how batches are made."""

    batch_size: int = 120  # coiltraine's CILRS batch size
    num_workers: int = 4  # DataLoader worker processes (0: load in the training process)
    prefetch_factor: int = 2
    pin_memory: bool = True  # only used on CUDA
    # Cache of dataset files read from the object store; "" = <run out dir>/data
    cache_dir: str = ""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # How training frames are drawn (docs/training.md, "Sampling"): "uniform" is coiltraine's shuffled
    # epochs; "standing" draws the frames where the car stands (below standing_speed_mps) as often
    # pulling away (throttle > brake) as holding, against the inertia problem.
    sampling: Literal["uniform", "standing"] = "uniform"
    standing_speed_mps: float = 0.5


@dataclass(frozen=True)
class OptimConfig:
    """Adam with step decay, gradient clipping."""

    learning_rate: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_decay_every_steps: int = 75_000  # coiltraine LEARNING_RATE_DECAY_INTERVAL
    lr_decay_factor: float = 0.5  # coiltraine LEARNING_RATE_DECAY_LEVEL
    grad_clip_norm: float = 10.0  # 0 disables clipping


@dataclass(frozen=True)
class TrainConfig:
    """One training run: everything above plus the loop's schedule."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    max_steps: int = 200_000
    # Open-loop validation every this many steps and at the end (0: once per epoch of the train split).
    val_every_steps: int = 0
    checkpoint_every_steps: int = 5_000
    log_every_steps: int = 50
    seed: int = 0
    amp: bool = True  # mixed precision (bfloat16 autocast) on CUDA; ignored on CPU
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"  # float16 adds a GradScaler (older GPUs)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | str | None) -> TrainConfig:
        """The defaults with `overrides` (a dict or JSON text of the same nesting) applied."""
        if overrides is None or overrides == "":
            return cls()
        if isinstance(overrides, str):
            try:
                overrides = json.loads(overrides)
            except json.JSONDecodeError as e:
                raise ConfigError(f"config overrides are not valid JSON: {e}") from None
        if not isinstance(overrides, dict):
            raise ConfigError("config overrides must be a JSON object")
        return _apply(cls(), overrides, "")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples as lists), recorded beside every checkpoint."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _apply(obj: Any, overrides: dict[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        where = f"{path}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {where!r}; known keys here: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where!r} is a section; give a JSON object")
            changes[key] = _apply(current, value, where + ".")
        else:
            changes[key] = _coerce(value, hints[key], where)
    return dataclasses.replace(obj, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"config key {where!r} must be one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {where!r} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"config key {where!r} must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"config key {where!r} has an unsupported type")  # none in the config today
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {where!r} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {where!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key {where!r} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {where!r} must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key {where!r} has an unsupported type {hint!r}")
