"""Torch references for the kernel slots, random case makers and the comparison check.

The references are slow and obviously right: a Python loop over sequences, float64 math.
The case makers build the adversarial inputs every kernel must survive: random context
lengths with some exactly on and just past block boundaries, shuffled (non-contiguous)
block tables, padding entries of -1 in block tables, and every cache position a kernel
must not read poisoned with NaN. `check_kernel` runs a candidate against the reference on
one case (outputs checked for shape, dtype and NaN; inputs checked unchanged) and returns
None or a one-line reason; the tests and the fitness harness's contract stage use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

KERNEL_SLOTS = ("decode_attention", "prefill_attention", "store_kvcache", "rmsnorm")


# ----------------------------------------------------------------------------- references


def _gather_kv(cache: torch.Tensor, table: torch.Tensor, n: int) -> torch.Tensor:
    """The first n KV positions of one sequence as [n, Hkv, D] float64."""
    bs = cache.shape[1]
    blocks = table[: (n + bs - 1) // bs].long()
    return cache[blocks].reshape(-1, *cache.shape[2:])[:n].double()


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
            mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q.k * scale) @ v in float64; q: [S, Hq, D], k/v: [L, Hkv, D], mask: [S, L]."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # [L, Hq, D]
    v = v.repeat_interleave(group, dim=1)
    s = torch.einsum("shd,lhd->hsl", q.double(), k) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("hsl,lhd->shd", torch.softmax(s, dim=-1), v)


def decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale, *, exact=False):
    """Reference decode attention (contract: slots.decode_attention); exact=True: float64."""
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    for b, n in enumerate(context_lens.tolist()):
        if n == 0:
            continue  # padding row
        k = _gather_kv(k_cache, block_tables[b], n)
        v = _gather_kv(v_cache, block_tables[b], n)
        out[b] = _attend(q[b : b + 1], k, v, scale, None)[0]
    return out if exact else out.to(q.dtype)


def prefill_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                      max_seqlen_q, *, exact=False):
    """Reference causal paged prefill (contract: slots.prefill_attention); exact: float64."""
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    cu = cu_seqlens_q.tolist()
    for b, n in enumerate(context_lens.tolist()):
        lo, hi = cu[b], cu[b + 1]
        if hi == lo:
            continue
        assert hi - lo <= max_seqlen_q, "q length exceeds max_seqlen_q"
        k = _gather_kv(k_cache, block_tables[b], n)
        v = _gather_kv(v_cache, block_tables[b], n)
        qpos = torch.arange(n - (hi - lo), n, device=q.device)
        mask = torch.arange(n, device=q.device)[None, :] <= qpos[:, None]
        out[lo:hi] = _attend(q[lo:hi], k, v, scale, mask)
    return out if exact else out.to(q.dtype)


def store_kvcache(key, value, k_cache, v_cache, slot_mapping):
    """Reference KV store (contract: slots.store_kvcache): one token at a time."""
    bs = k_cache.shape[1]
    for i, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        k_cache[slot // bs, slot % bs] = key[i]
        v_cache[slot // bs, slot % bs] = value[i]


def rmsnorm(x, weight, eps, residual=None, *, exact=False):
    """Reference RMSNorm with optional residual add (contract: slots.rmsnorm)."""
    h = x.double() if residual is None else x.double() + residual.double()
    y = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.double()
    dtype = torch.float64 if exact else x.dtype
    return y.to(dtype) if residual is None else (y.to(dtype), h.to(dtype))


REFERENCES: dict[str, Callable[..., Any]] = {
    "decode_attention": decode_attention, "prefill_attention": prefill_attention,
    "store_kvcache": store_kvcache, "rmsnorm": rmsnorm,
}


# ----------------------------------------------------------------------------- case makers


def _randn(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def _randint(lo: int, hi: int, n: int, generator: torch.Generator | None) -> list[int]:
    """n ints uniform in [lo, hi]."""
    return torch.randint(lo, hi + 1, (n,), generator=generator).tolist()


def _paged_kv(lens: list[int], num_kv_heads: int, head_dim: int, block_size: int,
              max_blocks: int, extra_blocks: int, generator: torch.Generator | None):
    """Caches (NaN wherever no sequence has a token) and a shuffled block table (-1 padded)."""
    need = [(n + block_size - 1) // block_size for n in lens]
    num_blocks = sum(need) + extra_blocks
    perm = torch.randperm(num_blocks, generator=generator).tolist()
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"))
    v_cache = torch.full(shape, float("nan"))
    table = torch.full((len(lens), max_blocks), -1, dtype=torch.int32)
    for b, (n, nb) in enumerate(zip(lens, need)):
        ids, perm = perm[:nb], perm[nb:]
        table[b, :nb] = torch.tensor(ids, dtype=torch.int32)
        for j, blk in enumerate(ids):
            used = min(block_size, n - j * block_size)
            k_cache[blk, :used] = _randn((used, num_kv_heads, head_dim), generator)
            v_cache[blk, :used] = _randn((used, num_kv_heads, head_dim), generator)
    return k_cache, v_cache, table


def _edge_lengths(lens: list[int], block_size: int, lo: int, hi: int) -> list[int]:
    """Overwrite the first lengths with block-boundary cases (on, just past, one) in range."""
    edges = [2 * block_size, block_size + 1, lo, block_size, hi]
    for i, e in enumerate(e for e in edges if lo <= e <= hi):
        if i < len(lens) - 1:  # keep at least one fully random length
            lens[i] = e
    return lens


def make_decode_case(batch: int, num_q_heads: int, num_kv_heads: int, head_dim: int,
                     block_size: int, max_context: int, dtype: torch.dtype = torch.float32,
                     device: str | torch.device = "cpu",
                     generator: torch.Generator | None = None,
                     context_lens: list[int] | None = None, num_padding: int = 0,
                     extra_blocks: int = 2) -> dict[str, Any]:
    """Random decode_attention kwargs: ragged contexts (edges included), shuffled blocks.

    `num_padding` rows with context_len 0 are appended (CUDA-graph batch padding).
    """
    if num_q_heads % num_kv_heads:
        raise ValueError(f"num_q_heads={num_q_heads} must be a multiple of "
                         f"num_kv_heads={num_kv_heads}")
    lens = list(context_lens) if context_lens is not None else _edge_lengths(
        _randint(1, max_context, batch, generator), block_size, 1, max_context)
    if len(lens) != batch or min(lens) < 1 or max(lens) > max_context:
        raise ValueError(f"context_lens={lens} must be {batch} values in [1, {max_context}]")
    lens += [0] * num_padding
    max_blocks = (max_context + block_size - 1) // block_size + 1
    k_cache, v_cache, table = _paged_kv(lens, num_kv_heads, head_dim, block_size, max_blocks,
                                        extra_blocks, generator)
    q = _randn((len(lens), num_q_heads, head_dim), generator)
    dev = torch.device(device)
    return {"q": q.to(dev, dtype), "k_cache": k_cache.to(dev, dtype),
            "v_cache": v_cache.to(dev, dtype), "block_tables": table.to(dev),
            "context_lens": torch.tensor(lens, dtype=torch.int32, device=dev),
            "scale": 1.0 / math.sqrt(head_dim)}


def make_prefill_case(batch: int, num_q_heads: int, num_kv_heads: int, head_dim: int,
                      block_size: int, max_new: int, max_prefix: int,
                      dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                      generator: torch.Generator | None = None,
                      q_lens: list[int] | None = None, prefix_lens: list[int] | None = None,
                      extra_blocks: int = 2) -> dict[str, Any]:
    """Random prefill_attention kwargs: ragged new parts over cached prefixes (some empty)."""
    if num_q_heads % num_kv_heads:
        raise ValueError(f"num_q_heads={num_q_heads} must be a multiple of "
                         f"num_kv_heads={num_kv_heads}")
    qs = list(q_lens) if q_lens is not None else _edge_lengths(
        _randint(1, max_new, batch, generator), block_size, 1, max_new)
    ps = list(prefix_lens) if prefix_lens is not None else _edge_lengths(
        _randint(0, max_prefix, batch, generator), block_size, 0, max_prefix)
    if len(qs) != batch or len(ps) != batch or min(qs) < 1 or min(ps) < 0:
        raise ValueError(f"q_lens={qs} (each >= 1) and prefix_lens={ps} (each >= 0) must "
                         f"have {batch} values")
    lens = [p + n for p, n in zip(ps, qs)]
    max_blocks = (max(lens) + block_size - 1) // block_size + 1
    k_cache, v_cache, table = _paged_kv(lens, num_kv_heads, head_dim, block_size, max_blocks,
                                        extra_blocks, generator)
    cu = [0]
    for n in qs:
        cu.append(cu[-1] + n)
    q = _randn((cu[-1], num_q_heads, head_dim), generator)
    dev = torch.device(device)
    return {"q": q.to(dev, dtype), "k_cache": k_cache.to(dev, dtype),
            "v_cache": v_cache.to(dev, dtype),
            "cu_seqlens_q": torch.tensor(cu, dtype=torch.int32, device=dev),
            "context_lens": torch.tensor(lens, dtype=torch.int32, device=dev),
            "block_tables": table.to(dev), "scale": 1.0 / math.sqrt(head_dim),
            "max_seqlen_q": max(qs)}


def make_store_case(num_tokens: int, num_kv_heads: int, head_dim: int, block_size: int,
                    num_blocks: int, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu",
                    generator: torch.Generator | None = None,
                    num_padding: int = 2) -> dict[str, Any]:
    """Random store_kvcache kwargs: distinct random slots, `num_padding` of them -1."""
    if num_tokens > num_blocks * block_size:
        raise ValueError(f"num_tokens={num_tokens} exceeds the cache's "
                         f"{num_blocks * block_size} slots")
    slots = torch.randperm(num_blocks * block_size, generator=generator)[:num_tokens]
    pad = torch.randperm(num_tokens, generator=generator)[: min(num_padding, num_tokens)]
    slots[pad] = -1
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    dev = torch.device(device)
    return {"key": _randn((num_tokens, num_kv_heads, head_dim), generator).to(dev, dtype),
            "value": _randn((num_tokens, num_kv_heads, head_dim), generator).to(dev, dtype),
            "k_cache": _randn(shape, generator).to(dev, dtype),
            "v_cache": _randn(shape, generator).to(dev, dtype),
            "slot_mapping": slots.to(dev, torch.int32)}


def make_rmsnorm_case(num_tokens: int, hidden: int, residual: bool,
                      dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                      generator: torch.Generator | None = None,
                      eps: float = 1e-6) -> dict[str, Any]:
    """Random rmsnorm kwargs (x at a random per-row scale, so the normalisation matters)."""
    dev = torch.device(device)
    x = _randn((num_tokens, hidden), generator) * (0.1 + 3 * torch.rand(
        (num_tokens, 1), generator=generator))
    res = _randn((num_tokens, hidden), generator).to(dev, dtype) if residual else None
    return {"x": x.to(dev, dtype), "weight": (1 + 0.5 * _randn((hidden,), generator)).to(
        dev, dtype), "eps": eps, "residual": res}


# ----------------------------------------------------------------------------- checking


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for comparing a kernel in `dtype` against the float64 reference."""
    return {torch.float32: (2e-4, 2e-4), torch.float16: (4e-3, 4e-3),
            torch.bfloat16: (2.5e-2, 2.5e-2)}.get(dtype, (2e-4, 2e-4))


