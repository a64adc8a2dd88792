"""Where the wan backend's parts come from: a local directory in diffusers' layout, or random (tests).

The layout (diffusers' `Wan-AI/Wan2.1-T2V-1.3B-Diffusers` as saved with `save_pretrained`):

    <weights_dir>/
      transformer/   config.json + *.safetensors     WanTransformer3DModel (the bidirectional base)
      vae/           config.json + *.safetensors     AutoencoderKLWan
      text_encoder/  config.json + *.safetensors     UMT5EncoderModel (umt5-xxl encoder)
      tokenizer/     tokenizer_config.json + tokenizer.json or spiece.model
      causal_generator.pt                            optional: the causal (CausVid / StreamDiffusionV2)
                                                     generator's state dict, loaded over transformer/

The tiny decoder (`tiny_vae_decoder`, TAEHV's taew2_1.pth) is a file of its own, named by its path; taehv.py
reads it and names what is missing or does not fit.

Nothing is ever fetched: every from_pretrained is local_files_only, and the layout is checked first so
a missing piece is named (with where it was looked for) before any weight is read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from sd_diffusion.backends import BackendError
from sd_diffusion.backends.wan.config import WanConfig

CAUSAL_GENERATOR = "causal_generator.pt"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class Parts:
    """The model's parts, on their device."""

    transformer: nn.Module  # diffusers WanTransformer3DModel
    vae: nn.Module  # diffusers AutoencoderKLWan
    text_encoder: nn.Module  # transformers UMT5EncoderModel
    tokenizer: object  # a transformers tokenizer


def missing_files(root: Path) -> list[str]:
    """What the layout lacks under root, each as a path (empty when complete)."""
    if not root.is_dir():
        return [f"{root} (the weights directory itself)"]
    missing = []
    for sub in ("transformer", "vae", "text_encoder"):
        d = root / sub
        if not (d / "config.json").is_file():
            missing.append(str(d / "config.json"))
        if not d.is_dir() or not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in d.iterdir()):
            missing.append(f"{d}/*.safetensors (the {sub}'s weights)")
    tok = root / "tokenizer"
    if not (tok / "tokenizer_config.json").is_file():
        missing.append(str(tok / "tokenizer_config.json"))
    if not ((tok / "tokenizer.json").is_file() or (tok / "spiece.model").is_file()):
        missing.append(f"{tok / 'tokenizer.json'} or {tok / 'spiece.model'}")
    return missing


def check_layout(root: Path) -> None:
    """BackendError naming everything missing from the weights directory."""
    missing = missing_files(root)
    if missing:
        raise BackendError("wan weights are incomplete; missing: " + "; ".join(missing)
                           + " (see sd_diffusion.backends.wan.weights for the layout)")


def load_parts(root: Path, device: torch.device, dtype: torch.dtype) -> Parts:
    """The parts from a local directory (checked first; never the network)."""
    check_layout(root)
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    transformer = WanTransformer3DModel.from_pretrained(root / "transformer", local_files_only=True, torch_dtype=dtype)
    generator = root / CAUSAL_GENERATOR
    if generator.is_file():
        load_causal_generator(transformer, generator)
    vae = AutoencoderKLWan.from_pretrained(root / "vae", local_files_only=True, torch_dtype=dtype)
    text_encoder = UMT5EncoderModel.from_pretrained(root / "text_encoder", local_files_only=True, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
    return Parts(*(m.to(device).eval() for m in (transformer, vae, text_encoder)), tokenizer)


def load_causal_generator(transformer: nn.Module, path: Path) -> None:
    """The causal generator's weights over the base model: a state dict in diffusers' names, or the original
    Wan names (CausVid's `{"generator": {"model.blocks.0.self_attn.q.weight": …}}`), converted."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("generator", "generator_ema", "state_dict"):  # the order StreamDiffusionV2 reads them in
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    state = {k.removeprefix("model."): v for k, v in state.items()}
    if any(".self_attn." in k for k in state):
        from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

        state = convert_wan_transformer_to_diffusers(state)
    result = transformer.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BackendError(f"{path} does not fit the transformer: {len(result.missing_keys)} missing keys (e.g. "
                           f"{result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected (e.g. "
                           f"{result.unexpected_keys[:3]})")


def build_transformer(cfg: WanConfig) -> nn.Module:
    """A WanTransformer3DModel of cfg's sizes with random weights (on the current default device)."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.latent_channels, out_channels=cfg.latent_channels, text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=cfg.rope_max_seq_len)


# The tiny tokenizer's words: enough for the tests' prompts; anything else is [UNK].
TINY_WORDS = ("a", "the", "city", "street", "road", "car", "sunny", "afternoon", "night", "rain", "snow",
              "photo", "photoreal", "of", "in", "at", "with", "wet", "golden", "hour", "fog", "winter")


def tiny_tokenizer() -> object:
    """A word-level tokenizer made in code (no files): <pad> 0, </s> 1, [UNK] 2, then TINY_WORDS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "[UNK]": 2, **{w: i + 3 for i, w in enumerate(TINY_WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="[UNK]")


def random_parts(cfg: WanConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Parts:
    """Random parts of cfg's sizes (the tests' tiny model); seeded, so two builds are equal."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    transformer = build_transformer(cfg)
    vae = AutoencoderKLWan(base_dim=cfg.vae_base_dim, z_dim=cfg.latent_channels, dim_mult=list(cfg.vae_dim_mult),
                           num_res_blocks=cfg.vae_num_res_blocks, temperal_downsample=list(cfg.vae_temporal_downsample))
    tokenizer = tiny_tokenizer()
    heads = max(1, cfg.text_dim // 8)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=cfg.text_dim, d_kv=8,
                                               d_ff=2 * cfg.text_dim, num_layers=2, num_heads=heads))
    modules = [m.to(device).eval() for m in (transformer, vae, text_encoder)]
    if dtype != torch.float32:  # random weights in bf16 on a GPU: everything cast (tests only)
        modules = [m.to(dtype) for m in modules]
    return Parts(*modules, tokenizer)


class PromptEmbeddings:
    """Text embeddings computed once per prompt and kept (a few, least recently used out first).

    `prepare` turns the embedding into what is kept (the backend keeps the transformer's cross-attention
    keys and values: about 94 MB a prompt for the 1.3B model in bf16, so 8 are kept by default).
    """

    def __init__(self, parts: Parts, text_len_tokens: int, keep: int = 8,
                 prepare: Callable[[torch.Tensor], Any] = lambda emb: emb) -> None:
        self.parts = parts
        self.text_len_tokens = text_len_tokens
        self.keep = keep
        self.prepare = prepare
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0  # how many prompts were encoded (the tests check the cache with it)

    def __call__(self, prompt: str) -> Any:
        """prepare(1 x text_len_tokens x text_dim embedding); zeros past the prompt's tokens, as Wan's pipelines pad."""
        with self._lock:
            if prompt in self._cache:
                self._cache.move_to_end(prompt)
                return self._cache[prompt]
        enc = self.parts.tokenizer([prompt], padding="max_length", max_length=self.text_len_tokens, truncation=True,
                                   return_tensors="pt")
        device = next(self.parts.text_encoder.parameters()).device
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        with torch.inference_mode():
            hidden = self.parts.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            emb = self.prepare(hidden * mask[..., None].to(hidden.dtype))
        with self._lock:
            self.computed += 1
            self._cache[prompt] = emb
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return emb
