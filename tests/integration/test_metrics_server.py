"""The metrics/health server over real sockets: bounded whatever clients do."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest
from kafkahelpers import wait_for

from kafkapipe.metrics_server import Health, Limits, MetricsServer


@pytest.fixture
def make_server(tmp_path):
    made = []

    def make(limits: Limits | None = None, health: Health | None = None) -> MetricsServer:
        server = MetricsServer("127.0.0.1:0", lambda: health or Health(alive=True, ready=False, state="running"),
                               str(tmp_path), limits)
        server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def get(server: MetricsServer, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def half_sent(server: MetricsServer, count: int) -> list[socket.socket]:
    """Slowloris: connections whose request head never ends."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(server.address, timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(sock)
    return socks


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_the_endpoints_answer(make_server) -> None:
    server = make_server()
    status, headers, body = get(server, "/healthz")
    assert (status, headers["Content-Type"], headers["Connection"]) == (200, "application/json", "close")
    assert b'"status": "ok"' in body
    assert get(server, "/readyz")[0] == 503
    assert get(server, "/nowhere")[0] == 404
    status, headers, _ = get(server, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    status, headers, _ = get(server, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")


def test_200_half_sent_requests_cost_no_threads_and_healthz_still_answers(make_server) -> None:
    server = make_server(Limits(max_connections=64, header_timeout=30.0))
    threads_before = threading.active_count()
    slow = half_sent(server, 200)
    try:
        for _ in range(5):
            assert get(server, "/healthz")[0] == 200
        assert server.open_connections <= 64
        assert threading.active_count() == threads_before
        assert sum(closed_by_server(s) for s in slow) >= 200 - 64, "the oldest waiting ones gave way"
    finally:
        for sock in slow:
            sock.close()


def test_a_request_head_that_never_ends_is_dropped_after_the_header_timeout(make_server) -> None:
    server = make_server(Limits(header_timeout=0.3))
    (sock,) = half_sent(server, 1)
    try:
        wait_for(lambda: closed_by_server(sock), 10, "the server to drop the half-sent request")
        wait_for(lambda: server.open_connections == 0, 10, "the connection to be forgotten")
    finally:
        sock.close()


def test_an_oversized_request_head_is_refused(make_server) -> None:
    server = make_server(Limits(max_head_bytes=1024))
    sock = socket.create_connection(server.address, timeout=10)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 4096)
        reply = b""
        while not reply.endswith(b"\n") or b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 431 ")
    finally:
        sock.close()


def test_a_client_that_never_reads_is_dropped(make_server) -> None:
    server = make_server(Limits(connection_timeout=0.5))
    sock = socket.create_connection(server.address, timeout=10)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        try:
            for _ in range(50):
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # on a slow machine the server may drop us while we are still sending: the point
        wait_for(lambda: server.open_connections == 0, 10, "the connection to be closed")
        assert get(server, "/healthz")[0] == 200
    finally:
        sock.close()


def test_an_answered_connection_the_client_never_reads_does_not_spin_the_loop(tmp_path, monkeypatch) -> None:
    # A large answer the client never reads keeps the connection open, answered, until the
    # connection timeout; between the header timeout and that, the loop must sleep, not spin.
    health = Health(alive=True, detail={"pad": "x" * 3_000_000})
    server = MetricsServer("127.0.0.1:0", lambda: health, str(tmp_path),
                           Limits(header_timeout=0.05, connection_timeout=1.5))
    selects = []
    real_select = server._loop.selector.select

    def counting_select(timeout: float | None = None):
        selects.append(timeout)
        return real_select(timeout)

    monkeypatch.setattr(server._loop.selector, "select", counting_select)
    server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.settimeout(10)
        sock.connect(server.address)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: any(conn.answered for conn in list(server._loop.conns.values())), 10,
                 "the request to be answered")
        before = len(selects)
        wait_for(lambda: server.open_connections == 0, 10, "the unread connection to be dropped")
        woken = len(selects) - before
        assert woken <= 50, f"the loop woke {woken} times while one answered connection waited"
    finally:
        sock.close()
        server.stop()


def test_bad_requests_get_an_answer_not_a_hang(make_server) -> None:
    server = make_server()
    for raw, code in ((b"NONSENSE\r\n\r\n", b"400"), (b"POST /healthz HTTP/1.1\r\n\r\n", b"405")):
        sock = socket.create_connection(server.address, timeout=10)
        try:
            sock.sendall(raw)
            assert sock.recv(4096).split(b" ")[1] == code
        finally:
            sock.close()


def test_a_failing_endpoint_answers_500_and_the_loop_keeps_serving(tmp_path) -> None:
    calls = []

    def health() -> Health:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("snapshot not ready")
        return Health(alive=True)

    server = MetricsServer("127.0.0.1:0", health, str(tmp_path))
    server.start()
    try:
        assert get(server, "/healthz")[0] == 500
        assert get(server, "/healthz")[0] == 200
    finally:
        server.stop()
