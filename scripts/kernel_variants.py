#!/usr/bin/env python
"""Build, check and time the variants of one kernel slot in one go.

A variant is a program (a seed name, `file:` path or any slot reference) with one point
of its TUNABLES grid. Every variant is checked against the torch reference
(runtime_modules.reference.check_kernel on the contract suite, plus one realistic shape on
CUDA), then, on CUDA, timed with CUDA events on Qwen3-0.6B shapes (head_dim 128, 16 q
heads over 8 KV heads, hidden 1024, bf16) with L2 flushed between runs; achieved memory
bandwidth is reported against a device-to-device copy measured in the same run. On a
machine without CUDA the checks run under the Triton interpreter on tiny shapes and the
timing columns say that timing needs a GPU.

    python scripts/kernel_variants.py decode_attention                       # every seed
    python scripts/kernel_variants.py decode_attention --programs seed:decode_attention/triton_split_kv \
        --grid num_splits=4,8,16 --grid block_n=32,64
    python scripts/kernel_variants.py rmsnorm --grid all                     # full TUNABLES grid

Prints a table and appends rows to results/kernel_variants.csv.
"""

from __future__ import annotations

import argparse
import csv
import functools
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede decorating any kernel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from runtime_modules import reference as R
from runtime_modules import slots

# Qwen3-0.6B
HQ, HKV, HEAD_DIM, HIDDEN, BLOCK = 16, 8, 128, 1024, 16
FIELDS = ["time", "device", "torch", "triton", "slot", "program", "code_hash", "params",
          "dtype", "shape", "check", "ms", "gb_s", "frac_copy_bw"]


def parse_grid(items: list[str], tunables: dict) -> list[dict]:
    """Points of the grid: 'all' = every list-valued tunable; 'k=v1,v2' picks values."""
    axes: dict[str, list] = {}
    for item in items:
        if item == "all":
            axes.update({k: list(v) for k, v in tunables.items() if isinstance(v, list)})
            continue
        key, sep, vals = item.partition("=")
        if not sep or key not in tunables:
            raise ValueError(f"--grid {item!r}: expected NAME=V1,V2 with NAME one of "
                             f"{sorted(tunables) or 'no tunables'}")
        axes[key] = [json.loads(v) for v in vals.split(",")]
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes.values())] or [{}]


