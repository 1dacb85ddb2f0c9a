"""Spins forever at import: must end as `timeout`."""
while True:
    pass
