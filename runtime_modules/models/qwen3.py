"""Qwen3 (and Qwen2/Llama via config flags) decoder in torch, calling the kernel slots.

Attention, KV-cache writes and RMSNorm go through the loaded slot functions (`Kernels`), so
an evolved kernel really runs in the model. Projections are fused (qkv, gate+up) for fewer
GEMMs; `weights.py` maps Hugging Face parameter names onto the fused ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from runtime_modules.config import ModelConfig
from runtime_modules.profiling import prof_range


@dataclass(slots=True)
class Kernels:
    """The kernel slot functions the model calls (tunable params already bound)."""

    store_kvcache: Callable[..., Any]
    decode_attention: Callable[..., Any]
    prefill_attention: Callable[..., Any]
    rmsnorm: Callable[..., Any]


@dataclass(slots=True)
class AttnMeta:
    """Per-step attention inputs, shared by every layer (device tensors)."""

    is_decode: bool
    slot_mapping: torch.Tensor        # [T] int32, -1 for padding rows
    context_lens: torch.Tensor        # [B] int32, KV length after this step
    block_tables: torch.Tensor        # [B, max_blocks] int32
    cu_seqlens_q: torch.Tensor | None = None  # [B+1] int32 (prefill path)
    max_seqlen_q: int = 1


class RMSNorm(nn.Module):
    """RMSNorm through the rmsnorm slot (optionally fused with the residual add)."""

    def __init__(self, size: int, eps: float, kernels: Kernels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.kernels = kernels

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        return self.kernels.rmsnorm(x, self.weight, self.eps, residual)


class Rotary(nn.Module):
    """Rotary embedding (rotate-half layout, as Hugging Face Llama/Qwen)."""

    def __init__(self, head_dim: int, theta: float, max_pos: int):
        super().__init__()
        self.head_dim, self.theta, self.max_pos = head_dim, theta, max_pos
        self.cos = self.sin = torch.empty(0)  # plain fp32 tensors, untouched by .to(dtype)

    def build(self, device: torch.device | str) -> None:
        """Make the cos/sin tables on `device` (fp32, as Hugging Face computes them)."""
        d = self.head_dim
        inv = 1.0 / self.theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d)
        freqs = torch.outer(torch.arange(self.max_pos, dtype=torch.int64).float(), inv)
        self.cos, self.sin = freqs.cos().to(device), freqs.sin().to(device)  # [P, D/2]

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # x: [T, H, D]; cos/sin: [T, 1, D/2]
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin[positions].unsqueeze(1)
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1).to(x.dtype)


class Attention(nn.Module):
    """GQA self-attention over the paged KV cache."""

    def __init__(self, cfg: ModelConfig, kernels: Kernels, rotary: Rotary):
        super().__init__()
        self.hq, self.hkv, self.d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_size, self.kv_size = self.hq * self.d, self.hkv * self.d
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size,
                                  bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.d, cfg.rms_norm_eps, kernels) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.d, cfg.rms_norm_eps, kernels) if cfg.qk_norm else None
        self.kernels, self.rotary = kernels, rotary
        self.scale = self.d ** -0.5
        self.k_cache = self.v_cache = torch.empty(0)  # set by the runner

    def forward(self, positions: torch.Tensor, x: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        t = x.shape[0]
        with prof_range("qkv_o_proj"):
            qkv = self.qkv_proj(x)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], -1)
        if self.q_norm is not None:
            q = self.q_norm(q.reshape(t * self.hq, self.d))
            k = self.k_norm(k.reshape(t * self.hkv, self.d))
        q = self.rotary(positions, q.reshape(t, self.hq, self.d))     # [T, Hq, D]
        k = self.rotary(positions, k.reshape(t, self.hkv, self.d))    # [T, Hkv, D]
        v = v.reshape(t, self.hkv, self.d).contiguous()
        kn = self.kernels
        with prof_range("attention"):
            kn.store_kvcache(k, v, self.k_cache, self.v_cache, meta.slot_mapping)
            if meta.is_decode:
                o = kn.decode_attention(q, self.k_cache, self.v_cache, meta.block_tables,
                                        meta.context_lens, self.scale)
            else:
                o = kn.prefill_attention(q, self.k_cache, self.v_cache, meta.cu_seqlens_q,
                                         meta.context_lens, meta.block_tables, self.scale,
                                         meta.max_seqlen_q)
        with prof_range("qkv_o_proj"):
            return self.o_proj(o.reshape(t, self.q_size))


class MLP(nn.Module):
    """SiLU-gated MLP with fused gate and up projections."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inter = cfg.intermediate_size
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * self.inter, bias=False)
        self.down_proj = nn.Linear(self.inter, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with prof_range("mlp"):
            gate, up = self.gate_up_proj(x).split(self.inter, -1)
            return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm attention + MLP block with the residual carried through fused norms."""

    def __init__(self, cfg: ModelConfig, kernels: Kernels, rotary: Rotary):
        super().__init__()
        self.self_attn = Attention(cfg, kernels, rotary)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, kernels)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, kernels)

    def forward(self, positions, h, residual, meta):
        if residual is None:
            x, residual = self.input_layernorm(h), h
        else:
            x, residual = self.input_layernorm(h, residual)
        h = self.self_attn(positions, x, meta)
        x, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(x), residual


class CausalLM(nn.Module):
    """The decoder stack plus (possibly tied) LM head."""

    def __init__(self, cfg: ModelConfig, kernels: Kernels, max_pos: int):
        super().__init__()
        self.config = cfg
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta, max_pos)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, kernels, self.rotary)
                                    for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, kernels)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(
            cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                meta: AttnMeta) -> torch.Tensor:
        """Final hidden states [T, hidden] of the new tokens."""
        h, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            h, residual = layer(positions, h, residual, meta)
        h, _ = self.norm(h, residual)
        return h

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits [S, vocab] of the rows given."""
        w = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        with prof_range("lm_head"):
            return F.linear(hidden, w).float()
