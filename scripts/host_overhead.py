#!/usr/bin/env python
"""Host overhead per decode step (issue 7, part 3): the engine with a model stub, no GPU needed.

The engine runs with `runtime_modules.stub.StubRunner`, which does the real host-side batch
preparation but no model forward, so what is left is the host work of a step: scheduling,
the engine's check of the scheduler's contract, block management, batch preparation, the
stub itself (random tokens), postprocessing (appending tokens, finishing sequences) and
the rest of `step()`. For batch sizes 1, 32 and 256 it times decode steps with
`time.perf_counter` twice: once untouched (the headline ms/step), once with the engine's
phases wrapped in timers (the breakdown; the wrappers cost a little themselves). Target:
under 0.5 ms per step at batch 256. Writes results/host_overhead.csv; `--cprofile` also
writes a cProfile of the batch-256 run and prints its hot spots.

    python scripts/host_overhead.py [--batches 1 32 256] [--steps 200] [--cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import logging
import platform
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

log = logging.getLogger("host_overhead")

PHASES = ("scheduling", "contract_check", "block_management", "batch_preparation",
          "model_stub", "postprocessing", "other")


class PhaseTimer:
    """Self time per phase of wrapped methods (a nested call's time goes to its own phase)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []
        self.active = False

    def wrap(self, obj: Any, method: str, phase: str) -> None:
        """Replace `obj.method` (an instance attribute) with a timed version."""
        fn = getattr(obj, method)

        def timed(*a: Any, **k: Any) -> Any:
            if not self.active:
                return fn(*a, **k)
            t0 = time.perf_counter()
            self._stack.append(0.0)
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t0
                child = self._stack.pop()
                self.totals[phase] += dt - child
                if self._stack:
                    self._stack[-1] += dt

        setattr(obj, method, timed)


def _walk(root: Any, depth: int = 3) -> list[Any]:
    """Objects reachable from `root` through instance attributes (the engine's parts)."""
    seen, out, frontier = {id(root)}, [root], [root]
    for _ in range(depth):
        nxt = []
        for o in frontier:
            for v in getattr(o, "__dict__", {}).values():
                if id(v) in seen or isinstance(v, (int, float, str, bytes, list, dict, tuple,
                                                   set, torch.Tensor)):
                    continue
                seen.add(id(v))
                out.append(v)
                nxt.append(v)
        frontier = nxt
    return out


def instrument(llm: Any, timer: PhaseTimer) -> list[str]:
    """Wrap the engine's phases found by their contract method names; returns what it wrapped."""
    wrapped = []
    targets: list[tuple[Callable[[Any], bool], tuple[str, ...], str]] = [
        (lambda o: hasattr(o, "schedule") and hasattr(o, "finish"), ("schedule",),
         "scheduling"),
        (lambda o: hasattr(o, "allocate") and hasattr(o, "preempt"),
         ("allocate", "can_allocate", "num_cached_prefix_tokens", "commit", "free",
          "preempt"), "block_management"),
        (lambda o: hasattr(o, "prepare") and hasattr(o, "release"), ("prepare",),
         "batch_preparation"),
        (lambda o: hasattr(o, "run") and hasattr(o, "release") and hasattr(o, "builder"),
         ("run",), "model_stub"),
        (lambda o: hasattr(o, "step_sequences"), ("_check",), "contract_check"),
        (lambda o: hasattr(o, "step_sequences"), ("_postprocess",), "postprocessing"),
    ]
    for obj in _walk(llm):
        for pred, methods, phase in targets:
            if pred(obj):
                for m in methods:
                    if callable(getattr(obj, m, None)):
                        timer.wrap(obj, m, phase)
                        wrapped.append(f"{type(obj).__name__}.{m}")
    return wrapped


def build(batch: int, steps: int, seed: int = 0) -> Any:
    """A `tiny` engine with the stub runner and `batch` requests already in decode."""
    from runtime_modules import LLM, SamplingParams
    from runtime_modules.stub import StubRunner
    prompt_len, block = 16, 16
    total = prompt_len + 2 * steps + 64  # two timed passes (plain, instrumented) + warm-up
    blocks = batch * (-(-total // block)) + 16
    llm = LLM("tiny", runner_factory=StubRunner, device="cpu", seed=seed, max_num_seqs=batch,
              max_num_batched_tokens=max(4096, batch * prompt_len), max_model_len=total,
              num_kv_blocks=blocks, block_size=block)
    g = torch.Generator().manual_seed(seed)
    for _ in range(batch):
        ids = torch.randint(2, 1024, (prompt_len,), generator=g).tolist()
        llm.add_request(ids, SamplingParams(temperature=0.6, max_tokens=total - prompt_len - 1,
                                            ignore_eos=True))
    d0 = dict(llm.stats).get("decode_steps", 0)
    while dict(llm.stats).get("decode_steps", 0) < d0 + 5:  # prefill, then a few decodes
        llm.step()
    return llm


def time_steps(llm: Any, steps: int) -> list[float]:
    """Seconds of each of `steps` engine steps."""
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        llm.step()
        out.append(time.perf_counter() - t0)
    return out


def measure(batch: int, steps: int) -> dict[str, Any]:
    """Headline and per-phase host ms per decode step at `batch`."""
    llm = build(batch, steps)
    plain = time_steps(llm, steps)
    timer = PhaseTimer()
    wrapped = instrument(llm, timer)
    if not wrapped:
        raise RuntimeError("found no scheduler / block manager / input builder to time in "
                           f"{type(llm).__name__}; the engine layout changed")
    timer.active = True
    per_step: list[dict[str, float]] = []
    for _ in range(steps):  # phases per step, so the medians shrug off preempted time slices
        before = dict(timer.totals)
        t0 = time.perf_counter()
        llm.step()
        dt = time.perf_counter() - t0
        d = {p: timer.totals.get(p, 0.0) - before.get(p, 0.0) for p in PHASES[:-1]}
        d["other"] = dt - sum(d.values())  # step() glue, output objects, stats
        d["total"] = dt
        per_step.append(d)
    timer.active = False
    row: dict[str, Any] = {"batch": batch, "steps": steps,
                           "ms_per_step": 1e3 * statistics.median(plain),
                           "ms_per_step_mean": 1e3 * statistics.fmean(plain),
                           "ms_per_step_instrumented": 1e3 * statistics.median(
                               d["total"] for d in per_step)}
    for p in PHASES:
        row[f"{p}_ms"] = 1e3 * statistics.median(d[p] for d in per_step)
    row["us_per_seq"] = 1e3 * row["ms_per_step"] / batch
    return row


def cprofile(batch: int, steps: int, out: Path, top: int = 25) -> str:
    """cProfile of `steps` decode steps at `batch`; writes the .prof and returns the top table."""
    llm = build(batch, steps)
    prof = cProfile.Profile()
    prof.enable()
    time_steps(llm, steps)
    prof.disable()
    prof.dump_stats(str(out))
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    p.add_argument("--steps", type=int, default=200, help="decode steps timed per batch size")
    p.add_argument("--csv", default="results/host_overhead.csv")
    p.add_argument("--label", default="", help="a tag for this row (e.g. before/after)")
    p.add_argument("--cprofile", action="store_true", help="also profile the largest batch")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # the stub does no math; keep thread pools out of the figures
    rows = []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine = f"cpu {platform.processor() or platform.machine()} x{__import__('os').cpu_count()}"
    for b in a.batches:
        r = {"time": stamp, "machine": machine, "python": platform.python_version(),
             "label": a.label, **measure(b, a.steps)}
        rows.append(r)
        print(f"batch {b:4d}: {r['ms_per_step']:.3f} ms/step ({r['us_per_seq']:.2f} us/seq) | "
              + " ".join(f"{ph} {r[f'{ph}_ms']:.3f}" for ph in PHASES))
    path = Path(a.csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            wr.writeheader()
        wr.writerows(rows)
    if a.cprofile:
        b = max(a.batches)
        prof = path.with_name(f"host_overhead_b{b}.prof")
        print(cprofile(b, a.steps, prof))
    big = [r for r in rows if r["batch"] >= 256]
    if big and big[0]["ms_per_step"] > 0.5:
        print(f"batch {big[0]['batch']}: {big[0]['ms_per_step']:.3f} ms/step is above the "
              "0.5 ms target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
