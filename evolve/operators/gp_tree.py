"""Between Python source and DEAP GP trees: find a seed's GP target, parse, render.

A GP-ready module says `GP_TARGET = "<function name>"` (or a tuple of names: every decision
of a policy, e.g. admission order and preemption victim); each such function's body is one
`return <expr>` inside an EVOLVE-BLOCK (a docstring may precede it). The expression may use
the function's arguments, numbers, `+ - * /`, unary minus, `max`, `min` and `float(x)`;
division becomes GP's protected division, rendered as
`(a / b if abs(b) > 1e-09 else 1.0)` (plain `a / c` for a nonzero constant c) so no evolved
expression can divide by zero.
"""

from __future__ import annotations

import ast
import copy
import math
import operator
import random
from dataclasses import dataclass
from functools import cache

from deap import gp

from fitness import pyast
from runtime_modules.slots import evolve_blocks

EPS = 1e-9
_state = {"rng": random.Random(0)}  # the rng ephemeral constants draw from (set under a lock)


class GPError(ValueError):
    """The module has no usable GP target; the message says why."""


def _pdiv(a: float, b: float) -> float:
    return a / b if abs(b) > EPS else 1.0


def random_constant() -> float:
    """A fresh constant, log-uniform in magnitude over 1e-3..10, either sign, 3 digits."""
    rng = _state["rng"]
    value = rng.choice((-1.0, 1.0)) * 10 ** rng.uniform(-3, 1)
    return float(f"{value:.3g}")


@cache
def primitive_set(args: tuple[str, ...]) -> gp.PrimitiveSet:
    """add, sub, mul, protected div, max, min, neg and constants over `args`."""
    pset = gp.PrimitiveSet("gp_" + "_".join(args), len(args))
    for fn, name in ((operator.add, "add"), (operator.sub, "sub"), (operator.mul, "mul"),
                     (_pdiv, "pdiv"), (max, "max"), (min, "min")):
        pset.addPrimitive(fn, 2, name=name)
    pset.addPrimitive(operator.neg, 1, name="neg")
    pset.addEphemeralConstant("const", random_constant)
    pset.renameArguments(**{f"ARG{i}": a for i, a in enumerate(args)})
    return pset


@dataclass(frozen=True, slots=True)
class GPTarget:
    """Where the evolvable expression sits in a module."""

    function: str
    args: tuple[str, ...]
    expr: ast.expr
    line_start: int  # 1-based first line of the return statement
    line_end: int  # 1-based last line
    indent: str


def target_names(code: str) -> tuple[str, ...]:
    """The function names GP_TARGET gives (a string or a tuple/list of strings)."""
    try:
        tree = pyast.parse(code)
    except SyntaxError as e:
        raise GPError(f"the parent does not parse (line {e.lineno}: {e.msg})") from None
    names: tuple[str, ...] | None = None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "GP_TARGET"):
            v = node.value
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                names = (v.value,)
            elif isinstance(v, (ast.Tuple, ast.List)) and v.elts and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in v.elts):
                names = tuple(e.value for e in v.elts)
    if names is None:
        raise GPError("the module has no GP_TARGET = \"<function name>\" (or tuple of names) "
                      "assignment")
    return names


def find_targets(code: str) -> list[GPTarget]:
    """Every GP_TARGET function's `return <expr>`, in GP_TARGET's order."""
    return [find_target(code, name) for name in target_names(code)]


def find_target(code: str, name: str | None = None) -> GPTarget:
    """Locate GP_TARGET's (or the named target's) single `return <expr>` in an EVOLVE-BLOCK."""
    names = target_names(code)
    if name is None:
        name = names[0]
    elif name not in names:
        raise GPError(f"{name!r} is not one of GP_TARGET {list(names)}")
    tree = pyast.parse(code)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if not funcs:
        raise GPError(f"GP_TARGET names {name!r}, but there is no module-level def {name}")
    fn = funcs[0]
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # docstring
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        raise GPError(f"{name}'s body must be one `return <expr>` (after an optional docstring)")
    ret = body[0]
    blocks = evolve_blocks(code)  # 0-based line ranges, markers excluded
    if not any(s <= ret.lineno - 1 and ret.end_lineno <= e for s, e in blocks):
        raise GPError(f"{name}'s return statement (line {ret.lineno}) is not inside an "
                      "EVOLVE-BLOCK")
    args = tuple(a.arg for a in fn.args.args)
    line = code.splitlines()[ret.lineno - 1]
    return GPTarget(name, args, ret.value, ret.lineno, ret.end_lineno,
                    line[: len(line) - len(line.lstrip())])


