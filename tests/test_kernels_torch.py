"""The torch references are right, the case makers are adversarial, check_kernel can fail,
and the torch kernel seeds (the CPU engine's defaults) match the references."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from runtime_modules import reference as R
from runtime_modules import slots

TORCH_SEEDS = {"decode_attention": "torch_paged", "prefill_attention": "torch_paged",
               "store_kvcache": "torch_index", "rmsnorm": "torch_rms"}


def _gen() -> torch.Generator:
    """A fresh random seed per test run: inputs are never the same twice."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))


def _seed(slot: str):
    return slots.load_slot(slot, f"seed:{slot}/{TORCH_SEEDS[slot]}").obj


# ----------------------------------------------------------------------------- references


def test_reference_decode_matches_dense_sdpa_on_contiguous_kv():
    g = _gen()
    case = R.make_decode_case(3, 4, 2, 32, 16, 50, generator=g)
    got = R.decode_attention(**case, exact=True)
    for b, n in enumerate(case["context_lens"].tolist()):
        blocks = case["block_tables"][b, : math.ceil(n / 16)].long()
        k = case["k_cache"][blocks].reshape(-1, 2, 32)[:n].repeat_interleave(2, 1)
        v = case["v_cache"][blocks].reshape(-1, 2, 32)[:n].repeat_interleave(2, 1)
        want = F.scaled_dot_product_attention(case["q"][b][:, None].double(),
                                              k.transpose(0, 1).double(),
                                              v.transpose(0, 1).double())[:, 0]
        torch.testing.assert_close(got[b], want)


def test_reference_prefill_last_token_equals_decode():
    g = _gen()
    case = R.make_prefill_case(3, 4, 1, 32, 16, 9, 30, generator=g)
    out = R.prefill_attention(**case, exact=True)
    last = case["cu_seqlens_q"][1:].long() - 1
    dec = R.decode_attention(case["q"][last], case["k_cache"], case["v_cache"],
                             case["block_tables"], case["context_lens"], case["scale"],
                             exact=True)
    torch.testing.assert_close(out[last], dec)


def test_reference_rmsnorm_has_unit_rms_before_weight():
    case = R.make_rmsnorm_case(6, 64, True, generator=_gen())
    y, h = R.rmsnorm(case["x"], torch.ones(64), 0.0, case["residual"], exact=True)
    torch.testing.assert_close(h, case["x"].double() + case["residual"].double())
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(6, dtype=torch.float64))


# ----------------------------------------------------------------------------- case makers


def test_decode_case_is_paged_shuffled_and_poisoned():
    case = R.make_decode_case(5, 4, 2, 32, 16, 64, generator=_gen(), num_padding=1)
    lens = case["context_lens"].tolist()
    assert lens[-1] == 0 and {16, 17, 32} & set(lens), lens  # padding row and edges
    table, k = case["block_tables"], case["k_cache"]
    used = table[table >= 0].tolist()
    assert len(used) == len(set(used))  # no block shared
    assert used != sorted(used) or len(used) < 3  # shuffled, not contiguous
    for b, n in enumerate(lens):
        pos = torch.arange(table.shape[1] * 16)
        blocks = table[b].clamp(min=0).long()
        per_pos = k[blocks].reshape(-1, 2, 32)
        real = table[b].repeat_interleave(16) >= 0
        assert not per_pos[pos < n].isnan().any()
        assert per_pos[(pos >= n) & real].isnan().all()  # tail of the last block poisoned
    free = sorted(set(range(k.shape[0])) - set(used))
    assert free and k[free].isnan().all()


def test_store_case_has_padding_and_distinct_slots():
    case = R.make_store_case(30, 2, 32, 16, 4, generator=_gen(), num_padding=3)
    s = case["slot_mapping"]
    assert int((s < 0).sum()) == 3 and len(set(s[s >= 0].tolist())) == 27


def test_bad_case_arguments_are_named():
    with pytest.raises(ValueError, match="num_kv_heads=3"):
        R.make_decode_case(2, 4, 3, 32, 16, 40)
    with pytest.raises(ValueError, match=r"context_lens=\[0, 5\]"):
        R.make_decode_case(2, 4, 2, 32, 16, 40, context_lens=[0, 5])
    with pytest.raises(ValueError, match="no torch reference"):
        R.check_kernel("scheduler", lambda: None, {})


# ----------------------------------------------------------------------------- check_kernel can fail


def _off_by_one_causal(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                       max_seqlen_q):
    """Prefill that lets each query see one position into its future."""
    out = torch.empty_like(q)
    cu = cu_seqlens_q.tolist()
    for b, n in enumerate(context_lens.tolist()):
        lo, hi = cu[b], cu[b + 1]
        k = R._gather_kv(k_cache, block_tables[b], n)
        v = R._gather_kv(v_cache, block_tables[b], n)
        qpos = torch.arange(n - (hi - lo), n)
        mask = torch.arange(n)[None, :] <= qpos[:, None] + 1
        out[lo:hi] = R._attend(q[lo:hi], k, v, scale, mask).to(q.dtype)
    return out


