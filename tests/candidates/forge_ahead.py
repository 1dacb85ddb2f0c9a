"""A scheduler that forges passing results for later stages, then dies before they run.

It finds the worker's result sender through the garbage collector, sends `result`
messages for correctness and both benches (with absurd speed) ahead of time, passes the
contract honestly, and exits as soon as the full engine uses it, hoping the harness
takes the forged results for the stages that never ran.
"""
import gc
import os

from seeds.scheduler.fcfs import Scheduler as _Fcfs


def _forge():
    for obj in gc.get_objects():
        if callable(obj) and getattr(obj, "__name__", "") == "send" and \
                getattr(obj, "__closure__", None):
            for stage in ("correctness", "quick_bench", "bench"):
                obj({"type": "result", "stage": stage, "status": "passed", "error": None,
                     "metrics": {"tok_s": 1e6, "ratio": 9.9}, "artifacts": {},
                     "duration_s": 0.1})
            return True
    return False


FORGED = _forge()


class Scheduler(_Fcfs):
    def schedule(self):
        if self.cfg.max_num_seqs > 64:  # the real engine, not the contract's scenarios
            os._exit(0)
        return super().schedule()
