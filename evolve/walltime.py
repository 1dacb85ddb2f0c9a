"""Wall time a run has used across its sessions, killed ones included (`max_wall_seconds`
holds across a resume)."""

from __future__ import annotations

import logging
from typing import Any

from evolve.store_protocol import RunStore

log = logging.getLogger(__name__)


def prior_wall(store: RunStore, run_id: int, name: str) -> float:
    """Wall seconds of the run's earlier sessions, killed ones included.

    A session that ended normally wrote `session_end` with its wall time. One that was
    killed (SIGKILL, power loss) wrote nothing: it counts from its start event to the
    last thing it wrote, recorded now as a `session_lost` event, so a budget of
    `max_wall_seconds` holds across kills (less the time after that last trace).
    """
    total, opened = 0.0, None
    for e in store.events(run_id):
        if e.kind in ("start", "resume"):
            if opened is not None:  # two starts in a row: count the first one's trace
                total += _lost(store, run_id, name, opened, e.created_at, record=False)
            opened = e.created_at
        elif e.kind in ("session_end", "session_lost"):
            total += float((e.data or {}).get("wall_s", 0.0))
            opened = None
    if opened is not None:
        total += _lost(store, run_id, name, opened, None, record=True)
    return total


def _lost(store: RunStore, run_id: int, name: str, opened: Any, before: Any, record: bool) -> float:
    """Seconds from a session's start to its last write before `before` (recorded as a
    `session_lost` event when `record`)."""
    last = store.last_activity(run_id, opened, before)
    lost = max(0.0, (last - opened).total_seconds()) if last is not None else 0.0
    if record:
        log.warning("run %s: the previous session ended without a trace (killed?); "
                    "counting %.1f s of wall time up to its last write", name, lost)
        store.add_event(run_id, "session_lost", {
            "wall_s": lost, "started_at": opened.isoformat(),
            "last_activity": last.isoformat() if last is not None else None})
    return lost
