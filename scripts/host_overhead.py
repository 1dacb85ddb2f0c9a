#!/usr/bin/env python
"""Host overhead per decode step: the engine with a model stub, no GPU needed.

The engine runs with `runtime_modules.stub.StubRunner`, which does the real host-side batch
preparation but no model forward, so what is left is the host work of a step: scheduling,
the engine's check of the scheduler's contract, block management, batch preparation, the
stub itself (random tokens), postprocessing (appending tokens, finishing sequences) and
the rest of `step()`. For batch sizes 1, 32 and 256 it times decode steps with
`time.perf_counter` twice: once untouched (the headline ms/step), once with the engine's
phases wrapped in timers (the breakdown; the wrappers cost a little themselves). Target:
under 0.5 ms per step at batch 256, by the median and by the mean, the latter including the
steps where every sequence crosses a block boundary (1 in `block_size`). Each figure is the
pool of `--repeats` fresh engines run in fresh worker processes; per step both wall time and
the thread's CPU time are kept (CPU time does not count time slices lost to other jobs on a
shared box). `--compare REV` runs the engine and seeds of git revision REV in the same
invocation, alternating with the working tree, so before/after share the box's noise.
Writes results/host_overhead.csv; `--cprofile` also writes a cProfile of the largest batch.

    python scripts/host_overhead.py [--batches 1 32 256] [--steps 200] [--repeats 5]
                                    [--compare HEAD] [--label after] [--cprofile]
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import json
import logging
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# a worker of `--compare` imports the engine and seeds of another revision from SDS_HO_ROOT
sys.path.insert(0, os.environ.get("SDS_HO_ROOT") or str(REPO))

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


def sample_steps(llm: Any, steps: int) -> dict[str, list]:
    """Wall and thread-CPU seconds of each step, and whether it crossed a block boundary."""
    bs, live = llm.config.block_size, llm.engine.live
    wall: list[float] = []
    cpu: list[float] = []
    edge: list[bool] = []
    for _ in range(steps):
        nc = next(iter(live.values())).num_computed_tokens  # every sequence is in lock-step
        c0 = time.thread_time()
        t0 = time.perf_counter()
        llm.step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        edge.append(nc % bs == 0)  # the new token opens a block: every sequence allocates
    return {"wall": wall, "cpu": cpu, "edge": edge}


def summarize(runs: list[dict[str, list]]) -> dict[str, float]:
    """Pooled ms/step figures of several runs, with the spread of the per-run figures."""
    def ms(key: str, edge: bool | None = None) -> list[float]:
        return [1e3 * v for r in runs for v, e in zip(r[key], r["edge"])
                if edge is None or e == edge]
    wall, cpu = ms("wall"), ms("cpu")
    per_med = [1e3 * statistics.median(r["wall"]) for r in runs]
    per_mean = [1e3 * statistics.fmean(r["wall"]) for r in runs]
    wall_edge, cpu_edge = ms("wall", True), ms("cpu", True)
    return {"repeats": len(runs),
            "ms_per_step": statistics.median(wall),
            "ms_per_step_mean": statistics.fmean(wall),
            "ms_p90": statistics.quantiles(wall, n=10)[-1] if len(wall) > 1 else wall[0],
            "ms_boundary_median": statistics.median(wall_edge) if wall_edge else float("nan"),
            "ms_boundary_mean": statistics.fmean(wall_edge) if wall_edge else float("nan"),
            "cpu_ms_median": statistics.median(cpu),
            "cpu_ms_mean": statistics.fmean(cpu),
            "cpu_ms_boundary_mean": statistics.fmean(cpu_edge) if cpu_edge else float("nan"),
            "run_median_min": min(per_med), "run_median_max": max(per_med),
            "run_mean_min": min(per_mean), "run_mean_max": max(per_mean)}


def measure(batch: int, steps: int) -> dict[str, Any]:
    """Headline and per-phase host ms per decode step at `batch` (in this process)."""
    llm = build(batch, steps)
    row: dict[str, Any] = {"batch": batch, "steps": steps, **summarize([sample_steps(llm,
                                                                                     steps)])}
    timer = PhaseTimer()
    wrapped = instrument(llm, timer)
    if not wrapped:
        raise RuntimeError("found no scheduler / block manager / input builder to time in "
                           f"{type(llm).__name__}; the engine layout changed")
    row.update(phases(llm, timer, steps))
    row["us_per_seq"] = 1e3 * row["ms_per_step"] / batch
    return row


def phases(llm: Any, timer: PhaseTimer, steps: int) -> dict[str, float]:
    """Median ms per phase per step with the timers on (they cost a little themselves)."""
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
    out = {"ms_per_step_instrumented": 1e3 * statistics.median(d["total"] for d in per_step)}
    for p in PHASES:
        out[f"{p}_ms"] = 1e3 * statistics.median(d[p] for d in per_step)
    return out


def worker(batches: list[int], steps: int) -> None:
    """Print one JSON line of per-step samples per batch size (a `--compare` worker)."""
    for b in batches:
        print(json.dumps({"batch": b, **sample_steps(build(b, steps), steps)}), flush=True)


def extract(rev: str, into: Path) -> Path:
    """The engine and seeds of git revision `rev` unpacked under `into`."""
    try:
        blob = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev,
                               "runtime_modules", "seeds"], check=True,
                              capture_output=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"--compare {rev!r}: git archive failed: "
                         f"{e.stderr.decode().strip()}") from None
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_worker(root: Path, batches: list[int], steps: int) -> dict[int, dict[str, list]]:
    """Samples per batch size from a fresh process importing the engine from `root`."""
    env = dict(os.environ, SDS_HO_ROOT=str(root))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(steps),
           "--batches", *map(str, batches)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"host-overhead worker for {root} failed:\n{proc.stderr[-2000:]}")
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            out[d.pop("batch")] = d
    return out


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


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to the CSV (rewriting it with the union of columns if they changed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old: list[dict[str, Any]] = []
    fields: list[str] = []
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as f:
            rd = csv.DictReader(f)
            fields, old = list(rd.fieldnames or []), list(rd)
    for r in rows:
        fields += [k for k in r if k not in fields]
    with path.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=fields, restval="")
        wr.writeheader()
        wr.writerows(old + rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    p.add_argument("--steps", type=int, default=200, help="decode steps timed per batch size")
    p.add_argument("--repeats", type=int, default=5, help="fresh engines (processes) per figure")
    p.add_argument("--compare", default=None, metavar="REV",
                   help="also time git revision REV's engine and seeds, interleaved")
    p.add_argument("--csv", default="results/host_overhead.csv")
    p.add_argument("--label", default="", help="a tag for this row (e.g. before/after)")
    p.add_argument("--cprofile", action="store_true", help="also profile the largest batch")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    torch.set_num_threads(1)  # the stub does no math; keep thread pools out of the figures
    if a.worker:
        worker(a.batches, a.steps)
        return 0
    if a.repeats < 1 or a.steps < 2:
        p.error(f"--repeats must be >= 1 and --steps >= 2, got {a.repeats} and {a.steps}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine = f"cpu {platform.processor() or platform.machine()} x{os.cpu_count()}"
    variants: dict[str, Path] = {a.label or "tree": REPO}
    with tempfile.TemporaryDirectory() as tmp:
        if a.compare:
            rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", a.compare],
                                 check=False, capture_output=True,
                                 text=True).stdout.strip() or a.compare
            variants[f"rev {rev}"] = extract(a.compare, Path(tmp))
        samples: dict[str, dict[int, list]] = {v: defaultdict(list) for v in variants}
        for _ in range(a.repeats):  # alternate variants so both see the same noise
            for name, root in variants.items():
                for b, d in run_worker(root, a.batches, a.steps).items():
                    samples[name][b].append(d)
    rows = []
    for name in variants:
        for b in a.batches:
            r = {"time": stamp, "machine": machine, "python": platform.python_version(),
                 "label": name, "batch": b, "steps": a.steps, **summarize(samples[name][b])}
            r["us_per_seq"] = 1e3 * r["ms_per_step"] / b
            if name == (a.label or "tree"):  # the breakdown, in this process
                llm = build(b, a.steps)
                timer = PhaseTimer()
                instrument(llm, timer)
                r.update(phases(llm, timer, a.steps))
            rows.append(r)
            print(f"{name:>12} batch {b:4d}: median {r['ms_per_step']:.3f} ms/step "
                  f"[runs {r['run_median_min']:.3f}-{r['run_median_max']:.3f}], mean "
                  f"{r['ms_per_step_mean']:.3f} [{r['run_mean_min']:.3f}-"
                  f"{r['run_mean_max']:.3f}], boundary mean {r['ms_boundary_mean']:.3f}, "
                  f"cpu median {r['cpu_ms_median']:.3f} mean {r['cpu_ms_mean']:.3f}", flush=True)
    write_rows(Path(a.csv), rows)
    if a.cprofile:
        b = max(a.batches)
        prof = Path(a.csv).with_name(f"host_overhead_b{b}.prof")
        print(cprofile(b, a.steps, prof))
    for r in rows:
        if r["batch"] >= 256 and r["label"] == (a.label or "tree") and max(
                r["ms_per_step"], r["ms_per_step_mean"]) > 0.5:
            print(f"batch {r['batch']}: median {r['ms_per_step']:.3f} / mean "
                  f"{r['ms_per_step_mean']:.3f} ms/step: above the 0.5 ms target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
