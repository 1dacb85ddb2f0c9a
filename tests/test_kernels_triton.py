"""Every Triton kernel seed matches its torch reference on fresh random paged inputs.

On a machine without CUDA the kernels run under the Triton interpreter on CPU tensors
(TRITON_INTERPRET=1, set here before any kernel module is imported; scripts/test.sh sets
it too). Shapes are small because the interpreter is slow: GQA ratios 1/2/4/8, head_dim
32/64 (128 once), block sizes 16/32, lengths on and just past block boundaries,
context-0 padding rows, fp32/bf16 (fp16 once). Outputs come from a NaN-poisoned
allocator and unused cache slots are NaN, so skipped writes and stray reads both show.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when a kernel is decorated
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"

triton = pytest.importorskip("triton", reason="triton is not installed")
if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1: Triton kernels cannot run",
                allow_module_level=True)

from runtime_modules import reference as R
from runtime_modules import slots

TRITON_SEEDS = {"decode_attention": "triton_split_kv", "prefill_attention": "triton_paged",
                "store_kvcache": "triton_store", "rmsnorm": "triton_rms"}
F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


def _gen() -> torch.Generator:
    """A fresh random seed per call: inputs are never the same twice."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))


def _load_fresh(slot: str, name: str, code: str | None = None, directory=None):
    """Import a seed (or `code`, written under `directory`) under a module name of its own."""
    path = slots.SEEDS_DIR / slot / f"{name}.py"
    code = code if code is not None else path.read_text()
    file = slots.materialize(code, directory) if code != path.read_text() else path
    mode = "interp" if INTERPRET else "jit"
    module = slots.import_file(file, f"test_kernels_{mode}_{slots.code_hash(code)[:16]}")
    return getattr(module, slots.SLOTS[slot].symbol)


def _check(slot: str, case: dict, params: dict | None = None, fn=None) -> None:
    fn = fn or _load_fresh(slot, TRITON_SEEDS[slot])
    msg = R.check_kernel(slot, fn, case, params)
    assert msg is None, msg


# ----------------------------------------------------------------------------- decode


@pytest.mark.parametrize("hq,hkv,d,bs,dtype,params", [
    (2, 2, 32, 16, F32, {"num_splits": 4, "block_n": 16}),
    (4, 2, 64, 32, BF16, {"num_splits": 2, "block_n": 32}),
    (8, 2, 32, 16, F32, {"num_splits": 1, "block_n": 64}),
    (8, 1, 32, 32, BF16, {"num_splits": 8, "block_n": 16}),
    (4, 1, 128, 16, F16, {}),
], ids=["gqa1-fp32", "gqa2-bf16", "gqa4-fp32-1split", "gqa8-bf16-8splits", "d128-fp16"])
def test_decode_triton_matches_reference(hq, hkv, d, bs, dtype, params):
    # lengths 1, on a block boundary, just past it, two blocks, random; plus padding rows
    lens = [1, bs, bs + 1, 2 * bs, int(torch.randint(1, 3 * bs, (1,)))]
    case = R.make_decode_case(len(lens), hq, hkv, d, bs, 3 * bs, dtype, DEVICE, _gen(),
                              context_lens=lens, num_padding=1)
    _check("decode_attention", case, params)


def test_decode_triton_long_context_uses_every_split():
    case = R.make_decode_case(2, 4, 2, 32, 16, 200, F32, DEVICE, _gen(),
                              context_lens=[200, 129])
    _check("decode_attention", case, {"num_splits": 4, "block_n": 16})


# ----------------------------------------------------------------------------- prefill


@pytest.mark.parametrize("hq,hkv,d,bs,dtype,params", [
    (2, 2, 32, 16, F32, {"block_m": 16, "block_n": 16}),
    (4, 2, 64, 32, BF16, {"block_m": 16, "block_n": 32}),
    (8, 2, 32, 16, F32, {"block_m": 32, "block_n": 16}),
    (8, 1, 32, 16, BF16, {}),
], ids=["gqa1-fp32", "gqa2-bf16", "gqa4-fp32", "gqa8-bf16"])
def test_prefill_triton_matches_reference(hq, hkv, d, bs, dtype, params):
    # pure prefill, prefix on a block boundary, prefix just past one, a one-token chunk
    q_lens = [bs + 1, 7, bs, 1]
    prefix = [0, bs, bs + 1, int(torch.randint(0, 2 * bs, (1,)))]
    case = R.make_prefill_case(4, hq, hkv, d, bs, bs + 1, 2 * bs, dtype, DEVICE, _gen(),
                               q_lens=q_lens, prefix_lens=prefix)
    _check("prefill_attention", case, params)


