"""Kernel seeds accept strided index and weight tensors: the contracts promise shapes, not layouts.

Runs every kernel seed (torch and Triton; Triton under TRITON_INTERPRET=1 without CUDA) on
fresh random inputs whose slot mapping and norm weight are strided views.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when a kernel is decorated
pytest.importorskip("triton", reason="triton is not installed")
if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    pytest.skip("no CUDA and TRITON_INTERPRET is not 1", allow_module_level=True)

from runtime_modules.slots import load_slot, seed_names

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" \
    else "cpu"


@pytest.mark.parametrize("ref", seed_names("store_kvcache"))
def test_store_kvcache_with_strided_slot_mapping(ref):
    store = load_slot("store_kvcache", ref).obj
    n, h, d, nb, bs = random.randint(2, 9), random.choice([1, 2, 4]), 32, 4, 16
    k, v = torch.randn(n, h, d, device=DEVICE), torch.randn(n, h, d, device=DEVICE)
    kc = torch.full((nb, bs, h, d), float("nan"), device=DEVICE)
    vc = kc.clone()
    picked = random.sample(range(nb * bs), n)
    both = torch.tensor([s for p in picked for s in (p, -1)], dtype=torch.int32, device=DEVICE)
    slots = both[::2]  # a view with stride 2
    assert slots.stride(0) == 2
    store(k, v, kc, vc, slots)
    idx = slots.long()
    assert torch.equal(kc.view(-1, h, d)[idx], k) and torch.equal(vc.view(-1, h, d)[idx], v)
    untouched = torch.ones(nb * bs, dtype=torch.bool, device=DEVICE)
    untouched[idx] = False
    assert torch.isnan(kc.view(-1, h, d)[untouched]).all()


@pytest.mark.parametrize("ref", seed_names("rmsnorm"))
def test_rmsnorm_with_strided_weight(ref):
    rmsnorm = load_slot("rmsnorm", ref).obj
    t, hidden = random.randint(1, 7), 64
    x = torch.randn(t, hidden, device=DEVICE)
    w = torch.randn(2 * hidden, device=DEVICE)[::2]
    y = rmsnorm(x, w, 1e-6)
    want = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
