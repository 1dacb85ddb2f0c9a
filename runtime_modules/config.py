"""Engine and model configuration: validated dataclasses with named model presets.

`EngineConfig` holds the knobs of the engine (batch limits, KV cache, device); `ModelConfig`
describes a Qwen3/Qwen2/Llama decoder. Presets (`tiny`, `qwen3-0.6b`) are made from
`ModelConfig.from_name`; Hugging Face folders from `ModelConfig.from_hf`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from runtime_modules.sched_config import SchedulerConfig  # noqa: F401 - re-exported; torch-free home

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(value: Any, where: str = "dtype") -> torch.dtype:
    """A torch dtype from a dtype or its name ('bf16', 'float32', ...)."""
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value.replace("torch.", "") in _DTYPES:
        return _DTYPES[value.replace("torch.", "")]
    raise ValueError(f"{where} must be one of {sorted(_DTYPES)} or a torch.dtype, got {value!r}")


@dataclass(slots=True)
class EngineConfig:
    """Engine parameters; `device`/`dtype` None mean cuda+bf16 if available, else cpu+fp32."""

    max_num_seqs: int = 256              # sequences per step
    max_num_batched_tokens: int = 16384  # new tokens per step
    # prompt + output tokens per sequence; LLM(...) sets the model's max_position_embeddings
    # when it is not given (as vLLM does), so 4096 applies only to an EngineConfig used alone
    max_model_len: int = 4096
    block_size: int = 16                 # tokens per KV block
    gpu_memory_utilization: float = 0.9  # fraction of GPU memory the engine may use
    num_kv_blocks: int | None = None     # None: as many as memory allows
    enable_prefix_caching: bool = True
    enforce_eager: bool = False          # True: no CUDA graphs
    cuda_graph_sizes: list[int] | None = None  # decode batch sizes to capture; None: 1,2,4,8,16..
    device: str | None = None
    dtype: Any = None
    seed: int = 0
    freeze_gc: bool = True  # gc.freeze() after start-up: no full collections of the model's objects

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"engine parameter {name} must be a positive integer, got {v!r}")
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"engine parameter block_size must be a power of two, "
                             f"got {self.block_size}")
        u = self.gpu_memory_utilization
        if not isinstance(u, (int, float)) or not 0.05 <= u <= 1.0:
            raise ValueError(f"engine parameter gpu_memory_utilization must be in [0.05, 1], "
                             f"got {u!r}")
        n = self.num_kv_blocks
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"engine parameter num_kv_blocks must be a positive integer or "
                             f"None, got {n!r}")
        if self.cuda_graph_sizes is not None:
            sizes = list(self.cuda_graph_sizes)
            if not sizes or any(not isinstance(s, int) or s < 1 for s in sizes):
                raise ValueError(f"engine parameter cuda_graph_sizes must be a non-empty list "
                                 f"of positive integers, got {self.cuda_graph_sizes!r}")
            self.cuda_graph_sizes = sorted(set(sizes))
        if not isinstance(self.seed, int):
            raise TypeError(f"engine parameter seed must be an integer, got {self.seed!r}")
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = str(self.device)
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"engine parameter device must be 'cpu' or 'cuda[:N]', "
                             f"got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"engine parameter device={self.device!r} but CUDA is not available")
        if self.dtype is None:
            self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.dtype = parse_dtype(self.dtype, "engine parameter dtype")

    @staticmethod
    def names() -> list[str]:
        """The accepted engine parameter names."""
        return [f.name for f in fields(EngineConfig)]

    @staticmethod
    def build(params: dict[str, Any], where: str = "engine parameters") -> EngineConfig:
        """An EngineConfig from a dict, naming unknown keys and where they came from."""
        unknown = sorted(set(params) - set(EngineConfig.names()))
        if unknown:
            raise ValueError(f"{where}: unknown engine parameter(s) {unknown}; "
                             f"expected some of {EngineConfig.names()}")
        return EngineConfig(**params)

    @property
    def is_cuda(self) -> bool:
        """Whether the engine runs on a CUDA device."""
        return str(self.device).startswith("cuda")


@dataclass(slots=True)
class ModelConfig:
    """A Llama-family decoder (Qwen3 by default): sizes, norms, rotary and vocabulary."""

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = True
    qk_norm: bool = True          # Qwen3: RMSNorm on each head's q and k
    attention_bias: bool = False  # Qwen2: bias on q/k/v projections
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    model_type: str = "qwen3"
    extra: dict[str, Any] = field(default_factory=dict)  # other config.json keys, kept as-is

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"model config {name} must be a positive integer, got {v!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"model config num_attention_heads={self.num_attention_heads} must "
                             f"be a multiple of num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"model config head_dim must be even for rotary, got {self.head_dim}")

    @property
    def eos_ids(self) -> frozenset[int]:
        """The end-of-sequence token ids (possibly empty)."""
        e = self.eos_token_id
        if e is None:
            return frozenset()
        return frozenset([e] if isinstance(e, int) else e)

    @staticmethod
    def from_name(name: str) -> ModelConfig:
        """A named preset: 'tiny' (CPU tests) or 'qwen3-0.6b' (the real architecture)."""
        if name == "tiny":
            # initializer_range 0.3: with 0.02 a tiny model repeats one token (docs/SOURCES.md)
            return ModelConfig(initializer_range=0.3, max_position_embeddings=4096,
                               bos_token_id=0, eos_token_id=1)
        if name == "qwen3-0.6b":
            return ModelConfig(vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                               num_hidden_layers=28, num_attention_heads=16,
                               num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
                               rope_theta=1e6, max_position_embeddings=40960,
                               tie_word_embeddings=True, bos_token_id=151643,
                               eos_token_id=151645)
        raise ValueError(f"unknown model preset {name!r}; expected 'tiny', 'qwen3-0.6b' or a "
                         "Hugging Face folder")

    @staticmethod
    def from_hf(path: str | Path) -> ModelConfig:
        """Read `<path>/config.json` of a Qwen3, Qwen2 or Llama checkpoint."""
        p = Path(path) / "config.json"
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise ValueError(f"{p}: no config.json in the model folder") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON: {e}") from None
        mt = d.get("model_type")
        if mt not in ("qwen3", "qwen2", "llama"):
            raise ValueError(f"{p}: model_type {mt!r} is not supported; expected qwen3, qwen2 "
                             "or llama")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        rtype = rope.get("rope_type", rope.get("type", "default"))
        if rtype != "default":
            raise NotImplementedError(f"{p}: rope_type {rtype!r} is not implemented "
                                      "(only 'default')")
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise NotImplementedError(f"{p}: hidden_act {act!r} is not implemented (only silu)")
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        heads = d["num_attention_heads"]
        known = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
                 "max_position_embeddings", "tie_word_embeddings", "attention_bias",
                 "initializer_range", "bos_token_id", "eos_token_id", "model_type",
                 "rope_parameters", "rope_scaling", "rope_theta"}
        return ModelConfig(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            rms_norm_eps=d.get("rms_norm_eps", 1e-6), rope_theta=float(theta),
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            tie_word_embeddings=d.get("tie_word_embeddings", mt != "llama"),
            qk_norm=mt == "qwen3", attention_bias=d.get("attention_bias", mt == "qwen2"),
            initializer_range=d.get("initializer_range", 0.02),
            bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"),
            model_type=mt, extra={k: v for k, v in d.items() if k not in known})

    def to_hf(self, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """The transformers-5 style config.json contents."""
        arch = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM",
                "llama": "LlamaForCausalLM"}[self.model_type]
        d = {k: v for k, v in asdict(self).items() if k not in ("qk_norm", "rope_theta", "extra")}
        d.update(self.extra)
        d.update(architectures=[arch], hidden_act="silu",
                 rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
                 dtype=str(dtype).replace("torch.", ""), use_cache=True)
        return d