def timing_cases(slot: str, batches: list[int], contexts: list[int], device: str,
                 dtype: torch.dtype) -> list[tuple[str, dict, int]]:
    """(label, kwargs, bytes that must move) on realistic shapes; random, shuffled blocks."""
    g = torch.Generator(device=device).manual_seed(0)
    esize = torch.finfo(dtype).bits // 8
    out: list[tuple[str, dict, int]] = []

    def paged(lens: list[int]):
        nblk = [-(-n // BLOCK) for n in lens]
        total = sum(nblk)
        shape = (total, BLOCK, HKV, HEAD_DIM)
        kc = torch.randn(shape, generator=g, device=device, dtype=dtype)
        vc = torch.randn(shape, generator=g, device=device, dtype=dtype)
        perm = torch.randperm(total, generator=g, device=device).to(torch.int32)
        table = torch.full((len(lens), max(nblk)), -1, dtype=torch.int32, device=device)
        start = 0
        for b, n in enumerate(nblk):
            table[b, :n] = perm[start:start + n]
            start += n
        return kc, vc, table

    for batch, ctx in itertools.product(batches, contexts):
        if slot == "decode_attention":
            kc, vc, table = paged([ctx] * batch)
            case = {"q": torch.randn(batch, HQ, HEAD_DIM, generator=g, device=device,
                                     dtype=dtype),
                    "k_cache": kc, "v_cache": vc, "block_tables": table,
                    "context_lens": torch.full((batch,), ctx, dtype=torch.int32,
                                               device=device),
                    "scale": HEAD_DIM ** -0.5}
            nbytes = batch * (ctx * 2 * HKV + 2 * HQ) * HEAD_DIM * esize
            out.append((f"B={batch} ctx={ctx}", case, nbytes))
        elif slot == "prefill_attention":
            new = min(ctx, 512)
            kc, vc, table = paged([ctx] * batch)
            case = {"q": torch.randn(batch * new, HQ, HEAD_DIM, generator=g, device=device,
                                     dtype=dtype),
                    "k_cache": kc, "v_cache": vc,
                    "cu_seqlens_q": torch.arange(0, batch * new + 1, new, dtype=torch.int32,
                                                 device=device),
                    "context_lens": torch.full((batch,), ctx, dtype=torch.int32,
                                               device=device),
                    "block_tables": table, "scale": HEAD_DIM ** -0.5, "max_seqlen_q": new}
            nbytes = batch * (ctx * 2 * HKV + 2 * new * HQ) * HEAD_DIM * esize
            out.append((f"B={batch} new={new} ctx={ctx}", case, nbytes))
    if slot == "store_kvcache":
        for n in sorted({b * 16 for b in batches} | {4096}):
            blocks = -(-n // BLOCK) + 1
            case = {"key": torch.randn(n, HKV, HEAD_DIM, generator=g, device=device,
                                       dtype=dtype),
                    "value": torch.randn(n, HKV, HEAD_DIM, generator=g, device=device,
                                         dtype=dtype),
                    "k_cache": torch.empty(blocks, BLOCK, HKV, HEAD_DIM, device=device,
                                           dtype=dtype),
                    "v_cache": torch.empty(blocks, BLOCK, HKV, HEAD_DIM, device=device,
                                           dtype=dtype),
                    "slot_mapping": torch.randperm(blocks * BLOCK, generator=g,
                                                   device=device)[:n].to(torch.int32)}
            out.append((f"N={n}", case, 4 * n * HKV * HEAD_DIM * esize))
    if slot == "rmsnorm":
        for t in sorted(set(batches) | {4096}):
            for res in (False, True):
                case = {"x": torch.randn(t, HIDDEN, generator=g, device=device, dtype=dtype),
                        "weight": torch.randn(HIDDEN, generator=g, device=device, dtype=dtype),
                        "eps": 1e-6,
                        "residual": torch.randn(t, HIDDEN, generator=g, device=device,
                                                dtype=dtype) if res else None}
                out.append((f"T={t}{' +res' if res else ''}", case,
                            (4 if res else 2) * t * HIDDEN * esize))
    return out


def cuda_time_ms(fn, kwargs: dict, reps: int, flush: torch.Tensor) -> float:
    """Median time of fn(**kwargs) in ms by CUDA events, L2 flushed before each run."""
    for _ in range(3):
        fn(**kwargs)
    times = []
    for _ in range(reps):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(**kwargs)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_gb_s() -> float:
    """Device-to-device copy bandwidth (read + write bytes / time) of a 1 GiB buffer."""
    src = torch.empty(1 << 29, dtype=torch.float16, device="cuda")
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda a, b: b.copy_(a), {"a": src, "b": dst}, 10,
                      torch.empty(1, device="cuda"))
    return 2 * src.numel() * 2 / ms / 1e6


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every variant, print the table, append the CSV."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("slot", choices=R.KERNEL_SLOTS)
    ap.add_argument("--programs", default="", help="comma-separated references "
                    "(default: every seed of the slot)")
    ap.add_argument("--grid", action="append", default=[],
                    help="NAME=V1,V2 (repeatable) or 'all' for the full TUNABLES grid")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--batches", default="1,8,32,128,256")
    ap.add_argument("--contexts", default="128,512,2048")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--csv", default=str(ROOT / "results" / "kernel_variants.csv"))
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = getattr(torch, args.dtype)
    refs = [p for p in args.programs.split(",") if p] or slots.seed_names(args.slot)
    if not cuda:
        # the interpreter cannot time anything meaningful, and the torch seeds on CPU are
        # the engine's CPU path: check everything, time nothing
        print("no CUDA device: checks run under TRITON_INTERPRET=1 on tiny shapes; "
              "timing needs a GPU", file=sys.stderr)
    checks = R.contract_cases(args.slot, dtype, device, seed=int(time.time()))
    if cuda:
        g = torch.Generator().manual_seed(1)
        big = {"decode_attention": lambda: R.make_decode_case(
                   6, HQ, HKV, HEAD_DIM, BLOCK, 700, dtype, device, g, num_padding=2),
               "prefill_attention": lambda: R.make_prefill_case(
                   3, HQ, HKV, HEAD_DIM, BLOCK, 200, 300, dtype, device, g),
               "store_kvcache": lambda: R.make_store_case(300, HKV, HEAD_DIM, BLOCK, 40,
                                                          dtype, device, g),
               "rmsnorm": lambda: R.make_rmsnorm_case(64, HIDDEN, True, dtype, device, g)}
        checks.append(("qwen3-0.6b shape", big[args.slot]()))
        batches = [int(b) for b in args.batches.split(",")]
        contexts = [int(c) for c in args.contexts.split(",")]
        timed = timing_cases(args.slot, batches, contexts, device, dtype)
        peak = copy_bandwidth_gb_s()
        flush = torch.empty(256 << 20, dtype=torch.uint8, device=device)
    env = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "device": torch.cuda.get_device_name() if cuda else "cpu (interpreter)",
           "torch": torch.__version__, "triton": _triton_version()}

    rows: list[dict] = []
    for ref in refs:
        module = slots.load_slot(args.slot, ref).module
        try:
            grid = parse_grid(args.grid, getattr(module, "TUNABLES", {}) or {})
        except ValueError as e:
            print(f"skip {ref}: {e}", file=sys.stderr)
            continue
        for params in grid:
            try:
                loaded = slots.load_slot(args.slot, ref, params)
            except slots.SlotError as e:
                print(f"skip {ref} {params}: {e}", file=sys.stderr)
                continue
            base = {**env, "slot": args.slot, "program": ref, "code_hash": loaded.code_hash[:12],
                    "params": json.dumps(params, sort_keys=True), "dtype": args.dtype}
            verdict = "pass"
            for label, case in checks:
                try:
                    why = R.check_kernel(args.slot, loaded.obj, case, params)
                except Exception as e:  # noqa: BLE001 - a crashing variant is a result, not an abort
                    why = f"{type(e).__name__}: {e}"
                if why:
                    verdict = f"FAIL [{label}] {why}"[:200]
                    break
            if not cuda or verdict != "pass":
                rows.append({**base, "shape": "contract suite", "check": verdict,
                             "ms": "" if cuda else "needs GPU", "gb_s": "", "frac_copy_bw": ""})
                continue
            fn = functools.partial(loaded.obj, **params)
            for label, case, nbytes in timed:
                ms = cuda_time_ms(fn, case, args.reps, flush)
                gbs = nbytes / ms / 1e6
                rows.append({**base, "shape": label, "check": verdict, "ms": f"{ms:.4f}",
                             "gb_s": f"{gbs:.0f}", "frac_copy_bw": f"{gbs / peak:.3f}"})
    if not rows:
        print("no variant matched the --grid arguments", file=sys.stderr)
        return 2
    if cuda:
        print(f"device-to-device copy bandwidth: {peak:.0f} GB/s")
    _print_table(rows)
    path = Path(args.csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} rows appended to {path}")
    return 0 if all(r["check"] == "pass" for r in rows) else 1


def _triton_version() -> str:
    try:
        import triton
        return triton.__version__
    except ImportError:
        return "-"


def _print_table(rows: list[dict]) -> None:
    cols = ["program", "params", "shape", "check", "ms", "gb_s", "frac_copy_bw"]
    width = {c: max([len(c)] + [len(str(r[c])[:60]) for r in rows]) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c])[:60].ljust(width[c]) for c in cols))


if __name__ == "__main__":
    raise SystemExit(main())
