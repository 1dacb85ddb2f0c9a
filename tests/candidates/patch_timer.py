"""A correct scheduler that slows the harness's clock: must be `rejected`."""
import time

from seeds.scheduler.fcfs import Scheduler  # noqa: F401

_real = time.perf_counter
time.perf_counter = lambda: _real() * 0.5
