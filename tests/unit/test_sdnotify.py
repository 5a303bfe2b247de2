"""sd_notify over a real AF_UNIX datagram socket, as systemd would receive it."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from kafkapipe.sdnotify import Notifier


def _receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


@pytest.fixture
def path_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


@pytest.fixture
def abstract_socket():
    name = f"kafkapipe-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    yield "@" + name, sock
    sock.close()


def test_ready_status_stopping_reach_a_path_socket(path_socket):
    address, sock = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled

    assert notifier.ready(status="running; ingest 1/1 ready")
    assert _receive(sock) == {"READY": "1", "STATUS": "running; ingest 1/1 ready"}
    assert notifier.status("reloading")
    assert _receive(sock) == {"STATUS": "reloading"}
    assert notifier.watchdog()
    assert _receive(sock) == {"WATCHDOG": "1"}
    assert notifier.stopping()
    assert _receive(sock) == {"STOPPING": "1"}
    notifier.close()


def test_abstract_namespace_address(abstract_socket):
    address, sock = abstract_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.ready()
    assert _receive(sock) == {"READY": "1"}


def test_reloading_carries_monotonic_usec(abstract_socket):
    address, sock = abstract_socket
    Notifier({"NOTIFY_SOCKET": address}).reloading(status="reloading")
    message = _receive(sock)
    assert message["RELOADING"] == "1"
    assert message["STATUS"] == "reloading"
    assert int(message["MONOTONIC_USEC"]) > 0


def test_status_is_kept_on_one_line(abstract_socket):
    address, sock = abstract_socket
    Notifier({"NOTIFY_SOCKET": address}).status("two\nlines\tand  spaces")
    assert _receive(sock) == {"STATUS": "two lines and spaces"}


def test_without_notify_socket_everything_is_a_no_op():
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog_interval is None


def test_failures_are_ignored(tmp_path):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert notifier.enabled
    assert notifier.ready() is False
    assert notifier.stopping() is False


def test_watchdog_interval_is_half_of_watchdog_usec():
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    own = {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(own).watchdog_interval == 5.0


def test_watchdog_meant_for_another_process_is_not_ours():
    assert Notifier({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval is None