def compare(name: str, got: Any, want: torch.Tensor, dtype: torch.dtype,
            rows: torch.Tensor | None = None) -> str | None:
    """None if `got` matches `want` within `dtype`'s tolerance (on `rows` only), else why."""
    if not isinstance(got, torch.Tensor):
        return f"{name}: expected a tensor, got {type(got).__name__}"
    if tuple(got.shape) != tuple(want.shape):
        return f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    if got.dtype != dtype:
        return f"{name}: dtype {got.dtype}, expected {dtype}"
    if got.device != want.device:
        return f"{name}: on {got.device}, expected {want.device}"
    g, w = got.double(), want.double()
    if rows is not None:
        g, w = g[rows], w[rows]
    if g.numel() == 0:
        return None
    bad_nan = torch.isnan(g) & ~torch.isnan(w)
    if bad_nan.any():
        idx = tuple(int(i) for i in bad_nan.nonzero()[0])
        return f"{name}: NaN at {idx} (in {int(bad_nan.sum())} places) where the reference has none"
    atol, rtol = tolerance(dtype)
    err = (g - w).abs()
    bad = (err > atol + rtol * w.abs()) | (torch.isnan(w) != torch.isnan(g))
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        return (f"{name}: {int(bad.sum())} of {g.numel()} values off; first at {idx}: got "
                f"{g[idx].item():.6g}, expected {w[idx].item():.6g}; max abs err "
                f"{err.nan_to_num(float('inf')).max().item():.3g} (atol {atol}, rtol {rtol})")
    return None


