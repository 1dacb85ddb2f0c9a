"""The harness's clock: `time`'s functions captured when this module is first imported.

The worker imports it before anything else it runs (fitness/worker.py), so the functions
here are the interpreter's own, captured before any candidate code was imported; the bench
stage times runs with `perf_counter` from here, and a candidate that replaces a `time`
function is caught by `clocks_replaced`. It imports nothing of sds, so importing it can
never pull candidate code in first.
"""

from __future__ import annotations

import time

CLOCKS = {"perf_counter": time.perf_counter, "perf_counter_ns": time.perf_counter_ns,
          "monotonic": time.monotonic, "monotonic_ns": time.monotonic_ns, "time": time.time}
perf_counter = time.perf_counter


def clocks_replaced() -> list[str]:
    """Names of `time` functions that no longer are the ones captured at import."""
    return [name for name, fn in CLOCKS.items() if getattr(time, name, None) is not fn]
