"""Asks for 50 GB at import: must end as `crashed` (out of memory), never hang the machine."""
blob = bytearray(50 * 10**9)
blob[::4096] = b"x" * len(blob[::4096])
