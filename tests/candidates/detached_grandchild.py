"""Leaves two detached grandchildren in new sessions (one with an empty environment)."""
import subprocess

subprocess.Popen(["sleep", "__TAG__"], start_new_session=True)
subprocess.Popen(["/bin/sleep", "__TAG__"], start_new_session=True, env={})


class Scheduler:
    def __init__(self, config, block_manager):
        raise RuntimeError("this scheduler never schedules")

    def add(self, seq):
        pass

    def schedule(self):
        return []

    def finish(self, seq):
        pass

    def has_unfinished(self):
        return False
