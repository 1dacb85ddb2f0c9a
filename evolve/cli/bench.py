"""`sds bench`: throughput of a runtime on a workload, the transformers peer and the floor.

Prints output tok/s, the peer's tok/s and the fraction of the physical floor, and appends
one row to results/bench.csv with the machine, versions, runtime and workload hash. On CPU
it defaults to the `tiny` preset and the `-cpu` workload (about a minute in all).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from evolve.cli.common import (
    UsageError,
    add_db,
    add_json,
    db_url,
    emit_json,
    open_db,
    positive_int,
    runtime_id,
)
from fitness.workloads import default_workload, get_workload, list_workloads

log = logging.getLogger(__name__)

DEFAULT_CSV = Path("results/bench.csv")
CSV_COLUMNS = ["time", "device", "driver", "torch", "triton", "engine", "runtime",
               "runtime_code", "model", "workload", "workload_hash", "tok_s", "peer_tok_s",
               "peer_method", "floor_tok_s", "fraction_of_floor", "bandwidth_Bps", "wall_s",
               "ttft_mean_s", "tpot_mean_s", "peak_memory_bytes", "steps"]


def environment(device: str) -> dict[str, str]:
    """Device name, driver and library versions for a results row."""
    import torch
    import triton

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                check=False, capture_output=True, text=True, timeout=20).stdout.split("\n")[0].strip()
        except (OSError, subprocess.SubprocessError):
            driver = ""
        driver = f"{driver or '?'} (CUDA {torch.version.cuda})"
    else:
        import os
        name = f"cpu {platform.processor() or platform.machine()} x{os.cpu_count()}"
        driver = "-"
    from importlib.metadata import PackageNotFoundError, version
    try:
        engine = f"sds {version('sds-evolve')}"
    except PackageNotFoundError:  # run from the tree with PYTHONPATH=. (a GPU box)
        engine = "sds (source tree)"
    return {"device": name, "driver": driver, "torch": torch.__version__,
            "triton": triton.__version__, "engine": engine}


def _runtime_arg(text: str | None, db: str) -> Any:
    """None, or a RuntimeSpec from a runtime id (r12, in the database), a JSON file or
    inline JSON."""
    from runtime_modules.slots import RuntimeSpec, SlotError
    if text is None:
        return None
    if text.startswith("r") and text[1:].isdigit():
        from evolve.tune import materialize_spec
        from population_db import NotFound

        store = open_db(db, create=False)
        try:
            spec = RuntimeSpec.from_dict(dict(store.get_runtime(runtime_id(text)).spec))
        except NotFound as e:
            raise UsageError(f"--runtime {text}: {e}") from None
        materialize_spec(store, spec)  # its stored programs, as files the engine can load
        return spec
    p = Path(text)
    try:
        if p.is_file():
            return RuntimeSpec.from_json(p.read_text())
        if text.lstrip().startswith("{"):
            return RuntimeSpec.from_json(text)
    except SlotError as e:
        raise UsageError(f"--runtime {text!r}: {e}") from None
    raise UsageError(f"--runtime {text!r}: expected a runtime spec JSON file or inline JSON")


def _check_inputs(device: str | None, workload: str | None,
                  model: str | None) -> tuple[str, str]:
    """(device, workload name), every input checked before any work starts."""
    import torch

    from runtime_modules.models import model_config

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    name = workload or default_workload(device)
    if name not in list_workloads():
        raise UsageError(f"--workload {name!r}: expected one of {', '.join(list_workloads())}")
    if model is not None:
        try:
            model_config(model)  # a preset or a model folder
        except (ValueError, NotImplementedError, KeyError) as e:
            raise UsageError(f"--model {model!r}: {e}") from None
    return device, name


def run_bench(workload: str | None = None, model: str | None = None, runtime: Any = None,
              device: str | None = None, peer: bool = True, csv_path: Path | None = DEFAULT_CSV,
              peer_max_requests: int | None = None, **engine_params: Any) -> dict[str, Any]:
    """Benchmark a runtime on a workload; returns (and optionally appends to CSV) one row."""
    import torch

    from fitness.bench import build_llm, run_peer, run_workload
    from fitness.floor import measure_bandwidth, physical_floor
    from runtime_modules.models import model_config
    from runtime_modules.slots import RuntimeSpec

    device, name = _check_inputs(device, workload, model)
    w = get_workload(name)
    if device == "cpu" and w.model != "tiny" and model is None:
        log.warning("workload %s is sized for %s; on CPU this will be very slow", name, w.model)
    model_name = model or w.model
    spec = RuntimeSpec.from_dict(runtime) if runtime is not None else RuntimeSpec.default(device)
    llm = build_llm(w, model=model_name, runtime=spec, device=device, **engine_params)
    res = run_workload(llm, w)
    loaded = getattr(llm, "loaded_slots", {}) or {}
    code = hashlib.sha256(json.dumps(
        {k: v.get("code_hash") for k, v in sorted(loaded.items())}).encode()).hexdigest()
    mcfg = getattr(llm, "model_config", None) or getattr(getattr(llm, "model", None), "cfg", None)
    if mcfg is None:
        mcfg = model_config(model_name)
    dtype = getattr(getattr(llm, "config", None), "dtype", None) or (
        torch.bfloat16 if device.startswith("cuda") else torch.float32)
    del llm  # free KV memory before the peer and the bandwidth probe
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    bw = measure_bandwidth(device)
    floor = physical_floor(mcfg, w, bw, dtype_bytes=torch.empty(0, dtype=dtype).element_size())
    row: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **environment(device),
                           "runtime": spec.resolved(device).fingerprint()[:16],
                           "runtime_code": code[:16], "model": model_name, "workload": name,
                           "workload_hash": w.content_hash[:16], "tok_s": res["tok_s"],
                           "floor_tok_s": floor["max_tok_s"],
                           "fraction_of_floor": res["tok_s"] / floor["max_tok_s"],
                           "bandwidth_Bps": bw, "wall_s": res["wall_s"],
                           "ttft_mean_s": res.get("ttft_mean_s"),
                           "tpot_mean_s": res.get("tpot_mean_s"),
                           "peak_memory_bytes": res.get("peak_cuda_bytes",
                                                        res.get("peak_rss_bytes")),
                           "steps": res.get("steps"), "peer_tok_s": None, "peer_method": None}
    if peer:
        p = run_peer(w, model=model_name, device=device, dtype=dtype,
                     max_requests=peer_max_requests)
        row.update(peer_tok_s=p["peer_tok_s"], peer_method=p["peer_method"])
        res["peer"] = p
    if csv_path is not None:
        append_csv(row, Path(csv_path))
    return {**row, "details": {"run": res, "floor": floor, "loaded_slots": loaded}}


def append_csv(row: dict[str, Any], path: Path) -> None:
    """Append `row` (CSV_COLUMNS) to `path`, writing the header for a new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if new:
            wr.writeheader()
        wr.writerow({k: row.get(k) for k in CSV_COLUMNS})


