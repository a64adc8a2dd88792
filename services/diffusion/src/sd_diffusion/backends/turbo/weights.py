"""Where the turbo backend's parts come from: a local directory in diffusers' layout, or random (tests).

The layout (stabilityai/sd-turbo as published, or any StableDiffusionPipeline saved with save_pretrained):

    <model_dir>/
      model_index.json                                  the pipeline's class and parts
      unet/          config.json + *.safetensors        UNet2DConditionModel
      vae/           config.json + *.safetensors        AutoencoderKL
      text_encoder/  config.json + *.safetensors        CLIPTextModel
      tokenizer/     tokenizer_config.json + vocab.json and merges.txt (or tokenizer.json)
      scheduler/     scheduler_config.json              its _class_name is looked up in diffusers

    <tiny_vae_dir>/  config.json + *.safetensors        AutoencoderTiny (madebyollin/taesd): decodes

Weights saved only as the fp16 variant (`*.fp16.safetensors`, as the hub's fp16 download) are read as
such. Nothing is ever fetched: every from_pretrained is local_files_only, and the layout is checked
first so that a missing piece is named, with where it was looked for, before any weight is read.
"""

from __future__ import annotations

import json
import string
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from sd_diffusion.backends import BackendError

MODEL_INDEX = "model_index.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")

# stabilityai/sd-turbo's scheduler/scheduler_config.json (what the tiny model uses too)
SD_TURBO_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                          prediction_type="epsilon", steps_offset=1, timestep_spacing="trailing",
                          interpolation_type="linear", use_karras_sigmas=False)


@dataclass
class Parts:
    """The model's parts, on their device."""

    unet: nn.Module  # diffusers UNet2DConditionModel
    vae: nn.Module  # diffusers AutoencoderKL: encodes, and decodes unless there is a tiny VAE
    text_encoder: nn.Module  # transformers CLIPTextModel
    tokenizer: object  # a transformers (CLIP) tokenizer
    scheduler: SchedulerMixin  # a template: each stream gets its own copy (a scheduler keeps a step index)
    tiny_vae: nn.Module | None = None  # diffusers AutoencoderTiny, decoding instead of the VAE


def _weights(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES)] if d.is_dir() else []


def _model_files(d: Path, what: str) -> list[str]:
    missing = []
    if not (d / "config.json").is_file():
        missing.append(str(d / "config.json"))
    if not _weights(d):
        missing.append(f"{d}/*.safetensors ({what}'s weights)")
    return missing


def missing_files(root: Path) -> list[str]:
    """What the sd-turbo layout lacks under root, each as a path (empty when complete)."""
    if not root.is_dir():
        return [f"{root} (the model directory itself)"]
    missing = [] if (root / MODEL_INDEX).is_file() else [str(root / MODEL_INDEX)]
    for sub in ("unet", "vae", "text_encoder"):
        missing += _model_files(root / sub, f"the {sub}")
    tok = root / "tokenizer"
    if not (tok / "tokenizer_config.json").is_file():
        missing.append(str(tok / "tokenizer_config.json"))
    if not ((tok / "tokenizer.json").is_file() or ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file())):
        missing.append(f"{tok / 'vocab.json'} and {tok / 'merges.txt'} (or {tok / 'tokenizer.json'})")
    if not (root / "scheduler" / "scheduler_config.json").is_file():
        missing.append(str(root / "scheduler" / "scheduler_config.json"))
    return missing


def check_layout(root: Path) -> None:
    """BackendError naming everything missing from the model directory."""
    missing = missing_files(root)
    if missing:
        raise BackendError("turbo weights are incomplete; missing: " + "; ".join(missing)
                           + " (see sd_diffusion.backends.turbo.weights for the layout)")


def _variant(d: Path) -> str | None:
    """'fp16' when the folder holds only the fp16 variant's weights (`*.fp16.safetensors`)."""
    names = [p.name for p in _weights(d)]
    return "fp16" if names and all(".fp16." in n for n in names) else None


def _load(what: str, d: Path, load):
    try:
        return load(d, _variant(d))
    except (OSError, ValueError, KeyError) as e:  # a corrupt or mismatched config or weights file
        raise BackendError(f"cannot load the turbo {what} from {d}: {e}") from e


def scheduler_from(d: Path) -> SchedulerMixin:
    """The scheduler named by d/scheduler_config.json's _class_name, from diffusers."""
    config = json.loads((d / "scheduler_config.json").read_text())
    name = config.get("_class_name")
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin) and hasattr(cls, "add_noise")):
        raise BackendError(f"{d / 'scheduler_config.json'} names scheduler {name!r}, which is not a diffusers "
                           "scheduler that can add noise (sd-turbo's is EulerDiscreteScheduler)")
    return cls.from_pretrained(d, local_files_only=True)


