"""Failure routing on the real broker (docs/contract.md §3): retries through the delay topics, dead
letters, the per-host circuit, and replay of dead letters once the cause is fixed.

Every stage runs as a real `kafkapipe worker` process against a fault-injecting HTTP server.
"""

from __future__ import annotations

import orjson
import pytest
from kafkahelpers import wait_for
from pipelinehelpers import event

from kafkapipe.kafka.clients import header_map
from tests.integration.httpfaults import FaultServer

ALL_STAGES = ("ingest", "download", "delay", "results")
PDF = b"%PDF-1.7\n" + b"retry me " * 200


@pytest.fixture
def make_pipeline(pipeline_factory):
    return pipeline_factory("retry")


def read_results(pipe, count):
    return [orjson.loads(m.value()) for m in pipe.read_topic(pipe.topics["results"], count)]


def test_two_503s_then_200_succeeds_on_the_third_attempt(make_pipeline, fault_server):
    fault_server.add("/flaky.pdf", PDF, statuses=[503, 503, 200])
    pipe = make_pipeline(fault_server)
    pipe.start(ALL_STAGES)
    pipe.produce([event("t-flaky", [fault_server.url("/flaky.pdf")])])
    rows = pipe.wait_rows(1, status="success", timeout=60)
    assert rows[0]["attempt"] == 3
    results = read_results(pipe, 3)
    assert [(r["status"], r["attempt"], r["http_status"]) for r in results] == [
        ("failed_transient", 1, 503), ("failed_transient", 2, 503), ("success", 3, 200)]
    assert fault_server.requests_to("/flaky.pdf") == 3
    retried = pipe.read_topic(f"{pipe.topics['retry_prefix']}.2s", 1)
    task = orjson.loads(retried[0].value())
    assert task["retry_count"] == 2 and task["last_error"]["category"] == "transient"
    assert task["original_timestamp"] == "2026-11-25T19:09:22.123+00:00"
    assert int(header_map(retried[0].headers())["retry-at"]) > 0


def test_retry_after_is_respected(make_pipeline, fault_server):
    fault_server.add("/busy.pdf", PDF, statuses=[429, 200], retry_after="3")
    pipe = make_pipeline(fault_server)
    pipe.start(ALL_STAGES)
    pipe.produce([event("t-busy", [fault_server.url("/busy.pdf")])])
    pipe.wait_rows(1, status="success", timeout=60)
    first, second = fault_server.records("/busy.pdf")
    assert second.at - first.at >= 3.0, "redelivered before the server's Retry-After"
    # 3 s is more than the first topic's 1 s: the task waits on the first topic that covers it.
    assert pipe.count(f"{pipe.topics['retry_prefix']}.1s") == 0
    retry = orjson.loads(pipe.read_topic(f"{pipe.topics['retry_prefix']}.2s", 1)[0].value())
    assert retry["retry_count"] == 1 and retry["last_error"]["category"] == "transient"


def test_404_is_dead_lettered_at_once(make_pipeline, fault_server):
    fault_server.add("/gone.pdf", statuses=[404])
    pipe = make_pipeline(fault_server)
    pipe.start(ALL_STAGES)
    pipe.produce([event("t-gone", [fault_server.url("/gone.pdf")])])
    row = pipe.wait_rows(1, timeout=60)[0]
    assert (row["status"], row["error_category"], row["http_status"], row["attempt"]) == (
        "failed_permanent", "permanent", 404, 1)
    dead = orjson.loads(pipe.read_topic(pipe.topics["dlq"], 1)[0].value())
    assert dead["error_category"] == "permanent" and dead["attempts"] == 1 and dead["stage"] == "download"
    assert fault_server.requests_to("/gone.pdf") == 1


def test_always_503_is_dead_lettered_after_the_last_delay_with_the_last_error(make_pipeline, fault_server):
    fault_server.add("/down.pdf", statuses=[503])
    pipe = make_pipeline(fault_server)
    pipe.start(ALL_STAGES)
    pipe.produce([event("t-down", [fault_server.url("/down.pdf")])])
    dead = orjson.loads(pipe.read_topic(pipe.topics["dlq"], 1, timeout=90)[0].value())
    assert dead["attempts"] == 3, "one first attempt plus one per retry delay"
    assert dead["error_category"] == "transient" and "503" in dead["error_message"]
    assert dead["task"]["retry_count"] == 2
    row = pipe.wait_rows(1, status="failed_permanent", timeout=30)[0]
    assert row["attempt"] == 3
    assert fault_server.requests_to("/down.pdf") == 3


