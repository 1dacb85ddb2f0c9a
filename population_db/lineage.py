"""Lineage queries: ancestors and descendants in one recursive CTE each.

Runtimes walk the `runtime_parents` edge table (roles parent, second_parent, inspiration);
programs walk their `parent_id` column. Each query is a single SQL statement whatever the
depth, on SQLite and PostgreSQL alike, and returns every reached node with its depth and
the role of the edge it was reached by (see LineageEntry).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Integer, String, cast, literal, select

from population_db.base import StoreBase
from population_db.engine import NotFound
from population_db.models import ROLE_LEN, Program, Runtime, RuntimeParent
from population_db.records import LineageEntry, ProgramRecord, RuntimeRecord

GENETIC_ROLES = ("parent", "second_parent")  # inspirations are context, not descent


def _role(value: Any) -> Any:
    """A role expression with the one type both halves of the recursive CTE must share."""
    return cast(value, String(ROLE_LEN))


class LineageMixin(StoreBase):
    """Ancestors, descendants and the best path."""

    def _walk_runtimes(self, runtime_id: int, roles: Iterable[str], up: bool,
                       max_depth: int | None) -> list[LineageEntry]:
        e, rt = RuntimeParent.__table__, Runtime.__table__
        anchor = select(rt.c.id.label("node_id"), cast(None, Integer).label("via_id"),
                        _role(literal("self")).label("role"),
                        literal(0, Integer).label("depth")).where(rt.c.id == int(runtime_id))
        walk = anchor.cte("walk", recursive=True)
        prev = walk.alias("prev")
        node, via = (e.c.parent_id, e.c.child_id) if up else (e.c.child_id, e.c.parent_id)
        step = (select(node, via, _role(e.c.role), prev.c.depth + 1)
                .join(prev, via == prev.c.node_id).where(e.c.role.in_(list(roles))))
        if max_depth is not None:
            step = step.where(prev.c.depth < max_depth)
        walk = walk.union(step)
        q = (select(walk.c.depth, walk.c.role, walk.c.via_id, rt)
             .join(rt, rt.c.id == walk.c.node_id)
             .order_by(walk.c.depth, walk.c.via_id, walk.c.role, rt.c.id))
        with self._read() as s:
            rows = s.execute(q).mappings().all()
        if not rows:
            raise NotFound(f"no runtime {runtime_id!r}")
        # parents as seen by this traversal: up, an edge (node <- via) makes node a parent of via
        parents: dict[int, list[tuple[int, str]]] = {}
        for r in rows:
            if r["via_id"] is not None:
                child, parent = (r["via_id"], r["id"]) if up else (r["id"], r["via_id"])
                parents.setdefault(child, []).append((parent, r["role"]))
        return [LineageEntry(r["depth"], r["role"], r["via_id"],
                             RuntimeRecord.from_row(r, tuple(sorted(set(parents.get(r["id"], ())),
                                                                    key=lambda p: (p[1], p[0])))))
                for r in rows]

    def ancestors(self, runtime_id: int, roles: Iterable[str] = GENETIC_ROLES,
                  max_depth: int | None = None) -> list[LineageEntry]:
        """The runtime (depth 0) and its ancestors back to the seeds, in one query.

        Example: `[(e.depth, e.node.id, e.role) for e in store.ancestors(rt.id)]`.
        Pass roles=ROLES to follow inspiration edges too.
        """
        return self._walk_runtimes(runtime_id, roles, up=True, max_depth=max_depth)

    def descendants(self, runtime_id: int, roles: Iterable[str] = GENETIC_ROLES,
                    max_depth: int | None = None) -> list[LineageEntry]:
        """The runtime (depth 0) and every runtime descended from it, in one query."""
        return self._walk_runtimes(runtime_id, roles, up=False, max_depth=max_depth)

    def _walk_programs(self, program_id: int, up: bool,
                       max_depth: int | None) -> list[LineageEntry]:
        p = Program.__table__
        anchor = select(p.c.id.label("node_id"), cast(None, Integer).label("via_id"),
                        _role(literal("self")).label("role"),
                        literal(0, Integer).label("depth")).where(p.c.id == int(program_id))
        walk = anchor.cte("pwalk", recursive=True)
        prev = walk.alias("prev")
        if up:  # the parent of the program at prev
            step = (select(p.c.parent_id, prev.c.node_id, _role(literal("parent")),
                           prev.c.depth + 1)
                    .join(prev, p.c.id == prev.c.node_id).where(p.c.parent_id.is_not(None)))
        else:  # the children of the program at prev
            step = (select(p.c.id, prev.c.node_id, _role(literal("parent")), prev.c.depth + 1)
                    .join(prev, p.c.parent_id == prev.c.node_id))
        if max_depth is not None:
            step = step.where(prev.c.depth < max_depth)
        walk = walk.union(step)
        q = (select(walk.c.depth, walk.c.role, walk.c.via_id, p)
             .join(p, p.c.id == walk.c.node_id)
             .order_by(walk.c.depth, walk.c.via_id, p.c.id))
        with self._read() as s:
            rows = s.execute(q).mappings().all()
        if not rows:
            raise NotFound(f"no program {program_id!r}")
        return [LineageEntry(r["depth"], r["role"], r["via_id"], ProgramRecord.from_row(r))
                for r in rows]

    def program_ancestors(self, program_id: int,
                          max_depth: int | None = None) -> list[LineageEntry]:
        """The program (depth 0) and its parent chain back to a seed, in one query."""
        return self._walk_programs(program_id, up=True, max_depth=max_depth)

    def program_descendants(self, program_id: int,
                            max_depth: int | None = None) -> list[LineageEntry]:
        """The program (depth 0) and every program derived from it, in one query."""
        return self._walk_programs(program_id, up=False, max_depth=max_depth)

    def best_path(self, run: int | str, metric: str = "tok_s",
                  higher_is_better: bool = True) -> list[tuple[RuntimeRecord, float | None]]:
        """The best runtime's first-parent chain, seed first, with each step's score."""
        best = self.best_runtime(run, metric, higher_is_better)  # type: ignore[attr-defined]
        if best is None:
            return []
        chain = self.ancestors(best.runtime.id, roles=("parent",))
        nodes = sorted({e.node.id: e for e in chain}.values(), key=lambda e: -e.depth)
        scores = self.scores(run, [e.node.id for e in nodes], metric)  # type: ignore[attr-defined]
        return [(e.node, scores.get(e.node.id)) for e in nodes]
