"""Serving the UI: Waitress (a threaded, production WSGI server) on loopback by default."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from waitress.server import BaseWSGIServer, create_server

from evolve.ui.app import create_app
from evolve.ui.db import open_readonly

log = logging.getLogger(__name__)
THREADS = 8


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback name or address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_server(url: str | None, host: str = "127.0.0.1",
                port: int = 8765) -> BaseWSGIServer:
    """A bound (not yet running) server for the database at `url`; `.run()` serves,
    `.close()` stops. Raises StoreError when the database cannot be opened, OSError when
    the address cannot be bound."""
    store = open_readonly(url)
    app = create_app(store, loopback_only=is_loopback(host))
    try:
        server = create_server(app, host=host, port=port, threads=THREADS, ident="sds-ui",
                               clear_untrusted_proxy_headers=True)
        assert isinstance(server, BaseWSGIServer)  # one host, one socket
        return server
    except BaseException:
        store.close()
        raise


def serve(url: str | None, host: str = "127.0.0.1", port: int = 8765,
          announce: Callable[[str], None] = print) -> None:
    """Serve until interrupted."""
    server = make_server(url, host, port)
    announce(f"sds ui: http://{host if ':' not in host else f'[{host}]'}:"
             f"{server.effective_port}/  (read-only; Ctrl-C stops)")
    try:
        server.run()
    finally:
        server.close()
