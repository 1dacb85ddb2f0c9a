"""Mutation prompts state the static check's rules exactly as the harness enforces them."""

from __future__ import annotations

from evolve.operators.base import Candidate, MutationContext
from evolve.prompts import build_prompt
from fitness import static
from fitness.static import check_static
from runtime_modules.slots import SLOTS, program_path


def test_prompts_list_every_name_the_static_check_rejects():
    code = program_path("cache_policy", "seed:cache_policy/lru").read_text()
    ctx = MutationContext(slot="cache_policy", contract=SLOTS["cache_policy"].contract.__doc__,
                          parent=Candidate(1, 1, "cache_policy", code, {}, {"tok_s": 1.0}))
    for kind in ("diff", "rewrite"):
        prompt = build_prompt(kind, ctx)
        for name in (static.FORBIDDEN_MODULES | static.FORBIDDEN_BUILTINS
                     | static.FORBIDDEN_ATTRS):
            assert f"`{name}`" in prompt, (kind, name)
    # and the names listed really are rejected by the stage
    for name in static.FORBIDDEN_MODULES:
        assert check_static("cache_policy", f"import {name}\n{code}").status == "rejected", name


def test_static_check_sees_through_aliases_and_submodules():
    code = program_path("cache_policy", "seed:cache_policy/lru").read_text()
    assert check_static("cache_policy", code).status == "passed"
    for bad in ("import os as o\nKEY = o.environ\n", "import os as o\no.system('x')\n",
                "from os import path\n", "import os.path\n",
                "from urllib.request import urlopen\n", "import importlib.util as u\n"):
        assert check_static("cache_policy", bad + code).status == "rejected", bad
