"""Sleeps far past any stage timeout at import: must end as `timeout`."""
import time

time.sleep(3600)