def _drops_last_token(q, k_cache, v_cache, block_tables, context_lens, scale):
    return R.decode_attention(q, k_cache, v_cache, block_tables,
                              (context_lens - 1).clamp(min=1), scale)


def _garbage_rows(q, k_cache, v_cache, block_tables, context_lens, scale):
    out = R.decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)
    out[0] = float("nan")  # as if the kernel skipped a row of a torch.empty output
    return out


def _writes_padding(key, value, k_cache, v_cache, slot_mapping):
    """Stores padding tokens too (into a slot no real token uses)."""
    free = sorted(set(range(k_cache.shape[0] * k_cache.shape[1])) - set(slot_mapping.tolist()))
    R.store_kvcache(key, value, k_cache, v_cache,
                    torch.where(slot_mapping < 0, free[0], slot_mapping))


def _in_place_rmsnorm(x, weight, eps, residual=None):
    y, h = R.rmsnorm(x, weight, eps, residual)
    x.copy_(h)  # the classic fused-kernel shortcut the contract forbids
    return y, h


def _wrong_dtype(x, weight, eps, residual=None):
    return R.rmsnorm(x, weight, eps, residual).double()


@pytest.mark.parametrize("slot,fn,case,expect", [
    ("prefill_attention", _off_by_one_causal,
     lambda g: R.make_prefill_case(3, 2, 2, 32, 16, 12, 20, generator=g), "values off"),
    ("decode_attention", _drops_last_token,
     lambda g: R.make_decode_case(3, 4, 2, 32, 16, 40, generator=g), "values off"),
    ("decode_attention", _garbage_rows,
     lambda g: R.make_decode_case(3, 4, 2, 32, 16, 40, generator=g), "NaN"),
    ("store_kvcache", _writes_padding,
     lambda g: R.make_store_case(20, 2, 32, 16, 4, generator=g, num_padding=3), "differs"),
    ("rmsnorm", _in_place_rmsnorm,
     lambda g: R.make_rmsnorm_case(4, 64, True, generator=g), "in place"),
    ("rmsnorm", _wrong_dtype, lambda g: R.make_rmsnorm_case(4, 64, False, generator=g),
     "dtype"),
], ids=["off-by-one-causal", "drops-last-token", "garbage-row", "writes-padding",
        "in-place", "wrong-dtype"])
def test_check_kernel_catches_wrong_kernels(slot, fn, case, expect):
    msg = R.check_kernel(slot, fn, case(_gen()))
    assert msg is not None and expect in msg, msg


# ----------------------------------------------------------------------------- torch seeds


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("slot", list(TORCH_SEEDS))
def test_torch_seed_matches_reference_on_contract_cases(slot, dtype):
    fn = _seed(slot)
    for label, case in R.contract_cases(slot, dtype, seed=int(torch.randint(0, 10**6, (1,)))):
        assert R.check_kernel(slot, fn, case) is None, (label, R.check_kernel(slot, fn, case))


@pytest.mark.parametrize("hq,hkv,d,bs", [(8, 1, 64, 16), (16, 8, 128, 32), (4, 4, 32, 16)])
def test_torch_decode_seed_gqa_shapes_and_chunks(hq, hkv, d, bs):
    g = _gen()
    fn = _seed("decode_attention")
    case = R.make_decode_case(9, hq, hkv, d, bs, 3 * bs + 1, generator=g, num_padding=2)
    for chunk in (8, 64):  # a chunk boundary inside the batch, and one chunk
        assert R.check_kernel("decode_attention", fn, case, {"seq_chunk": chunk}) is None


def test_torch_prefill_seed_splits_groups_under_a_small_budget():
    g = _gen()
    fn = _seed("prefill_attention")
    case = R.make_prefill_case(6, 4, 2, 32, 16, 33, 40, generator=g,
                               q_lens=[1, 16, 17, 33, 1, 5], prefix_lens=[0, 16, 31, 0, 40, 3])
    for budget in (1 << 20, 1 << 24):  # many groups, then one group
        assert R.check_kernel("prefill_attention", fn, case,
                              {"max_group_elems": budget}) is None


def test_torch_seeds_declare_evolve_blocks_and_valid_tunables():
    for slot, name in TORCH_SEEDS.items():
        loaded = slots.load_slot(slot, f"seed:{slot}/{name}")
        assert slots.evolve_blocks(Path(loaded.path).read_text()), slot
        for key, space in getattr(loaded.module, "TUNABLES", {}).items():
            slots.load_slot(slot, f"seed:{slot}/{name}", {key: space[0]})
