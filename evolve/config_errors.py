"""One line per config error: file, key path, bad value, what was expected, a likely fix.

Turns pydantic's ValidationError for the run-config schema (evolve/config.py) into the
message a user can act on, e.g.
`q.yaml: budget.max_evaluations must be a positive integer, got -3`, or
`q.yaml: unknown key budget.max_evals; did you mean max_evaluations? (expected one of ...)`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from evolve.config_fields import Expect, did_you_mean

# pydantic error type -> what was expected, when the field declares no wording of its own
_TYPE_WORDS = {"int_type": "an integer", "int_from_float": "an integer",
               "float_type": "a number", "string_type": "a string", "bool_type": "true or false",
               "list_type": "a list", "dict_type": "a mapping", "dataclass_type": "a mapping",
               "dataclass_exact_type": "a mapping", "none_required": "null"}


def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """(the bare type, its Annotated metadata)."""
    meta: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        meta += list(tp.__metadata__)
        tp = typing.get_args(tp)[0]
    return tp, meta


def _walk(root: type, loc: Sequence[Any]) -> tuple[Any, list[Any], type | None]:
    """The annotation (type, metadata) at `loc`, and the dataclass that holds its last key."""
    tp: Any = root
    meta: list[Any] = []
    owner: type | None = None
    for key in loc:
        tp, _ = _unwrap(tp)
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            owner = tp
            if key not in hints:
                return None, [], owner
            tp = hints[key]
        else:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            origin = typing.get_origin(tp)
            if origin in (typing.Union, types.UnionType) and args:
                tp = args[0]
                tp, _ = _unwrap(tp)
                args = list(typing.get_args(tp))
                origin = typing.get_origin(tp)
            if origin is dict and len(args) == 2:
                tp, owner = args[1], None
            elif origin is list and args:
                tp, owner = args[0], None
            else:
                return None, [], None
        tp, meta = _unwrap(tp)
    return tp, meta, owner


def _raw_at(raw: Any, loc: Sequence[Any], default: Any) -> Any:
    """The value the user wrote at `loc` (before any conversion), else `default`."""
    node = raw
    for key in loc:
        if isinstance(node, dict) and key in node or isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            return default
    return node


def _path(loc: Sequence[Any]) -> str:
    out = ""
    for key in loc:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def explain(e: ValidationError, root: type, raw: dict[str, Any], src: str,
            not_keys: frozenset[str] = frozenset()) -> str:
    """The one-line message for the first error of `e` against dataclass `root`."""
    err = e.errors()[0]
    loc = [k for k in err["loc"] if not (isinstance(k, str) and k.startswith("function-"))]
    path = _path(loc)
    kind = err["type"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        _, _, owner = _walk(root, loc)
        fields = sorted(f.name for f in dataclasses.fields(owner) if f.name not in not_keys) \
            if owner is not None else []
        return (f"{src}: unknown key {path}{did_you_mean(loc[-1], fields)} "
                f"(expected one of {fields})")
    value = _raw_at(raw, loc, err.get("input"))
    if kind == "value_error":
        expect = str(err["ctx"]["error"])
    else:
        _, meta, _ = _walk(root, loc)
        marks = [m.text for m in meta if isinstance(m, Expect)]
        expect = marks[0] if marks else _TYPE_WORDS.get(kind, err["msg"].lower())
    label = path or "the top level"
    return f"{src}: {label} must be {expect}, got {value!r}"
