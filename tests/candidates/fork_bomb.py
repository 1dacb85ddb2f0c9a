"""A classic fork bomb at import: must be stopped by the process limit and killed."""
import os

while True:
    try:
        os.fork()
    except OSError:
        pass