def test_off_by_one_causal_triton_kernel_is_caught(tmp_path):
    path = slots.SEEDS_DIR / "prefill_attention" / "triton_paged.py"
    good = "see = (offs_n[None, :] <= qpos[:, None])"
    code = path.read_text()
    assert good in code, "the seed's causal mask changed; update this test"
    wrong = _load_fresh("prefill_attention", "triton_paged",
                        code.replace(good, "see = (offs_n[None, :] <= qpos[:, None] + 1)"), tmp_path)
    # q lengths > 1, or the extra visible position would not exist and nothing could differ
    case = R.make_prefill_case(2, 2, 2, 32, 16, 12, 10, F32, DEVICE, _gen(),
                               q_lens=[12, int(torch.randint(2, 12, (1,)))])
    msg = R.check_kernel("prefill_attention", wrong, case, {"block_m": 16, "block_n": 16})
    assert msg is not None and "values off" in msg, msg


# ----------------------------------------------------------------------------- store, rmsnorm


@pytest.mark.parametrize("hkv,d,bs,dtype", [(2, 32, 16, F32), (8, 64, 32, BF16),
                                            (1, 128, 16, F16)])
def test_store_triton_matches_reference(hkv, d, bs, dtype):
    case = R.make_store_case(23, hkv, d, bs, 3, dtype, DEVICE, _gen(), num_padding=4)
    _check("store_kvcache", case)


def test_store_triton_reads_a_strided_key_view():
    g = _gen()
    case = R.make_store_case(9, 2, 32, 16, 2, BF16, DEVICE, g)
    qkv = torch.randn(9, 8, 32, generator=g).to(DEVICE, BF16)  # fused q|k|v heads
    case["key"], case["value"] = qkv[:, 4:6], qkv[:, 6:8]
    _check("store_kvcache", case)


@pytest.mark.parametrize("hidden,residual,dtype", [(96, False, F32), (128, True, BF16),
                                                   (200, True, F32)])
def test_rmsnorm_triton_matches_reference(hidden, residual, dtype):
    case = R.make_rmsnorm_case(5, hidden, residual, dtype, DEVICE, _gen())
    _check("rmsnorm", case, {"num_warps": 2})


@pytest.mark.parametrize("dtype", [F32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("slot", list(TRITON_SEEDS))
def test_triton_seed_passes_the_contract_suite(slot, dtype):
    fn = _load_fresh(slot, TRITON_SEEDS[slot])
    for label, case in R.contract_cases(slot, dtype, DEVICE, int(torch.randint(0, 10**6, (1,)))):
        msg = R.check_kernel(slot, fn, case)
        assert msg is None, (label, msg)


def test_triton_seeds_load_through_the_slot_loader_with_evolve_blocks():
    for slot, name in TRITON_SEEDS.items():
        loaded = slots.load_slot(slot, f"seed:{slot}/{name}")
        assert slots.evolve_blocks(Path(loaded.path).read_text()), slot
        tunables = loaded.module.TUNABLES
        slots.load_slot(slot, f"seed:{slot}/{name}", {k: v[-1] for k, v in tunables.items()})


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as a view whose last dimension has stride 2."""
    wide = torch.full((*t.shape[:-1], 2 * t.shape[-1]), 7, dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    return wide[..., ::2]


def test_attention_kernels_read_strided_block_tables_and_lengths():
    """The contract promises shapes, not contiguity: strided index tensors read correctly.

    (check_kernel clones its inputs, which makes them contiguous, so the kernel is called
    directly here.)"""
    case = R.make_decode_case(3, 4, 2, 32, 16, 40, F32, DEVICE, _gen())
    want = R.decode_attention(**case, exact=True)
    fn = _load_fresh("decode_attention", TRITON_SEEDS["decode_attention"])
    strided = dict(case, block_tables=_strided(case["block_tables"]),
                   context_lens=_strided(case["context_lens"]))
    assert strided["block_tables"].stride(-1) == 2
    msg = R.compare("decode", fn(**strided, num_splits=2, block_n=16), want, F32)
    assert msg is None, msg
    case = R.make_prefill_case(3, 4, 2, 32, 16, 17, 20, F32, DEVICE, _gen())
    want = R.prefill_attention(**case, exact=True)
    fn = _load_fresh("prefill_attention", TRITON_SEEDS["prefill_attention"])
    strided = dict(case, **{k: _strided(case[k])
                            for k in ("block_tables", "context_lens", "cu_seqlens_q")})
    msg = R.compare("prefill", fn(**strided, block_m=16, block_n=16), want, F32)
    assert msg is None, msg
