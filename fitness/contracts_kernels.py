"""The `contract` stage for kernel slots: the candidate against the torch reference.

The cases come from runtime_modules.reference (ragged lengths on block edges, shuffled
block tables, NaN in every cache position that must not be read, a NaN-poisoned
allocator); they are drawn fresh for every evaluation from the job's seed. On top of the
reference check, the candidate is called twice more on two different inputs of one shape
to catch stale or cached output buffers: the second call must not return the first call's
storage, nor change the first call's result.
"""

from __future__ import annotations

from typing import Any

import torch

from fitness.result import StageResult


def _shapes(case: dict[str, Any]) -> dict[str, Any]:
    return {k: (tuple(v.shape) if isinstance(v, torch.Tensor) else v) for k, v in case.items()}


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


def _staleness(slot: str, fn: Any, params: dict[str, Any], cases: list[dict[str, Any]],
               ) -> str | None:
    """None if two calls on different inputs give fresh, independent outputs, else why."""
    a, b = cases
    out_a = fn(**a, **params)
    tensors_a = _tensors(out_a)
    if not tensors_a:
        return None  # store_kvcache: in-place by contract, checked by the reference
    kept = [t.clone() for t in tensors_a]
    inputs = [v for v in a.values() if isinstance(v, torch.Tensor)]
    for t in tensors_a:
        if any(t.untyped_storage().data_ptr() == i.untyped_storage().data_ptr()
               for i in inputs if slot != "rmsnorm" or i is not a.get("residual")):
            return f"{slot}: the output shares storage with an input; it must be a fresh tensor"
    out_b = fn(**b, **params)
    for t in _tensors(out_b):
        if any(t.untyped_storage().data_ptr() == ta.untyped_storage().data_ptr()
               for ta in tensors_a):
            return (f"{slot}: the second call returned the first call's output buffer "
                    "(stale or cached output); each call must return a fresh tensor")
    for t, k in zip(tensors_a, kept):
        same = (t == k) | (t.isnan() & k.isnan())
        if not bool(same.all()):
            return (f"{slot}: a later call changed the result of an earlier call "
                    "(shared output buffer)")
    for ta, tb in zip(tensors_a, _tensors(out_b)):
        if ta.shape == tb.shape and bool(torch.equal(ta, tb)):
            return (f"{slot}: two different inputs gave identical outputs of shape "
                    f"{tuple(ta.shape)} (stale result)")
    return None


def check_kernel(slot: str, loaded: Any, ctx: Any) -> StageResult:
    """Run a kernel slot's contract: reference comparison on several shapes, then staleness."""
    from runtime_modules import reference as ref

    device = "cuda" if str(ctx.device).startswith("cuda") else "cpu"
    dtype = getattr(torch, ctx.options.get("contract_dtype") or (
        "bfloat16" if device == "cuda" else "float32"))
    seed = int(ctx.seed)
    fn, params = loaded.obj, dict(loaded.params)
    cases = ref.contract_cases(slot, dtype=dtype, device=device, seed=seed)
    checked = []
    for label, case in cases:
        why = ref.check_kernel(slot, fn, case, params)
        if why:
            return StageResult("contract", "failed", {"cases_passed": len(checked)}, why,
                               {"case": label, "shapes": _shapes(case), "seed": seed,
                                "dtype": str(dtype), "mismatch": why})
        checked.append(label)
    # two more cases of one shape from different seeds, for the stale-buffer check
    pair = [dict(ref.contract_cases(slot, dtype=dtype, device=device, seed=seed + k)[0][1])
            for k in (1, 2)]
    why = _staleness(slot, fn, params, pair)
    if why:
        return StageResult("contract", "failed", {"cases_passed": len(checked)}, why,
                           {"case": "staleness", "shapes": _shapes(pair[0]), "seed": seed,
                            "dtype": str(dtype)})
    return StageResult("contract", "passed", {"cases_passed": len(checked) + 1,
                                              "dtype": str(dtype)})