def load_parts(root: Path, device: torch.device, dtype: torch.dtype) -> Parts:
    """The parts from a local directory (checked first; never the network)."""
    check_layout(root)
    unet = _load("unet", root / "unet", lambda d, v: UNet2DConditionModel.from_pretrained(
        d, local_files_only=True, torch_dtype=dtype, variant=v))
    vae = _load("vae", root / "vae", lambda d, v: AutoencoderKL.from_pretrained(
        d, local_files_only=True, torch_dtype=dtype, variant=v))
    text_encoder = _load("text encoder", root / "text_encoder", lambda d, v: CLIPTextModel.from_pretrained(
        d, local_files_only=True, dtype=dtype, variant=v))
    tokenizer = _load("tokenizer", root / "tokenizer",
                      lambda d, v: AutoTokenizer.from_pretrained(d, local_files_only=True))
    scheduler = _load("scheduler", root / "scheduler", lambda d, v: scheduler_from(d))
    return Parts(*(m.to(device).eval() for m in (unet, vae, text_encoder)), tokenizer, scheduler)


def load_tiny_vae(d: Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """An AutoencoderTiny (taesd) from a local directory (checked first)."""
    missing = [f"{d} (the tiny VAE directory itself)"] if not d.is_dir() else _model_files(d, "the tiny VAE")
    if missing:
        raise BackendError("the turbo tiny VAE is incomplete; missing: " + "; ".join(missing)
                           + " (an AutoencoderTiny saved with save_pretrained, e.g. madebyollin/taesd)")
    vae = _load("tiny VAE", d, lambda d, v: AutoencoderTiny.from_pretrained(
        d, local_files_only=True, torch_dtype=dtype, variant=v))
    return vae.to(device).eval()


def describe(root: Path) -> str:
    """The checkpoint's name and pipeline class from model_index.json (the directory's name when it has none)."""
    index = json.loads((root / MODEL_INDEX).read_text())
    name = index.get("_name_or_path") or root.resolve().name
    return f"{name} ({index.get('_class_name', 'an unnamed pipeline')}, {root})"


# --- the tiny random model (tests, and the CPU benchmark) -----------------------------------------------

def tiny_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP BPE vocabulary of single letters (every word is spelt out) and a few merges."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in string.ascii_lowercase:
        vocab[letter] = len(vocab)
    for letter in string.ascii_lowercase:
        vocab[letter + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("i", "n</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return vocab, merges


TINY_TEXT_TOKENS = 16


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIPTokenizer over tiny_vocab(), made in code (no files)."""
    vocab, merges = tiny_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=TINY_TEXT_TOKENS)


def tiny_tiny_vae() -> AutoencoderTiny:
    """An AutoencoderTiny of the tiny model's latent space (8x, 4 channels), random weights."""
    return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4)


def random_parts(device: torch.device, dtype: torch.dtype, seed: int = 0) -> Parts:
    """The tiny model: sd-turbo's structure (an 8x VAE of 4 latent channels, a CLIP text encoder feeding the
    UNet's cross-attention, its scheduler) at about 270 thousand parameters; seeded, so two builds are equal."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=TINY_TEXT_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8, use_linear_projection=True)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4,
        sample_size=64, scaling_factor=0.18215)
    modules = [m.to(device).eval() for m in (unet, vae, text_encoder)]
    if dtype != torch.float32:  # random weights in half precision on a GPU: everything cast (tests only)
        modules = [m.to(dtype) for m in modules]
    return Parts(*modules, tokenizer, EulerDiscreteScheduler(**SD_TURBO_SCHEDULER))


class PromptEmbeddings:
    """Text embeddings computed once per prompt and kept (the `keep` most recently used).

    As diffusers' Stable Diffusion pipelines encode a prompt: padded to the tokenizer's length (77 for
    CLIP), no attention mask, the text encoder's last hidden state. Guidance scale 0 (SD-Turbo's), so there
    is no negative prompt to encode.
    """

    def __init__(self, tokenizer, text_encoder: nn.Module, keep: int = 8) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.keep = keep
        self.max_tokens = min(int(tokenizer.model_max_length), int(text_encoder.config.max_position_embeddings))
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0  # how many prompts were encoded

    def __call__(self, prompt: str) -> torch.Tensor:
        """1 x tokens x width: the prompt's embedding, the UNet's encoder_hidden_states."""
        with self._lock:
            if prompt in self._cache:
                self._cache.move_to_end(prompt)
                return self._cache[prompt]
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.max_tokens, truncation=True,
                             return_tensors="pt").input_ids
        device = next(self.text_encoder.parameters()).device
        with torch.inference_mode():
            emb = self.text_encoder(ids.to(device))[0]
        with self._lock:
            self.computed += 1
            self._cache[prompt] = emb
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return emb
