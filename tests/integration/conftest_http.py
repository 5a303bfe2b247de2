"""Fixtures around the fault-injecting HTTP server (import with ``from … import *``).

- ``fault_server``: plain HTTP on 127.0.0.1, one per test.
- ``test_ca`` (session): a throw-away CA + certificate for localhost / files.test.
- ``tls_fault_server``: HTTPS with that certificate, one per test.
- ``loopback_only``: any ``connect()`` to a non-loopback address fails the test
  *before* a packet leaves (and is recorded in the list the fixture returns).
- ``loopback_download_config(server, **overrides)``: a DownloadConfig that lets
  the download client reach ``server`` (http/https, its port, allow_cidrs
  127.0.0.0/8 and ::1).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from kafkapipe.config import DownloadConfig
from tests.integration.httpfaults import FaultServer, Route, TestCA, generated_sha256

__all__ = [
    "FaultServer",
    "Route",
    "TestCA",
    "fault_server",
    "generated_sha256",
    "loopback_download_config",
    "loopback_only",
    "test_ca",
    "tls_fault_server",
]


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture
def tls_fault_server(test_ca: TestCA) -> Iterator[FaultServer]:
    with FaultServer(tls=test_ca) as server:
        yield server


def _is_loopback(address: object) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and the like
    try:
        return ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a name: tests never resolve real names


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self: socket.socket, address: object) -> None:
        if not _is_loopback(address):
            attempts.append(address)
            pytest.fail(f"connection attempted to non-loopback address {address!r}")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if not _is_loopback(address):
            attempts.append(address)
            pytest.fail(f"connection attempted to non-loopback address {address!r}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


def loopback_download_config(server: FaultServer | None = None, **overrides: object) -> DownloadConfig:
    values: dict[str, object] = {
        "allowed_schemes": ["http", "https"],
        "allowed_ports": [server.port] if server is not None else [80, 443],
        "allow_cidrs": ["127.0.0.0/8", "::1/128"],
        "connect_timeout": 5.0,
        "read_timeout": 10.0,
        "total_timeout": 30.0,
        "chunk_size": 64 * 1024,
    }
    values.update(overrides)
    return DownloadConfig(**values)  # type: ignore[arg-type]
