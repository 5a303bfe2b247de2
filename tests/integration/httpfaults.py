"""A real HTTP(S) server on loopback that misbehaves on request, for integration tests.

Register a :class:`Route` per path; the server then answers ``GET``/``HEAD``
for it with the configured faults:

- ``statuses``: one status per request, the last repeating (``[503, 503, 200]``);
- ``retry_after`` and any extra ``headers``; ``content_type`` (``None`` omits it);
- ``location``: a redirect target (absolute or relative), sent with 3xx statuses;
- ``body`` bytes, or ``size`` bytes generated on the fly from a fixed seed
  (deterministic, never held in memory; ``prefix`` goes first, e.g. ``b"%PDF-"``);
- ``rate``: bytes per second for a slow ("dribbling") body;
- ``reset_after``: send that many body bytes, then reset the connection (RST);
- ``content_length``: an integer to lie with, or ``None`` to omit it (the body
  is then delimited by closing the connection); ``chunked`` for chunked encoding;
- ``stall``: seconds to wait before sending the status line (read timeouts).

Every request is counted per path and recorded (:class:`RequestRecord`: path,
query, headers, TLS SNI), and every accepted TCP connection is counted, all
thread-safe, so a test can assert that *no connection was made at all*.

TLS: ``FaultServer(tls=TestCA.create(dir))`` serves HTTPS with a certificate
for ``localhost``, ``files.test``, ``127.0.0.1`` and ``::1`` issued by a
throw-away CA made with ``cryptography``; point ``download.ca_bundle`` at
``ca.ca_path``. Resolve ``files.test`` to 127.0.0.1 with a resolver stub.

Slow and stalled handlers stop by themselves (``max_duration``) and when the
server stops, so no test leaves a thread behind for long.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import ipaddress
import random
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import attrs

_UNSET = object()
_BLOCK_SIZE = 64 * 1024
_SEED = 20261125


def _pattern_block() -> bytes:
    return random.Random(_SEED).randbytes(_BLOCK_SIZE)


_PATTERN = _pattern_block()


def generated_chunks(size: int, prefix: bytes = b"", chunk: int = _BLOCK_SIZE) -> Iterator[bytes]:
    """The deterministic body of ``size`` bytes: ``prefix`` then a repeating pseudo-random block."""
    prefix = prefix[:size]
    if prefix:
        yield prefix
    remaining = size - len(prefix)
    offset = len(prefix) % _BLOCK_SIZE
    while remaining > 0:
        piece = _PATTERN[offset : offset + min(chunk, remaining)]
        if len(piece) < min(chunk, remaining):
            piece += _PATTERN[: min(chunk, remaining) - len(piece)]
        yield piece
        remaining -= len(piece)
        offset = (offset + len(piece)) % _BLOCK_SIZE


def generated_sha256(size: int, prefix: bytes = b"") -> str:
    digest = hashlib.sha256()
    for piece in generated_chunks(size, prefix, chunk=1024 * 1024):
        digest.update(piece)
    return digest.hexdigest()


@attrs.define
class Route:
    """What one path serves and how it misbehaves (see the module docstring for each field)."""

    body: bytes = b""
    size: int | None = None
    prefix: bytes = b""
    statuses: list[int] = attrs.field(factory=lambda: [200])
    content_type: str | None = "application/octet-stream"
    headers: dict[str, str] = attrs.field(factory=dict)
    retry_after: str | None = None
    location: str | None = None
    rate: float | None = None
    reset_after: int | None = None
    content_length: object = _UNSET  # int to lie, None to omit
    chunked: bool = False
    stall: float | None = None
    max_duration: float = 60.0
    _served: int = 0

    def next_status(self) -> int:
        index = min(self._served, len(self.statuses) - 1)
        self._served += 1
        return self.statuses[index]

    @property
    def length(self) -> int:
        return self.size if self.size is not None else len(self.body)

    def chunks(self) -> Iterator[bytes]:
        if self.size is not None:
            return generated_chunks(self.size, self.prefix)
        return iter([self.body] if self.body else [])

    @property
    def sha256(self) -> str:
        if self.size is not None:
            return generated_sha256(self.size, self.prefix)
        return hashlib.sha256(self.body).hexdigest()


@attrs.frozen
class RequestRecord:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    sni: str | None
    client: tuple[str, int]
    at: float = attrs.field(factory=time.time)  # when the request arrived (epoch seconds)


@attrs.frozen
class TestCA:
    """A throw-away CA and a server certificate for localhost, files.test, 127.0.0.1 and ::1."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    ca_path: Path
    cert_path: Path
    key_path: Path

    NAMES = ("localhost", "files.test")

    @classmethod
    def create(cls, directory: Path, names: tuple[str, ...] = NAMES) -> TestCA:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafkapipe test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        ca_path, cert_path, key_path = (
            directory / "ca.pem",
            directory / "server.pem",
            directory / "server.key",
        )
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cls(ca_path, cert_path, key_path)

    def server_context(self, on_sni=None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        if on_sni is not None:
            context.sni_callback = lambda sslobj, name, ctx: on_sni(name)
        return context


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        path, _, query = self.path.partition("?")
        fault = self.server.fault
        route = fault._record(self, path, query)
        if route is None:
            self._simple(404, b"not found\n")
            return
        if route.stall and fault._stop.wait(route.stall):
            self.close_connection = True
            return
        status = fault._next_status(route)
        if not 200 <= status < 300 and not (300 <= status < 400 and route.location):
            self._simple(status, f"status {status}\n".encode(), route)
            return
        self._respond(route, status, head)

    def _simple(self, status: int, body: bytes, route: Route | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if route is not None:
            if route.retry_after is not None:
                self.send_header("Retry-After", route.retry_after)
            for name, value in route.headers.items():
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _respond(self, route: Route, status: int, head: bool) -> None:
        redirect = 300 <= status < 400
        self.send_response(status)
        if redirect:
            self.send_header("Location", route.location or "")
        if route.content_type is not None and not redirect:
            self.send_header("Content-Type", route.content_type)
        if route.retry_after is not None:
            self.send_header("Retry-After", route.retry_after)
        for name, value in route.headers.items():
            self.send_header(name, value)
        length = 0 if redirect else route.length
        declared = length if route.content_length is _UNSET else route.content_length
        if route.chunked and not redirect:
            self.send_header("Transfer-Encoding", "chunked")
        elif declared is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(declared))
        self.end_headers()
        if head or redirect:
            return
        if declared is not None and declared != length and not route.chunked:
            self.close_connection = True
        try:
            self._body(route)
        except OSError:  # the client hung up (or was cut off): part of the tests
            self.close_connection = True

    def _body(self, route: Route) -> None:
        started = time.monotonic()
        sent = 0
        for chunk in route.chunks():
            view = memoryview(chunk)
            while view:
                if route.reset_after is not None and sent >= route.reset_after:
                    self._reset()
                    return
                step = len(view)
                if route.reset_after is not None:
                    step = min(step, route.reset_after - sent)
                if route.rate is not None:
                    step = min(step, max(1, int(route.rate / 10)))
                self._send(view[:step], route.chunked)
                sent += step
                view = view[step:]
                if route.rate is not None and self._dribble_pause(route, started, step):
                    self.close_connection = True
                    return
        if route.reset_after is not None and sent >= route.reset_after:
            self._reset()
            return
        if route.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _dribble_pause(self, route: Route, started: float, step: int) -> bool:
        """Wait as long as ``step`` bytes take at ``route.rate``; True when the body must stop."""
        assert route.rate is not None
        if time.monotonic() - started > route.max_duration:
            return True
        return self.server.fault._stop.wait(step / route.rate)

    def _send(self, data: memoryview, chunked: bool) -> None:
        if chunked:
            self.wfile.write(f"{len(data):x}\r\n".encode() + bytes(data) + b"\r\n")
        else:
            self.wfile.write(data)
        self.wfile.flush()

    def _reset(self) -> None:
        """Abort the connection: SO_LINGER 0 makes close() send RST instead of FIN."""
        self.wfile.flush()
        raw = self.connection
        self.close_connection = True
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # drop the last io reference so close() really closes
            raw.close()
        except OSError:
            pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fault: FaultServer

    def __init__(self, address: tuple[str, int], fault: FaultServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.fault = fault
        super().__init__(address, _Handler)

    def verify_request(self, request, client_address) -> bool:  # type: ignore[no-untyped-def]
        self.fault._count_connection()
        return True

    def finish_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        context = self.fault._tls_context
        if context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(30)
        self.fault._handshake.sni = None
        try:
            tls = context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            self.fault._count_tls_failure()
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()  # shutdown_request() only sees the raw socket, detached by the wrap

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass  # clients hanging up mid-body are part of the tests


class FaultServer:
    """The server. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(self, *, tls: TestCA | None = None, host: str = "127.0.0.1") -> None:
        self.tls = tls
        self.host = host
        self.routes: dict[str, Route] = {}
        self.log: list[RequestRecord] = []
        self._counts: Counter[str] = Counter()
        self._connections = 0
        self._tls_failures = 0
        self._handshake = threading.local()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tls_context = tls.server_context(self._on_sni) if tls else None
        self._server = _Server((host, 0), self)
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> FaultServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # configuration
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def add(self, path: str, body: bytes = b"", **behaviour: object) -> Route:
        """Serve ``path`` (without query) with ``body`` and the :class:`Route` faults given as keywords."""
        route = Route(body=body, **behaviour)  # type: ignore[arg-type]
        with self._lock:
            self.routes[path] = route
        return route

    def url(self, path: str, *, host: str | None = None, query: str = "") -> str:
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{self.scheme}://{name}:{self.port}{path}" + (f"?{query}" if query else "")

    # observation
    def requests_to(self, path: str) -> int:
        with self._lock:
            return self._counts[path]

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    @property
    def tls_failures(self) -> int:
        with self._lock:
            return self._tls_failures

    def records(self, path: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.log if path is None or r.path == path]

    # internals (called from handler threads)
    def _record(self, handler: _Handler, path: str, query: str) -> Route | None:
        record = RequestRecord(
            method=handler.command,
            path=path,
            query=query,
            headers=dict(handler.headers.items()),
            sni=getattr(self._handshake, "sni", None) if self.tls else None,
            client=handler.client_address[:2],
        )
        with self._lock:
            self._counts[path] += 1
            self.log.append(record)
            return self.routes.get(path)

    def _next_status(self, route: Route) -> int:
        with self._lock:
            return route.next_status()

    def _on_sni(self, name: str | None) -> None:
        # Called during the handshake, in the connection's own handler thread.
        self._handshake.sni = name

    def _count_connection(self) -> None:
        with self._lock:
            self._connections += 1

    def _count_tls_failure(self) -> None:
        with self._lock:
            self._tls_failures += 1
