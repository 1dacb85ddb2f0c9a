"""Weights: seeded random Hugging Face state dicts, safetensors save/load, name mapping.

Random weights are made in Hugging Face parameter names (so `save_pretrained` writes a
folder transformers loads), then mapped onto the engine's fused projections by
`load_into`: q/k/v -> qkv_proj and gate/up -> gate_up_proj.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from runtime_modules.config import ModelConfig

# HF suffix -> (engine suffix, shard index among the fused parts)
_FUSED = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
          "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}


def random_state_dict(cfg: ModelConfig, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Seeded random weights in Hugging Face names (normal(0, initializer_range) matrices)."""
    g = torch.Generator().manual_seed(seed)
    std = cfg.initializer_range
    hs, d = cfg.hidden_size, cfg.head_dim

    def mat(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * std).to(dtype)

    def norm(n: int) -> torch.Tensor:
        # not all ones, so a test notices a norm weight that is ignored
        return (1.0 + 0.1 * torch.randn(n, generator=g)).to(dtype)

    sd = {"model.embed_tokens.weight": mat(cfg.vocab_size, hs)}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = mat(cfg.num_attention_heads * d, hs)
        sd[p + "self_attn.k_proj.weight"] = mat(cfg.num_key_value_heads * d, hs)
        sd[p + "self_attn.v_proj.weight"] = mat(cfg.num_key_value_heads * d, hs)
        if cfg.attention_bias:
            for n, h in (("q", cfg.num_attention_heads), ("k", cfg.num_key_value_heads),
                         ("v", cfg.num_key_value_heads)):
                sd[p + f"self_attn.{n}_proj.bias"] = mat(h * d)
        sd[p + "self_attn.o_proj.weight"] = mat(hs, cfg.num_attention_heads * d)
        if cfg.qk_norm:
            sd[p + "self_attn.q_norm.weight"] = norm(d)
            sd[p + "self_attn.k_norm.weight"] = norm(d)
        sd[p + "mlp.gate_proj.weight"] = mat(cfg.intermediate_size, hs)
        sd[p + "mlp.up_proj.weight"] = mat(cfg.intermediate_size, hs)
        sd[p + "mlp.down_proj.weight"] = mat(hs, cfg.intermediate_size)
        sd[p + "input_layernorm.weight"] = norm(hs)
        sd[p + "post_attention_layernorm.weight"] = norm(hs)
    sd["model.norm.weight"] = norm(hs)
    if not cfg.tie_word_embeddings:
        sd["lm_head.weight"] = mat(cfg.vocab_size, hs)
    return sd


def save_pretrained(preset_or_config: str | ModelConfig, path: str | Path, seed: int = 0,
                    dtype: torch.dtype = torch.float32) -> Path:
    """Write config.json + model.safetensors (random weights) that transformers can load.

    Example: `save_pretrained("tiny", "/tmp/tiny")`, then
    `AutoModelForCausalLM.from_pretrained("/tmp/tiny")` or `LLM("/tmp/tiny")`.
    """
    cfg = (ModelConfig.from_name(preset_or_config) if isinstance(preset_or_config, str)
           else preset_or_config)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    sd = random_state_dict(cfg, seed, dtype)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg.to_hf(dtype), indent=2, sort_keys=True))
    return out


def iter_hf_weights(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor in the folder's *.safetensors files."""
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{path}: no *.safetensors files in the model folder")
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
                yield name, fh.get_tensor(name)


def load_into(model: torch.nn.Module, weights: Iterator[tuple[str, torch.Tensor]],
              where: str = "weights") -> None:
    """Copy HF-named tensors into the engine model, fusing q/k/v and gate/up."""
    params = dict(model.named_parameters())
    seen: set[str] = set()
    cfg = model.config
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    sizes = {"qkv_proj": (q, kv, kv), "gate_up_proj": (cfg.intermediate_size,) * 2}
    for name, t in weights:
        target = name.removeprefix("model.")
        if "rotary_emb" in target:
            continue
        parts = target.split(".")
        shard = None
        if len(parts) >= 2 and parts[-2] in _FUSED:
            fused, shard = _FUSED[parts[-2]]
            parts[-2] = fused
            target = ".".join(parts)
        if target not in params:
            if name == "lm_head.weight" and cfg.tie_word_embeddings:
                continue  # tied: the embedding is the head
            raise ValueError(f"{where}: unexpected tensor {name!r} (no engine parameter "
                             f"{target!r})")
        p = params[target]
        dst = p.data
        if shard is not None:
            sz = sizes[parts[-2]]
            start = sum(sz[:shard])
            dst = p.data.narrow(0, start, sz[shard])
            seen.add(f"{target}#{shard}")
        else:
            seen.add(target)
        if tuple(dst.shape) != tuple(t.shape):
            raise ValueError(f"{where}: tensor {name!r} has shape {tuple(t.shape)}, expected "
                             f"{tuple(dst.shape)}")
        dst.copy_(t)
    expected = set()
    for n, p in params.items():
        fused = n.split(".")[-2] if n.count(".") else ""
        if fused in sizes:
            expected.update(f"{n}#{i}" for i in range(len(sizes[fused])))
        else:
            expected.add(n)
    missing = sorted(expected - seen)
    if missing:
        raise ValueError(f"{where}: missing tensors for {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}")