def _poison_allocator(device: torch.device, nbytes: int) -> None:
    """Fill then free a NaN buffer so that a kernel returning torch.empty garbage shows it."""
    torch.full((max(nbytes // 4, 1),), float("nan"), dtype=torch.float32, device=device)


def _clone(case: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in case.items()}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def check_kernel(slot: str, fn: Callable[..., Any], case: dict[str, Any],
                 params: dict[str, Any] | None = None) -> str | None:
    """Run `fn(**case, **params)` against the slot's reference; None if it passes, else why.

    The case is not modified. Exceptions raised by `fn` propagate to the caller.
    """
    if slot not in REFERENCES:
        raise ValueError(f"slot {slot!r} has no torch reference; kernel slots: {KERNEL_SLOTS}")
    params = dict(params or {})
    mine, snapshot = _clone(case), _clone(case)
    first = next(v for v in case.values() if isinstance(v, torch.Tensor))
    dtype = first.dtype
    if slot == "store_kvcache":
        want = _clone(case)
        store_kvcache(**want)
        ret = fn(**mine, **params)
        if ret is not None:
            return f"store_kvcache returned {type(ret).__name__}; expected None (in-place write)"
        for name in ("k_cache", "v_cache"):
            if not _same(mine[name], want[name]):
                same = (mine[name] == want[name]) | (mine[name].isnan() & want[name].isnan())
                bad = (~same).flatten(1).any(1)
                return (f"store_kvcache: {name} differs from the reference in blocks "
                        f"{bad.nonzero().flatten().tolist()[:8]}")
        changed = ["key", "value", "slot_mapping"]
    else:
        _poison_allocator(first.device, sum(v.numel() * v.element_size() for v in case.values()
                                      if isinstance(v, torch.Tensor)))
        got = fn(**mine, **params)
        want = REFERENCES[slot](**_clone(case), exact=True)
        if slot == "rmsnorm" and case.get("residual") is not None:
            if not (isinstance(got, tuple) and len(got) == 2):
                return f"rmsnorm with residual must return (y, h), got {type(got).__name__}"
            msg = compare("rmsnorm y", got[0], want[0], dtype) or compare(
                "rmsnorm h", got[1], want[1], dtype)
        else:
            rows = case["context_lens"] > 0 if slot == "decode_attention" else None
            msg = compare(slot, got, want, dtype, rows)
        if msg:
            return msg
        changed = list(case)
    for name in changed:
        if isinstance(case[name], torch.Tensor) and not _same(mine[name], snapshot[name]):
            return f"{slot}: modified its input {name!r} in place"
    return None


def contract_cases(slot: str, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu", seed: int = 0,
                   ) -> list[tuple[str, dict[str, Any]]]:
    """A small fixed suite of (label, case) for `slot`: GQA 1/2/4, block sizes 16/32, edges.

    Shapes are small enough for the Triton interpreter on a CPU.
    """
    g = torch.Generator().manual_seed(seed)
    kw = {"dtype": dtype, "device": device, "generator": g}
    if slot == "decode_attention":
        return [("gqa1 d32 bs16", make_decode_case(4, 2, 2, 32, 16, 70, **kw)),
                ("gqa2 d64 bs32 pad", make_decode_case(4, 4, 2, 64, 32, 100, num_padding=1,
                                                       **kw)),
                ("gqa4 d32 bs16", make_decode_case(3, 8, 2, 32, 16, 40, **kw))]
    if slot == "prefill_attention":
        return [("gqa1 d32 bs16", make_prefill_case(3, 2, 2, 32, 16, 20, 40, **kw)),
                ("gqa2 d64 bs32", make_prefill_case(3, 4, 2, 64, 32, 40, 33, **kw)),
                ("gqa4 d32 bs16", make_prefill_case(2, 8, 2, 32, 16, 17, 16, **kw))]
    if slot == "store_kvcache":
        return [("d32 bs16", make_store_case(20, 2, 32, 16, 4, **kw)),
                ("d64 bs32", make_store_case(37, 4, 64, 32, 3, num_padding=5, **kw))]
    if slot == "rmsnorm":
        return [("plain", make_rmsnorm_case(7, 96, False, **kw)),
                ("residual", make_rmsnorm_case(5, 128, True, **kw))]
    raise ValueError(f"slot {slot!r} has no contract cases; kernel slots: {KERNEL_SLOTS}")