def cmd_bench(args: argparse.Namespace) -> int:
    row = run_bench(workload=args.workload, model=args.model,
                    runtime=_runtime_arg(args.runtime, db_url(args)), device=args.device, peer=args.peer,
                    csv_path=None if args.no_csv else Path(args.csv),
                    peer_max_requests=args.peer_max_requests)
    if args.json:
        emit_json(row)
        return 0
    print(f"workload {row['workload']} ({row['workload_hash']}) on {row['device']}, "
          f"model {row['model']}, runtime {row['runtime']}")
    print(f"engine:      {row['tok_s']:10.1f} output tok/s  ({row['wall_s']:.2f} s)")
    if row["peer_tok_s"] is not None:
        print(f"peer:        {row['peer_tok_s']:10.1f} tok/s  (transformers "
              f"{row['peer_method']}; engine/peer {row['tok_s'] / row['peer_tok_s']:.2f}x)")
    print(f"floor:       {row['floor_tok_s']:10.1f} tok/s  at {row['bandwidth_Bps'] / 1e9:.1f} "
          f"GB/s; engine at {100 * row['fraction_of_floor']:.2f}% of the floor")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput, the transformers peer, the physical floor")
    p.add_argument("--runtime", default=None, metavar="R",
                   help="r12 (a runtime in --db), a runtime spec JSON file or inline JSON "
                        "(default: the seed runtime)")
    p.add_argument("--workload", default=None, choices=list_workloads(), metavar="W",
                   help="workload (default: nanovllm-bench on CUDA, nanovllm-bench-cpu on CPU)")
    p.add_argument("--model", default=None, metavar="M",
                   help="preset or HF folder (default: the workload's model)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="cpu or cuda (default: cuda if available)")
    p.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the transformers peer (default: yes)")
    p.add_argument("--peer-max-requests", type=positive_int, default=None, metavar="N",
                   help="run only the first N requests through the peer")
    p.add_argument("--csv", default=str(DEFAULT_CSV), help="results CSV to append to")
    p.add_argument("--no-csv", action="store_true", help="do not append to the CSV")
    add_db(p)
    add_json(p)
    p.set_defaults(func=cmd_bench)