def _is_pdiv(node: ast.IfExp) -> bool:
    """`(a / b if abs(b) > EPS else 1.0)`, as `render` writes protected division."""
    t = node.test
    return (isinstance(node.body, ast.BinOp) and isinstance(node.body.op, ast.Div)
            and isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.Gt)
            and isinstance(t.left, ast.Call) and isinstance(t.left.func, ast.Name)
            and t.left.func.id == "abs" and len(t.left.args) == 1
            and ast.dump(t.left.args[0]) == ast.dump(node.body.right)
            and isinstance(node.orelse, ast.Constant))


def to_tree(expr: ast.expr, pset: gp.PrimitiveSet) -> gp.PrimitiveTree:
    """A DEAP tree for a Python expression; GPError names an unsupported construct."""
    const_cls = pset.mapping["const"]
    binops = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "pdiv"}

    def walk(node: ast.expr) -> list:
        if isinstance(node, ast.BinOp) and type(node.op) in binops:
            return [pset.mapping[binops[type(node.op)]], *walk(node.left), *walk(node.right)]
        if isinstance(node, ast.IfExp) and _is_pdiv(node):
            return [pset.mapping["pdiv"], *walk(node.body.left), *walk(node.body.right)]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            if isinstance(node.operand, ast.Constant):
                return walk(ast.Constant(-node.operand.value))
            return [pset.mapping["neg"], *walk(node.operand)]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return walk(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            fname, fargs = node.func.id, node.args
            if fname == "float" and len(fargs) == 1:
                return walk(fargs[0])
            if fname in ("max", "min") and len(fargs) >= 2:
                out = walk(fargs[-1])
                for a in reversed(fargs[:-1]):  # max(a, b, c) -> max(a, max(b, c))
                    out = [pset.mapping[fname], *walk(a), *out]
                return out
        if isinstance(node, ast.Name) and node.id in pset.mapping and node.id in pset.arguments:
            return [pset.mapping[node.id]]
        if (isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
                and not isinstance(node.value, bool)):
            c = const_cls()
            c.value = float(node.value)
            return [c]
        raise GPError(f"unsupported construct in the GP expression: {ast.unparse(node)!r} "
                      "(allowed: arguments, numbers, + - * /, unary -, max, min, float)")

    return gp.PrimitiveTree(walk(expr))


def to_ast(tree: gp.PrimitiveTree) -> ast.expr:
    """The Python expression of a DEAP tree (protected division written inline)."""
    ops = {"add": ast.Add, "sub": ast.Sub, "mul": ast.Mult}
    pos = 0

    def build() -> ast.expr:
        nonlocal pos
        node = tree[pos]
        pos += 1
        if isinstance(node, gp.Primitive):
            kids = [build() for _ in range(node.arity)]
            if node.name in ops:
                return ast.BinOp(kids[0], ops[node.name](), kids[1])
            if node.name == "neg":
                return ast.UnaryOp(ast.USub(), kids[0])
            if node.name == "pdiv" and _nonzero_constant(kids[1]):
                return ast.BinOp(kids[0], ast.Div(), kids[1])  # no guard needed: easier to read
            if node.name == "pdiv":
                denominator = copy.deepcopy(kids[1])  # unparse keys precedence by node
                guard = ast.Compare(ast.Call(ast.Name("abs"), [denominator], []), [ast.Gt()],
                                    [ast.Constant(EPS)])
                return ast.IfExp(guard, ast.BinOp(kids[0], ast.Div(), kids[1]),
                                 ast.Constant(1.0))
            return ast.Call(ast.Name(node.name), kids, [])
        if isinstance(node.value, float):
            value = node.value
            if not math.isfinite(value):
                raise GPError(f"non-finite constant {value!r} in the tree")
            return (ast.UnaryOp(ast.USub(), ast.Constant(-value)) if value < 0
                    else ast.Constant(value))
        return ast.Name(str(node.value))  # renamed arguments keep name "ARGi", value "age"

    return build()


def _nonzero_constant(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and abs(node.value) > EPS


def render(tree: gp.PrimitiveTree) -> str:
    """Python source of a tree's expression, with only the parentheses it needs."""
    return ast.unparse(ast.fix_missing_locations(ast.Expression(to_ast(tree))))


def splice(code: str, target: GPTarget, expr_src: str) -> str:
    """`code` with the target's return statement replaced by `return <expr_src>`."""
    lines = code.splitlines(keepends=True)
    new = f"{target.indent}return {expr_src}\n"
    return "".join(lines[: target.line_start - 1] + [new] + lines[target.line_end:])


def evaluate(expr_src: str, args: tuple[str, ...], values: list[float]) -> float:
    """Evaluate an expression on argument values with only max/min/abs/float available."""
    env = {"__builtins__": {}, "max": max, "min": min, "abs": abs, "float": float}
    return eval(pyast.compile_(expr_src, "<gp>", "eval"), env, dict(zip(args, values)))
