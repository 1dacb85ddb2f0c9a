"""Export a runtime as a standalone, pip-installable Python package.

The package holds a copy of the engine (`runtime_modules/`, imports rewritten to live under
the package), the seeds (for slots the runtime leaves to the device default), the chosen
module sources under readable names (`PKG/modules/<slot>.py`), the runtime with its tuned
parameters as JSON pointing at those files, a PROVENANCE.json, a README with its benchmark
table, and an entry point in the group `sds.runtimes`. It imports nothing from sds.

Example:
    >>> path = export_runtime(Store.open(), "my-run", "dist/fast_runtime", wheel=True)
    >>> # pip install dist/fast_runtime/dist/*.whl; then: from fast_runtime import LLM
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import keyword
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from runtime_modules.slots import SEEDS_DIR, RuntimeSpec, code_hash, program_path

log = logging.getLogger(__name__)

ENGINE_DIR = Path(__file__).resolve().parent.parent / "runtime_modules"
TEMPLATE_DIR = Path(__file__).resolve().parent / "export_template"
# Top-level packages of sds: an exported package must import none of them.
SDS_PACKAGES = ("runtime_modules", "seeds", "population_db", "fitness", "evolve")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ExportError(ValueError):
    """Bad input to export: unknown runtime or run, no result to export, a busy folder."""


def check_name(name: str) -> str:
    """`name` if it can be the package's import name, else an ExportError saying why."""
    if not isinstance(name, str) or not _NAME.match(name) or keyword.iskeyword(name):
        raise ExportError(f"package name {name!r} is not a Python identifier "
                          "(letters, digits and _, not starting with a digit)")
    if name in SDS_PACKAGES or name in ("sds", "torch", "triton", "numpy", "safetensors"):
        raise ExportError(f"package name {name!r} would shadow an installed package; "
                          "choose another")
    return name


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"output folder {out_dir} already holds something; "
                          "choose a new or empty folder (nothing was written)")


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks (never executed)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def rewrite_imports(code: str, pkg: str, where: str, type_checking: bool = True) -> str:
    """`code` with imports of sds's engine packages moved under `pkg` (`from pkg.x ...`).

    With type_checking=False, imports under `if TYPE_CHECKING:` are left as they are, so a
    module that only names engine types keeps its exact text (and code hash).
    """
    tree = ast.parse(code, filename=where)
    skip = set() if type_checking else _type_checking_nodes(tree)
    lines = code.splitlines(keepends=True)
    edits: list[tuple[int, int, str, str]] = []  # (line, col, old, new)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in ("runtime_modules", "seeds"):
                edits.append((node.lineno, node.col_offset, f"from {node.module}",
                              f"from {pkg}.{node.module}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("runtime_modules", "seeds"):
                    raise ExportError(f"{where}:{node.lineno}: `import {alias.name}` cannot be "
                                      "rewritten for the package; use `from ... import`")
    for lineno, col, old, new in sorted(edits, reverse=True):
        line = lines[lineno - 1]
        at = line.find(old, col)
        if at < 0:  # a multi-line or unusual import form: say so instead of guessing
            raise ExportError(f"{where}:{lineno}: cannot rewrite import {old!r}")
        lines[lineno - 1] = line[:at] + new + line[at + len(old):]
    return "".join(lines)


def check_self_contained(root: Path, pkg: str) -> None:
    """Raise ExportError if any module under `root` imports a package of sds."""
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in SDS_PACKAGES:
                    raise ExportError(f"{path.relative_to(root)}:{node.lineno} imports {n!r}; "
                                      f"the package {pkg} must be self-contained")


def _copy_tree(src: Path, dst: Path, pkg: str, type_checking: bool) -> None:
    """Copy a package's .py files (and data) with imports rewritten; skip caches."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if "__pycache__" in rel.parts or path.is_dir() or path.suffix in (".pyc", ".pyo"):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".py":
            target.write_text(rewrite_imports(path.read_text(encoding="utf-8"), pkg, str(rel),
                                              type_checking),
                              encoding="utf-8")
        else:
            shutil.copy2(path, target)


def _program_code(store: Any, slot: str, ref: str) -> str:
    if ref.startswith("sha256:"):
        prog = store.program_by_hash(ref.split(":", 1)[1])
        if prog is None:
            raise ExportError(f"slot {slot}: program {ref} is not in the database")
        return prog.code
    return program_path(slot, ref).read_text(encoding="utf-8")


def resolve_target(store: Any, runtime_or_run: int | str) -> tuple[Any, str]:
    """The runtime to export: an id, or the best runtime of the run of that name."""
    from population_db import NotFound
    key = str(runtime_or_run)
    if key.isdigit():
        try:
            return store.get_runtime(int(key)), f"runtime {key}"
        except NotFound:
            raise ExportError(f"runtime {key} not found in the database") from None
    try:
        run = store.get_run(key)
    except NotFound:
        raise ExportError(f"no runtime id or run named {key!r} in the database") from None
    best = store.best_runtime(run.id)
    if best is None:
        raise ExportError(f"run {run.name!r} has no runtime with a passed bench evaluation; "
                          "nothing to export")
    return best.runtime, f"best runtime of run {run.name!r}"


def export_runtime(store: Any, runtime_or_run: int | str, out_dir: str | Path,
                   name: str | None = None, wheel: bool = False) -> Path:
    """Write the package for a runtime (or a run's best) into `out_dir`; return `out_dir`.

    `out_dir` must be new or empty: nothing is ever overwritten. With `wheel`, the wheel is
    built into `out_dir/dist/`.
    """
    out_dir = Path(out_dir).resolve()
    _check_out_dir(out_dir)
    rt, chosen_as = resolve_target(store, runtime_or_run)
    pkg = check_name(name or f"sds_runtime_{rt.id}")
    info = describe_runtime(store, rt)
    spec = RuntimeSpec.from_dict(dict(rt.spec))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{pkg}-", dir=out_dir.parent))
    try:
        root = tmp / pkg
        _copy_tree(ENGINE_DIR, root / "runtime_modules", pkg, type_checking=True)
        # Seeds and chosen modules keep their exact text: the engine reports code hashes.
        _copy_tree(SEEDS_DIR, root / "seeds", pkg, type_checking=False)
        (root / "modules").mkdir()
        (root / "modules" / "__init__.py").write_text(
            '"""The module sources this runtime chose, one file per slot."""\n')
        exported = spec.to_dict()
        modules: dict[str, Any] = {}
        for slot, choice in spec.slots.items():
            code = _program_code(store, slot, choice.program)
            bundled = rewrite_imports(code, pkg, f"{slot} ({choice.program})",
                                      type_checking=False)
            (root / "modules" / f"{slot}.py").write_text(bundled, encoding="utf-8")
            exported["slots"][slot]["program"] = f"file:modules/{slot}.py"
            modules[slot] = {"file": f"{pkg}/modules/{slot}.py", "ref": choice.program,
                             "code_hash": code_hash(code), "bundled_hash": code_hash(bundled),
                             "params": dict(choice.params)}
        (root / "runtime.json").write_text(json.dumps(exported, indent=2, sort_keys=True) + "\n")
        provenance = {"package": pkg, "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                      "chosen_as": chosen_as, "modules": modules, **info}
        (root / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        subs = {"NAME": pkg, "DIST": pkg.replace("_", "-"), "VERSION": "0.1.0",
                "DESCRIPTION": f"LLM inference runtime {rt.id} evolved by sds ({chosen_as})"}
        (root / "__init__.py").write_text(_render("__init__.py.tmpl", subs))
        (tmp / "pyproject.toml").write_text(_render("pyproject.toml.tmpl", subs))
        (tmp / "README.md").write_text(render_readme(pkg, provenance))
        check_self_contained(root, pkg)
        if wheel:
            build_wheel(tmp, tmp / "dist")
        _check_out_dir(out_dir)  # nobody filled it meanwhile
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked): rename needs it gone
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s as %s into %s", chosen_as, pkg, out_dir)
    return out_dir


def _render(template: str, subs: dict[str, str]) -> str:
    text = (TEMPLATE_DIR / template).read_text(encoding="utf-8")
    for k, v in subs.items():
        text = text.replace("{{" + k + "}}", v.replace('"', "'"))
    left = re.findall(r"\{\{[A-Z_]+\}\}", text)
    assert not left, f"{template}: unfilled placeholders {left}"
    return text


def build_wheel(project: Path, dist: Path) -> Path:
    """Build the project's wheel into `dist` with the installed setuptools (no network)."""
    import importlib.util

    dist.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("pip") is not None:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "--no-index", "-q", "-w", str(dist), str(project)]
    elif importlib.util.find_spec("build") is not None:
        cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
               str(dist), str(project)]
    else:
        raise RuntimeError(f"cannot build a wheel with {sys.executable}: neither pip nor "
                           "build is installed (pip install build, or drop --wheel)")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    wheels = sorted(dist.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"building the wheel failed ({' '.join(cmd)}): {' | '.join(tail)}")
    # pip also leaves a build/ and .egg-info beside the sources: not part of the package.
    shutil.rmtree(project / "build", ignore_errors=True)
    for egg in project.glob("*.egg-info"):
        shutil.rmtree(egg, ignore_errors=True)
    return wheels[0]


def _bench_rows(store: Any, runtime_id: int) -> list[Any]:
    """The runtime's passed bench evaluations, newest last."""
    return store.evaluations(runtime_id=runtime_id, stage="bench", status="passed")


def describe_runtime(store: Any, rt: Any) -> dict[str, Any]:
    """Provenance of a runtime: run, lineage to the seeds, metrics, workload, environment."""
    run = store.get_run(rt.run_id)
    lineage = store.ancestors(rt.id)
    scores = store.scores(run.id, sorted({e.node.id for e in lineage}))
    benches = _bench_rows(store, rt.id)
    latest = benches[-1] if benches else None
    roots = [e.node for e in lineage if not e.node.parents]
    seed_tok_s = None
    if latest is not None:  # the seed's score on the same workload, for the speedup
        for root in roots:
            same = [e for e in _bench_rows(store, root.id) if e.workload == latest.workload]
            if same and root.id != rt.id:
                seed_tok_s = same[-1].metrics.get("tok_s")
    return {
        "run": {"id": run.id, "name": run.name, "status": run.status, "seed": run.seed,
                "config": run.config},
        "runtime": {"id": rt.id, "operator": rt.operator, "generation": rt.generation,
                    "island": rt.island, "spec": rt.spec, "spec_hash": rt.spec_hash},
        "lineage": [{"depth": e.depth, "runtime_id": e.node.id, "operator": e.node.operator,
                     "generation": e.node.generation, "role": e.role, "child_id": e.via_id,
                     "tok_s": scores.get(e.node.id)} for e in lineage],
        "metrics": dict(latest.metrics) if latest else {},
        "seed_tok_s": seed_tok_s,
        "workload": latest.workload if latest else None,
        "workload_hash": latest.workload_hash if latest else None,
        "device": latest.device if latest else None,
        "environment": latest.environment if latest else None,
        "benchmarks": [{"workload": e.workload, "device": e.device, "metrics": e.metrics,
                        "at": str(e.finished_at or e.created_at)} for e in benches],
        "exported_by": {"python": platform.python_version(), "platform": platform.platform()},
    }


def _fmt(v: Any, digits: int = 1) -> str:
    return "-" if v is None else (f"{v:,.{digits}f}" if isinstance(v, float) else str(v))


def render_readme(pkg: str, prov: dict[str, Any]) -> str:
    """The package's README: usage, its benchmark table, modules and lineage."""
    rt, run = prov["runtime"], prov["run"]
    lines = [f"# {pkg}", "",
             (f"An LLM inference runtime evolved by sds in run "
             f"`{run['name']}` (runtime {rt['id']}, operator `{rt['operator']}`, generation "
             f"{rt['generation']}), exported as a standalone package: the engine, the chosen "
             "modules and their tuned parameters. It needs torch (and triton on Linux); "
             "sds itself is not needed."), "",
             "```python", f"from {pkg} import LLM, SamplingParams",
             'llm = LLM("qwen3-0.6b")  # or a Hugging Face folder; this runtime is the default',
             "outs = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=32))",
             "```", "", "## Benchmarks (as measured by sds)", ""]
    if prov["benchmarks"]:
        lines += ["| workload | device | tok/s | seed tok/s | speedup | TTFT s | TPOT s |",
                  "|---|---|---|---|---|---|---|"]
        for b in prov["benchmarks"]:
            m, seed = b["metrics"], None
            if b["workload"] == prov["workload"]:
                seed = prov["seed_tok_s"]
            tok = m.get("tok_s")
            speed = f"{tok / seed:.2f}x" if tok and seed else "-"
            lines.append(f"| {b['workload']} | {b['device']} | {_fmt(tok)} | {_fmt(seed)} | "
                         f"{speed} | {_fmt(m.get('ttft_s'), 4)} | {_fmt(m.get('tpot_s'), 4)} |")
    else:
        lines.append("This runtime has no passed benchmark in the database it came from.")
    lines += ["", "## Modules", "", "| slot | file | from | code sha256 |", "|---|---|---|---|"]
    for slot, m in sorted(prov["modules"].items()):
        lines.append(f"| {slot} | `{m['file']}` | `{m['ref'][:40]}` | `{m['code_hash'][:12]}` |")
    lines += ["", "Slots not listed use the engine's default for the device (bundled seeds).",
              "", "## Lineage", "", "| depth | runtime | operator | generation | tok/s |",
              "|---|---|---|---|---|"]
    for e in prov["lineage"]:
        lines.append(f"| {e['depth']} | {e['runtime_id']} | {e['operator']} | "
                     f"{e['generation']} | {_fmt(e['tok_s'])} |")
    lines += ["", ("Full provenance (run config, metrics, workload, device, environment): "
              f"`{pkg}/PROVENANCE.json`, or `{pkg}.provenance()`."), ""]
    return "\n".join(lines)
