"""The supervisor's HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz``.

One daemon thread of the supervisor runs a selector loop: it accepts, reads request heads
without blocking, answers, and closes (``Connection: close``). Its cost is fixed whatever
clients do: at most :data:`MAX_CONNECTIONS` open (the longest-waiting one is dropped for a
newcomer), a request head must arrive within :data:`HEADER_TIMEOUT` seconds and fit in
:data:`MAX_HEAD_BYTES`, and a whole exchange ends within :data:`CONNECTION_TIMEOUT`. So a
slowloris client holding hundreds of half-sent requests costs a few sockets, not threads,
and ``/healthz`` keeps answering.

``/metrics`` builds a fresh registry with a :class:`MultiProcessCollector` per scrape, so it
sums the files every worker (and the supervisor) wrote; prometheus_client's ``choose_encoder``
picks the text or OpenMetrics format from ``Accept``. Health answers come from a snapshot the
supervisor's main loop publishes each tick; this thread only reads it.

Import this module only after ``PROMETHEUS_MULTIPROC_DIR`` is set.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
HEADER_TIMEOUT = 5.0
CONNECTION_TIMEOUT = 15.0
MAX_HEAD_BYTES = 8 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@attrs.frozen
class Health:
    """What /healthz and /readyz answer. ``detail`` is the JSON body's ``stages``."""

    alive: bool = False
    ready: bool = False
    state: str = "starting"
    detail: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Limits:
    max_connections: int = MAX_CONNECTIONS
    header_timeout: float = HEADER_TIMEOUT
    connection_timeout: float = CONNECTION_TIMEOUT
    max_head_bytes: int = MAX_HEAD_BYTES


def parse_bind(bind: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``":9464"`` → (host, port)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


@attrs.define(eq=False)
class _Conn:
    sock: socket.socket
    opened: float
    head: bytearray = attrs.field(factory=bytearray)
    out: bytes = b""  # the response still to send, once the request head is complete
    answered: bool = False


class _Loop:
    """The selector loop: every socket is non-blocking and owned by this one thread."""

    def __init__(self, listener: socket.socket, respond: Callable[[str, str, str], bytes], limits: Limits) -> None:
        self.listener = listener
        self.respond = respond
        self.limits = limits
        self.conns: dict[socket.socket, _Conn] = {}  # insertion order: the oldest first
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (listener, self._wake_r):
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            for key, mask in self.selector.select(timeout=self._next_timeout()):
                sock = key.fileobj
                if sock is self.listener:
                    self._accept()
                elif sock is self._wake_r:
                    self._wake_r.recv(64)
                elif sock in self.conns:
                    self._serve(self.conns[sock], mask)
            self._expire(time.monotonic())
        for conn in list(self.conns.values()):
            self._close(conn)

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def close(self) -> None:
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _next_timeout(self) -> float:
        """Until the earliest connection expires, each by its own limit (at most 1 s)."""
        if not self.conns:
            return 1.0
        earliest = min(conn.opened + self._limit(conn) for conn in self.conns.values())
        return max(0.0, min(1.0, earliest - time.monotonic()))

    def _limit(self, conn: _Conn) -> float:
        return self.limits.connection_timeout if conn.answered else self.limits.header_timeout

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors and the like: the next tick tries again
                log.warning("metrics server accept failed: %s", exc)
                return
            if len(self.conns) >= self.limits.max_connections:
                self._close(next(iter(self.conns.values())))  # the one waiting longest gives way
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic())
            self.conns[sock] = conn
            self.selector.register(sock, selectors.EVENT_READ)

    def _serve(self, conn: _Conn, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ and not conn.answered:
                self._read(conn)
            if conn.answered and conn.out:
                sent = conn.sock.send(conn.out)
                conn.out = conn.out[sent:]
            if conn.answered and not conn.out:
                self._close(conn)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)

    def _read(self, conn: _Conn) -> None:
        data = conn.sock.recv(4096)
        if not data:
            self._close(conn)
            return
        conn.head += data
        end = conn.head.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.head) > self.limits.max_head_bytes:
                self._answer(conn, _response(431, "HEAD", "application/json", b'{"error":"head too large"}\n'))
            return
        try:
            response = self._dispatch(bytes(conn.head[:end]))
        except Exception:  # a bug answering one request must not stop the loop that answers all
            log.exception("metrics server failed to answer a request")
            response = _response(500, "GET", "application/json", b'{"error":"internal error"}\n')
        self._answer(conn, response)

    def _dispatch(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response(400, "GET", "application/json", b'{"error":"bad request"}\n')
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return _response(405, method, "application/json", b'{"error":"method not allowed"}\n')
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        return self.respond(method, target.split("?", 1)[0], accept)

    def _answer(self, conn: _Conn, response: bytes) -> None:
        conn.answered, conn.out = True, response
        self.selector.modify(conn.sock, selectors.EVENT_WRITE)

    def _expire(self, now: float) -> None:
        for conn in list(self.conns.values()):
            if now - conn.opened > self._limit(conn):
                self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if self.conns.pop(conn.sock, None) is None:
            return
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()


def _response(code: int, method: str, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {code} {_REASONS.get(code, 'Status')}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    return head if method == "HEAD" else head + body


class _Endpoints:
    """What each path answers; called on the loop's thread."""

    def __init__(self, health: Callable[[], Health], multiproc_dir: str) -> None:
        self.health = health
        self.multiproc_dir = multiproc_dir

    def __call__(self, method: str, path: str, accept: str) -> bytes:
        if path == "/metrics":
            return self._metrics(method, accept)
        if path in ("/healthz", "/readyz"):
            return self._health(method, path)
        return _response(404, method, "application/json", b'{"error":"not found"}\n')

    def _metrics(self, method: str, accept: str) -> bytes:
        # Late: prometheus_client's mode is chosen in kafkapipe.metrics before its first import.
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiproc_dir)
        encoder, content_type = choose_encoder(accept)
        try:
            body = encoder(registry)
        except Exception:  # a torn file from a worker dying mid-write must not kill the endpoint
            log.exception("metrics scrape failed")
            return _response(500, method, "application/json", b'{"error":"scrape failed"}\n')
        return _response(200, method, content_type, body)

    def _health(self, method: str, path: str) -> bytes:
        health = self.health()
        ok = health.alive if path == "/healthz" else health.ready
        body = {"status": "ok" if ok else "unavailable", "state": health.state, "stages": health.detail}
        data = (json.dumps(body, sort_keys=True) + "\n").encode()
        return _response(200 if ok else 503, method, "application/json", data)


class MetricsServer:
    """Owns the listening socket and the thread running the selector loop."""

    def __init__(
        self, bind: str, health: Callable[[], Health], multiproc_dir: str, limits: Limits | None = None
    ) -> None:
        host, port = parse_bind(bind)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._loop = _Loop(self._listener, _Endpoints(health, multiproc_dir), limits or Limits())
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def open_connections(self) -> int:
        return len(self._loop.conns)

    def fileno(self) -> int:
        return self._listener.fileno()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop.run, name="metrics-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.stopping = True
            self._loop.wake()
            self._thread.join(timeout=5)
            self._thread = None
        self._loop.close()
        self._listener.close()

    def close_in_child(self) -> None:
        """In a forked worker: drop the inherited sockets without touching the serving thread's state.

        A copy held by a worker would keep a scraper's connection open after this process closed it.
        """
        for sock in list(self._loop.conns):
            sock.close()
        self._loop.close()
        self._listener.close()
