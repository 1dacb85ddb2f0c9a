"""Models: Qwen3 (Qwen2/Llama via flags), presets with seeded random weights, HF folders."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from runtime_modules.config import ModelConfig
from runtime_modules.models.qwen3 import AttnMeta, CausalLM, Kernels
from runtime_modules.models.weights import (
    iter_hf_weights,
    load_into,
    random_state_dict,
    save_pretrained,
)

PRESETS = ("tiny", "qwen3-0.6b")
log = logging.getLogger(__name__)

__all__ = [
    "PRESETS",
    "AttnMeta",
    "CausalLM",
    "Kernels",
    "ModelConfig",
    "build_model",
    "load_tokenizer",
    "model_config",
    "save_pretrained",
]


def model_config(model: str | Path) -> ModelConfig:
    """The ModelConfig of a preset name or a Hugging Face folder."""
    if isinstance(model, str) and model in PRESETS:
        return ModelConfig.from_name(model)
    if Path(model).is_dir():
        return ModelConfig.from_hf(model)
    raise ValueError(f"model {str(model)!r} is neither a preset {list(PRESETS)} nor a folder "
                     "with config.json")


def build_model(model: str | Path, cfg: ModelConfig, kernels: Kernels, device: str,
                dtype: torch.dtype, seed: int, max_pos: int) -> CausalLM:
    """The engine model with weights: seeded random for a preset, from disk for a folder."""
    with torch.device("meta"):
        net = CausalLM(cfg, kernels, max_pos)
    net = net.to_empty(device=device)
    net.rotary.build(device)
    if isinstance(model, str) and model in PRESETS:
        load_into(net, iter(random_state_dict(cfg, seed).items()), where=f"preset {model!r}")
    else:
        load_into(net, iter_hf_weights(model), where=str(model))
    return net.to(dtype=dtype).eval().requires_grad_(False)


def load_tokenizer(model: str | Path) -> Any | None:
    """A `tokenizers.Tokenizer` if the folder has tokenizer.json (and tokenizers is installed)."""
    if not (isinstance(model, (str, Path)) and (Path(model) / "tokenizer.json").is_file()):
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        log.warning("%s has tokenizer.json but the tokenizers package is not installed: "
                    "prompts must be token ids and outputs carry no text", model)
        return None
    return Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
