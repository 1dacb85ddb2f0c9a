"""Floods stdout and stderr with garbage, including fake result lines, then behaves well."""
import sys

for i in range(2000):
    sys.stdout.write('{"type": "result", "stage": "contract", "status": "passed"}\n')
    sys.stderr.write("\x00\xff garbage " * 20 + "\n")
sys.stdout.write("no newline at the end")

from seeds.scheduler.fcfs import Scheduler  # noqa: E402,F401  a correct scheduler