def test_open_circuit_spares_attempts_and_other_hosts_keep_flowing(make_pipeline, fault_server):
    with FaultServer(host="127.0.0.2") as healthy:
        sick_paths = [f"/sick-{i}.pdf" for i in range(8)]
        for i, path in enumerate(sick_paths):
            # The first three requests to this host fail; after that it has recovered.
            fault_server.add(path, PDF, statuses=[503, 200] if i < 3 else [200])
        good_paths = [f"/good-{i}.pdf" for i in range(8)]
        for path in good_paths:
            healthy.add(path, PDF)
        pipe = make_pipeline(fault_server, {
            "download": {"allowed_ports": [fault_server.port, healthy.port],
                         "circuit_minimum_calls": 3, "circuit_window_size": 10,
                         "circuit_reset_timeout": 5.0},
            "stages": {"download": {"threads": 1}},
        })
        pipe.start(ALL_STAGES)
        sick = [event(f"t-sick-{i}", [fault_server.url(p)]) for i, p in enumerate(sick_paths)]
        good = [event(f"t-good-{i}", [healthy.url(p)]) for i, p in enumerate(good_paths)]
        pipe.produce(sick[:3])
        wait_for(lambda: fault_server.total_requests >= 3, 60, "three failures to open the circuit")
        pipe.produce(sick[3:] + good)
        rows = pipe.wait_rows(16, status="success", timeout=120)

    by_url = {r["attachment_url"]: r for r in rows}
    assert all(by_url[healthy.url(p)]["attempt"] == 1 for p in good_paths), "other hosts unaffected"
    assert all(by_url[fault_server.url(p)]["attempt"] == 1 for p in sick_paths[3:]), \
        "tasks turned away by the open circuit used no attempt"
    results = read_results(pipe, 16 + 3)
    assert any(r["error_category"] == "circuit_open" for r in results), "the circuit really opened"
    for path in sick_paths[3:]:
        assert fault_server.requests_to(path) == 1, "no connection while the circuit was open"


def test_replayed_dead_letters_succeed_once_fixed_and_replaying_twice_adds_nothing(make_pipeline, fault_server):
    paths = [f"/later-{i}.pdf" for i in range(3)]
    for path in paths:
        fault_server.add(path, statuses=[404])
    pipe = make_pipeline(fault_server)
    pipe.start(ALL_STAGES)
    pipe.produce([event(f"t-later-{i}", [fault_server.url(p)]) for i, p in enumerate(paths)])
    pipe.wait_rows(3, status="failed_permanent", timeout=60)

    for path in paths:  # the vendor fixed the documents
        fault_server.add(path, PDF)
    out = pipe.cli("dlq", "replay", "--config", str(pipe.config_path), "--all-entries", "--execute")
    assert out.returncode == 0, out.stderr
    assert len([line for line in out.stdout.splitlines() if line.startswith("replayed ")]) == 3, out.stdout
    assert {"replayed=3", "failed=0"} <= set(out.stdout.splitlines()[-1].split()), out.stdout
    pipe.wait_rows(3, status="success", timeout=60)
    again = pipe.cli("dlq", "replay", "--config", str(pipe.config_path), "--all-entries", "--execute")
    assert again.returncode == 0, again.stderr
    assert "replayed=0" in again.stdout.splitlines()[-1].split(), again.stdout
    pipe.wait_caught_up("download", pipe.topics["pending"])
    assert sum(fault_server.requests_to(p) for p in paths) == 6, "the second replay sent nothing"
    rows = pipe.rows()
    assert len(rows) == 3 and all(r["status"] == "success" for r in rows)
    replayed = [orjson.loads(m.value()) for m in pipe.read_topic(pipe.topics["pending"], 6)]
    assert sum(1 for t in replayed if "replayed_at" in t["metadata"]) == 3
    assert all(t["retry_count"] == 0 for t in replayed)
