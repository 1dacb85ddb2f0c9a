"""Tries to reach a loopback port the test listens on; the message must never arrive."""
import socket

try:
    with socket.create_connection(("127.0.0.1", __PORT__), timeout=2) as s:
        s.sendall(b"escaped")
    REACHED = True
except OSError as e:
    REACHED = False
    ERROR = repr(e)
raise RuntimeError(f"network reached={REACHED}")
