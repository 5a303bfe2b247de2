"""The real supervisor (``bin/kafkapipe-supervisor`` in a subprocess) over the real broker.

Each test gets its own topics, consumer groups, storage, inventory, metrics directory and a
free loopback port for ``/metrics``; attachments come from a real HTTP server on loopback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pipelinehelpers import Pipeline, deep_merge, unexpected_tracebacks
from supervisedhelpers import Supervised

from tests.integration.httpfaults import FaultServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def supervised(tmp_path, kafka_bootstrap, kafka_admin, unique_name, fault_server):
    """Factory: ``supervised(overrides, create_topics=True)`` → a :class:`Supervised` (with its topics)."""
    made: list[Supervised] = []

    def make(overrides: dict | None = None, create_topics: bool = True) -> Supervised:
        name = unique_name("sup")
        base = {
            "supervisor": {
                "shutdown_timeout": 10.0, "heartbeat_timeout": 30.0, "restart_backoff_max": 2.0,
                "crash_loop_restarts": 5, "crash_loop_window": 60.0,
            },
            "metrics": {"bind": f"127.0.0.1:{free_port()}", "multiproc_dir": str(tmp_path / "metrics")},
            "stages": {"download": {"processes": 2, "threads": 8}},
        }
        pipe = Pipeline(tmp_path, kafka_bootstrap, name, fault_server.port, deep_merge(base, overrides or {}))
        if create_topics:
            pipe.create_topics(kafka_admin)
        sup = Supervised(pipe, fault_server)
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.stop()
    for sup in made:  # the supervisor's log holds its workers' too
        unexpected = unexpected_tracebacks(sup.log(), sup.expected_tracebacks)
        assert not unexpected, "traceback(s) in the supervisor or worker logs:\n" + "\n".join(unexpected)[-3000:]

