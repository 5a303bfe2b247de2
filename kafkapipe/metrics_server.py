"""The supervisor's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz``.

Runs in a daemon thread of the supervisor. ``/metrics`` builds a fresh
registry with a :class:`MultiProcessCollector` per scrape, so it sums the
files every worker (and the supervisor) wrote. Health answers come from a
snapshot the supervisor's main loop publishes each tick; this thread only
reads it.

Import this module only after ``PROMETHEUS_MULTIPROC_DIR`` is set.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)


@attrs.frozen
class Health:
    """What /healthz and /readyz answer. ``detail`` is the JSON body's ``stages``."""

    alive: bool = False
    ready: bool = False
    state: str = "starting"
    detail: dict[str, Any] = attrs.field(factory=dict)


def parse_bind(bind: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``":9464"`` → (host, port)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], health: Callable[[], Health], multiproc_dir: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.health = health
        self.multiproc_dir = multiproc_dir
        # Open connections, so a forked worker can close its copies: a copy held by a worker
        # would keep a scraper's connection open after this process closed it.
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        self.connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path in ("/healthz", "/readyz"):
            self._health(path)
        else:
            self._send(404, "application/json", b'{"error":"not found"}\n')

    def do_HEAD(self) -> None:
        self.do_GET()

    def _metrics(self) -> None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.server.multiproc_dir)
        try:
            body = generate_latest(registry)
        except Exception:  # a torn file from a worker dying mid-write must not kill the endpoint
            log.exception("metrics scrape failed")
            self._send(500, "application/json", b'{"error":"scrape failed"}\n')
            return
        self._send(200, CONTENT_TYPE_LATEST, body)

    def _health(self, path: str) -> None:
        health = self.server.health()
        ok = health.alive if path == "/healthz" else health.ready
        body = {"status": "ok" if ok else "unavailable", "state": health.state, "stages": health.detail}
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        self._send(200 if ok else 503, "application/json", data)

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)


class MetricsServer:
    """Owns the listening socket and the thread serving it."""

    def __init__(self, bind: str, health: Callable[[], Health], multiproc_dir: str) -> None:
        self._server = _Server(parse_bind(bind), health, multiproc_dir)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return host, port

    def fileno(self) -> int:
        return self._server.fileno()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def close_in_child(self) -> None:
        """In a forked worker: drop the inherited sockets without touching the serving thread's state."""
        for conn in list(self._server.connections):
            conn.close()
        self._server.socket.close()
