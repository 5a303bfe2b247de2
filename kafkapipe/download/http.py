"""An HTTP client that connects only where the validator said it may.

Why not a plain ``PoolManager``: it resolves the host name itself when it
connects, so a name validated a moment earlier could resolve elsewhere by
then (DNS rebinding). Here a connection pool is opened *to the validated IP
address* and keyed by ``(scheme, ip, port, host)``; the original name is only
used for the ``Host`` header, for TLS SNI and for certificate verification
(``server_hostname``; the shared ``SSLContext`` has ``check_hostname`` on).
Pools are shared by the download threads (urllib3 pools are thread-safe;
the table of pools is guarded by a lock and bounded, least recently used
pools are closed first).

The total deadline: read and connect timeouts bound each socket operation,
which a server sending one byte a second never trips. Every fetch therefore
arms a :class:`Deadline` on a shared :class:`Watchdog` thread; each socket
the fetch uses registers a duplicate descriptor with it, and when the
deadline passes the watchdog shuts the connection down, which wakes the
blocked read in the download thread whatever phase it is in (TLS handshake,
headers, body). The duplicate is ours, closed only under the deadline's lock,
so a descriptor number reused by another connection is never touched.

Content encodings: the request asks for ``Accept-Encoding: identity`` and a
body is never decoded. A successful response that is gzip/deflate/br-encoded
anyway is refused (``validation``) before a byte of it is read: decoding
would let a small compression bomb cost CPU and disk up to ``max_bytes``, and
storing the raw encoded bytes would only be refused later as an unknown type
with a message that hides the cause.

Create the client after ``fork()`` (as every Kafka client is): its watchdog
thread and pooled sockets belong to the process that made them.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import ssl
import threading
import time
from collections import OrderedDict
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from kafkapipe.config import DownloadConfig
from kafkapipe.errors import TransientError, ValidationError
from kafkapipe.security.urls import ParsedUrl


class Deadline:
    """One fetch's end time; shuts down the fetch's sockets when it passes."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.seconds = seconds
        self._lock = threading.Lock()
        self._handles: list[socket.socket] = []
        self._fired = False
        self._closed = False

    @property
    def expired(self) -> bool:
        return self._fired or time.monotonic() >= self.at

    @property
    def closed(self) -> bool:
        return self._closed

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        """Keep a duplicate of ``sock`` to shut the connection down at the deadline."""
        try:
            fd = os.dup(sock.fileno())
        except OSError:
            return
        try:
            handle = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
        except OSError:
            os.close(fd)
            return
        with self._lock:
            if self._closed:
                handle.close()
                return
            self._handles.append(handle)
            if self._fired:
                _shutdown(handle)

    def fire(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._fired = True
            for handle in self._handles:
                _shutdown(handle)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            handles, self._handles = self._handles, []
        for handle in handles:
            handle.close()


def _shutdown(handle: socket.socket) -> None:
    try:
        handle.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Watchdog:
    """One thread firing deadlines in time order; started on first use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, seconds: float) -> Deadline:
        deadline = Deadline(seconds)
        with self._cond:
            if self._stopped:
                raise TransientError("the download client is closed (shutting down)")
            entry = (deadline.at, next(self._seq), deadline)
            heapq.heappush(self._heap, entry)
            if len(self._heap) > 1024:
                self._purge()
            if self._thread is None or not self._thread.is_alive():  # first use, or in a forked child
                self._thread = threading.Thread(target=self._run, name="kafkapipe-deadlines", daemon=True)
                self._thread.start()
            # The thread sleeps until the earliest deadline; one due later (every fetch's, when all
            # share total_timeout) changes nothing for it, and waking it per fetch costs a thread switch.
            if self._heap[0] is entry:
                self._cond.notify()
        return deadline

    def _purge(self) -> None:
        # Deadlines of finished fetches would otherwise sit in the heap until they are due.
        live = [item for item in self._heap if not item[2].closed]
        if len(live) < len(self._heap):
            heapq.heapify(live)
            self._heap = live

    def _run(self) -> None:
        while True:
            due: list[Deadline] = []
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                    continue
            for deadline in due:
                deadline.fire()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


class _WatchedMixin:
    """Registers every socket of a fetch with the fetch's :class:`Deadline`."""

    def __init__(self, *args: Any, kp_current: threading.local, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kp_current = kp_current

    def _kp_watch(self, sock: socket.socket | None) -> None:
        deadline = getattr(self._kp_current, "deadline", None)
        if deadline is not None and sock is not None:
            deadline.watch(sock)

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        self._kp_watch(sock)  # before any TLS handshake
        return sock

    def getresponse(self):
        self._kp_watch(self.sock)  # reused connections too
        return super().getresponse()


class _Connection(_WatchedMixin, HTTPConnection):
    pass


class _TLSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


def build_ssl_context(config: DownloadConfig) -> ssl.SSLContext:
    """Verification on unless ``verify_tls`` is false; ``ca_bundle`` replaces the default roots."""
    if config.ca_bundle:
        if os.path.isdir(config.ca_bundle):
            context = ssl.create_default_context(capath=config.ca_bundle)
        else:
            context = ssl.create_default_context(cafile=config.ca_bundle)
    else:
        context = ssl.create_default_context(cafile=_default_cafile())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _default_cafile() -> str | None:
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


class HttpClient:
    """GET requests pinned to validated addresses; one instance serves all download threads."""

    def __init__(self, config: DownloadConfig, *, pool_maxsize: int = 16, max_pools: int = 256) -> None:
        self._config = config
        self._pool_maxsize = pool_maxsize
        self._max_pools = max_pools
        self._ssl_context = build_ssl_context(config)
        self._pools: OrderedDict[tuple[str, str, int, str], HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()
        self._current = threading.local()
        self._watchdog = Watchdog()
        self._headers = {
            "User-Agent": config.user_agent,
            "Accept": "*/*",
            "Accept-Encoding": "identity",
        }

    def deadline(self, seconds: float | None = None) -> Deadline:
        return self._watchdog.arm(self._config.total_timeout if seconds is None else seconds)

    def open(self, parsed: ParsedUrl, address: str, deadline: Deadline) -> urllib3.BaseHTTPResponse:
        """Send ``GET`` to ``address``; the response body is not read yet.

        Raises urllib3/OS exceptions as they are: the caller classifies them.
        """
        pool = self._pool(parsed.scheme, address, parsed.port, parsed.host)
        remaining = max(deadline.remaining(), 0.001)
        timeout = urllib3.Timeout(
            connect=min(self._config.connect_timeout, remaining),
            read=min(self._config.read_timeout, remaining),
        )
        headers = {**self._headers, "Host": parsed.host_header}
        self._current.deadline = deadline
        try:
            response = pool.urlopen(
                "GET",
                parsed.request_target,
                headers=headers,
                retries=False,
                redirect=False,
                timeout=timeout,
                preload_content=False,
                decode_content=False,
                release_conn=False,
                assert_same_host=False,
            )
        finally:
            self._current.deadline = None
        _refuse_encoded(response)
        return response

    def _pool(self, scheme: str, address: str, port: int, host: str) -> HTTPConnectionPool:
        key = (scheme, address, port, host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            pool = self._new_pool(scheme, address, port, host)
            self._pools[key] = pool
            evicted = []
            while len(self._pools) > self._max_pools:
                evicted.append(self._pools.popitem(last=False)[1])
        for old in evicted:
            old.close()
        return pool

    def _new_pool(self, scheme: str, address: str, port: int, host: str) -> HTTPConnectionPool:
        common: dict[str, Any] = {
            "maxsize": self._pool_maxsize,
            "block": False,
            "retries": False,
            "kp_current": self._current,
        }
        if scheme == "https":
            return _TLSPool(
                address,
                port,
                ssl_context=self._ssl_context,
                server_hostname=host,
                cert_reqs="CERT_REQUIRED" if self._config.verify_tls else "CERT_NONE",
                assert_hostname=None if self._config.verify_tls else False,
                **common,
            )
        if scheme == "http":
            return _Pool(address, port, **common)
        raise ValueError(f"unsupported scheme {scheme!r}")

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()
        self._watchdog.stop()


def _refuse_encoded(response: urllib3.BaseHTTPResponse) -> None:
    """ValidationError for a 2xx body sent with a content encoding although identity was asked."""
    encodings = [e.strip().lower() for e in response.headers.get("Content-Encoding", "").split(",")]
    if not 200 <= response.status < 300 or all(e in ("", "identity") for e in encodings):
        return
    response.close()
    response.release_conn()
    shown = ", ".join(e for e in encodings if e)[:64]
    raise ValidationError(
        f"Content-Encoding {shown!a} refused: the request asked for identity", http_status=response.status
    )
