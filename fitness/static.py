"""The `static` stage: checks that read a candidate's source without running any of it.

Parses the module; checks that it defines the slot's symbol with the contract's kind,
leading parameters and methods (on the AST, so nothing executes); checks that an edit of a
parent stays inside its EVOLVE-BLOCKs; and rejects imports and calls a runtime module has
no business making (network, processes, threads, FFI, dynamic code, patching the clock),
naming the construct and its line. The sandbox still holds if something slips past this.
"""

from __future__ import annotations

import ast
import time
from typing import Any

from fitness import pyast
from fitness.result import StageResult

FORBIDDEN_MODULES = frozenset({
    "socket", "ssl", "subprocess", "ctypes", "cffi", "multiprocessing", "threading",
    "_thread", "concurrent", "asyncio", "urllib", "urllib3", "requests", "httpx", "aiohttp",
    "http", "ftplib", "smtplib", "telnetlib", "pty", "signal", "importlib", "builtins",
    "shutil", "resource", "mmap", "pickle", "marshal", "webbrowser", "xmlrpc",
    # reaching into the interpreter: the judge runs in the same process
    "gc", "inspect", "sys", "fitness", "__main__", "types", "traceback", "code",
    "codeop", "runpy", "pdb", "faulthandler", "tracemalloc", "weakref", "os.path",
})
# attributes that lead from any object to frames, code, globals or every class alive
FORBIDDEN_ATTRS = frozenset({
    "__code__", "__globals__", "__closure__", "__builtins__", "__subclasses__", "__dict__",
    "__class__", "__bases__", "__mro__", "__func__", "__self__", "__wrapped__", "__module__",
    "__getattribute__", "__setattr__", "__import__", "__loader__", "__spec__",
    "f_back", "f_locals", "f_globals", "f_code", "gi_frame", "cr_frame", "ag_frame",
    "tb_frame", "tb_next", "_getframe", "modules", "_exit", "abort", "settrace", "setprofile",
})
FORBIDDEN_BUILTINS = frozenset({"globals", "locals", "vars", "getattr", "setattr", "delattr",
                                "open", "input"})
FORBIDDEN_CALLS = frozenset({"__import__", "eval", "exec", "compile", "breakpoint",
                             "__builtins__"})
FORBIDDEN_OS = frozenset({
    "system", "popen", "fork", "forkpty", "kill", "killpg", "setsid", "setpgid", "execv",
    "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle",
    "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn",
    "posix_spawnp", "unshare", "remove", "unlink", "rmdir", "rename", "replace", "putenv",
    "environ", "getenv", "chdir", "chmod", "chown",
})
CLOCK_NAMES = frozenset({"perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns",
                         "time", "time_ns", "process_time", "synchronize", "Event"})


class StaticViolation(Exception):
    """A construct that `static` rejects, with its line."""

    def __init__(self, status: str, msg: str, line: int | None = None):
        super().__init__(f"line {line}: {msg}" if line else msg)
        self.status, self.line = status, line


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _imported_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _forbidden_module(name: str) -> bool:
    """Whether `name` or any package above it (`a`, `a.b` of `a.b.c`) is forbidden."""
    parts = name.split(".")
    return any(".".join(parts[:i]) in FORBIDDEN_MODULES for i in range(1, len(parts) + 1))


def _scan(tree: ast.Module) -> None:
    """Raise StaticViolation on the first forbidden import, call, introspection or patch."""
    imported = _imported_names(tree)
    os_names = {"os"} | {a.asname for n in ast.walk(tree) if isinstance(n, ast.Import)
                         for a in n.names if a.name == "os" and a.asname}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRS:
            raise StaticViolation("rejected", f"forbidden attribute .{node.attr} (reaches into "
                                  "the interpreter the harness runs in)", node.lineno)
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_BUILTINS and \
                node.id not in imported:
            raise StaticViolation("rejected", f"forbidden use of builtin {node.id}() (dynamic "
                                  "attribute access, files or introspection)", node.lineno)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)) and \
                _root(node) in imported:
            raise StaticViolation("rejected", f"assigns to {ast.unparse(node)}: a candidate "
                                  "must not patch modules or classes it imports", node.lineno)
        if isinstance(node, ast.Import):
            for a in node.names:
                if _forbidden_module(a.name):
                    raise StaticViolation("rejected", f"forbidden import {a.name!r}", node.lineno)
        elif isinstance(node, ast.ImportFrom):
            mod = (node.module or "").split(".")[0]
            full = [f"{node.module}.{a.name}" for a in node.names]
            if node.level == 0 and (_forbidden_module(node.module or "")
                                    or any(_forbidden_module(f) for f in full)):
                raise StaticViolation("rejected", f"forbidden import from {node.module!r}",
                                      node.lineno)
            if mod == "os" and any(a.name in FORBIDDEN_OS for a in node.names):
                bad = next(a.name for a in node.names if a.name in FORBIDDEN_OS)
                raise StaticViolation("rejected", f"forbidden use of os.{bad}", node.lineno)
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_CALLS:
            raise StaticViolation("rejected", f"forbidden use of {node.id}()", node.lineno)
        elif isinstance(node, ast.Attribute):
            if _root(node) in os_names and node.attr in FORBIDDEN_OS:
                raise StaticViolation("rejected", f"forbidden use of os.{node.attr}",
                                      node.lineno)
            if isinstance(node.ctx, (ast.Store, ast.Del)) and node.attr in CLOCK_NAMES:
                raise StaticViolation("rejected", f"assigns to {ast.unparse(node)}: the "
                                      "harness owns the clock", node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("setattr", "delattr") and node.args and \
                _root(node.args[0]) in ("time", "torch"):
            raise StaticViolation("rejected", f"{node.func.id}() on {_root(node.args[0])}: "
                                  "patching the clock or torch is not allowed", node.lineno)


def _check_symbol(slot: str, tree: ast.Module) -> None:
    """Check the slot's symbol on the AST: kind, leading parameters, methods."""
    from runtime_modules.slots import slot_info

    info = slot_info(slot)
    defs = {n.name: n for n in tree.body
            if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))}
    node = defs.get(info.symbol)
    if node is None:
        raise StaticViolation("failed", f"the module does not define {info.symbol!r} at top "
                              f"level (slot {slot} needs a {info.kind} {info.symbol})")
    if info.kind == "class":
        if not isinstance(node, ast.ClassDef):
            raise StaticViolation("failed", f"{info.symbol} must be a class", node.lineno)
        methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
        need = {"scheduler": ("__init__", "add", "schedule", "finish", "has_unfinished"),
                "cache_policy": ("__init__", "add", "remove", "evict")}.get(slot, ())
        missing = [m for m in need if m not in methods]
        if missing:
            raise StaticViolation("failed", f"class {info.symbol} lacks method(s) {missing}",
                                  node.lineno)
        fn, skip = methods["__init__"], 1
    else:
        if not isinstance(node, ast.FunctionDef):
            raise StaticViolation("failed", f"{info.symbol} must be a plain function",
                                  node.lineno)
        fn, skip = node, 0
    args = [a.arg for a in (fn.args.posonlyargs + fn.args.args)][skip:]
    if tuple(args[: len(info.params)]) != info.params:
        raise StaticViolation("failed", f"{info.symbol} takes ({', '.join(args)}); expected "
                              f"leading parameters ({', '.join(info.params)})", fn.lineno)


def check_static(slot: str, code: str, parent_code: str | None = None) -> StageResult:
    """Run every static check on one slot's code; never executes it."""
    from runtime_modules.slots import check_evolve_blocks, code_hash

    t0 = time.perf_counter()
    art: dict[str, Any] = {"slot": slot, "code_hash": code_hash(code)}
    try:
        try:
            tree = pyast.parse(code)
        except SyntaxError as e:
            raise StaticViolation("failed", f"syntax error: {e.msg}", e.lineno) from None
        if parent_code is not None:
            why = check_evolve_blocks(parent_code, code)
            if why:
                raise StaticViolation("rejected", f"EVOLVE-BLOCK violation: {why}")
        _scan(tree)
        _check_symbol(slot, tree)
    except StaticViolation as e:
        if e.line:
            art["line"] = e.line
            art["source_line"] = code.splitlines()[e.line - 1].strip()[:200] if \
                e.line <= len(code.splitlines()) else ""
        return StageResult("static", e.status, {}, f"{slot}: {e}", art,
                           time.perf_counter() - t0)
    return StageResult("static", "passed", {"lines": code.count("\n") + 1}, None, art,
                       time.perf_counter() - t0)


def check_static_spec(spec: dict[str, Any], slots: list[str],
                      parents: dict[str, str] | None = None) -> StageResult:
    """`static` over the slots of a spec under test (first failure wins)."""
    from runtime_modules.slots import program_path

    t0 = time.perf_counter()
    metrics: dict[str, Any] = {}
    for slot in slots:
        path = program_path(slot, spec["slots"][slot]["program"])
        res = check_static(slot, path.read_text(encoding="utf-8"), (parents or {}).get(slot))
        if not res.ok:
            return res
        metrics[slot] = res.metrics
    return StageResult("static", "passed", metrics, None, {}, time.perf_counter() - t0)
