"""The per-host circuit on the real broker: a host failing some of its URLs is not a failing host,
and an open circuit never multiplies a task (every hop writes at most one copy, waits are bounded).

Every stage runs as a real `kafkapipe worker` process against a fault-injecting HTTP server.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from kafkahelpers import wait_for
from pipelinehelpers import Pipeline, event

ALL_STAGES = ("ingest", "download", "delay", "results")
PDF = b"%PDF-1.7\n" + b"circuit " * 200


@pytest.fixture
def make_pipeline(pipeline_factory):
    return pipeline_factory("circuit")


def per_task(pipe: Pipeline, topic: str) -> tuple[Counter, list[dict]]:
    count = pipe.count(topic)
    values = [orjson.loads(m.value()) for m in pipe.read_topic(topic, count)] if count else []
    ids = Counter(v["task_id"] if "task_id" in v else v["task"]["task_id"] for v in values)
    return ids, values


def test_a_host_failing_30_percent_of_its_urls_keeps_its_circuit_closed(make_pipeline, fault_server):
    failing = [f"/bad-{i}.pdf" for i in range(9)]
    healthy = [f"/ok-{i}.pdf" for i in range(21)]
    for path in failing:
        fault_server.add(path, statuses=[503, 503, 200], body=PDF)
    for path in healthy:
        fault_server.add(path, PDF)
    pipe = make_pipeline(fault_server)
    pipe.start(ALL_STAGES)
    # The failures come first, in a burst: a consecutive-failure breaker would open here.
    pipe.produce([event(f"t-bad-{i}", [fault_server.url(p)]) for i, p in enumerate(failing)])
    wait_for(lambda: fault_server.total_requests >= len(failing), 60, "the failing burst")
    pipe.produce([event(f"t-ok-{i}", [fault_server.url(p)]) for i, p in enumerate(healthy)])
    rows = pipe.wait_rows(30, status="success", timeout=120)

    by_url = {r["attachment_url"]: r for r in rows}
    assert all(by_url[fault_server.url(p)]["attempt"] == 1 for p in healthy)
    assert all(by_url[fault_server.url(p)]["attempt"] == 3 for p in failing)
    results = [orjson.loads(m.value()) for m in pipe.read_topic(pipe.topics["results"], 21 + 27)]
    assert not [r for r in results if r["error_category"] == "circuit_open"], "the circuit never opened"
    assert all(fault_server.requests_to(p) == 1 for p in healthy)


def test_an_open_circuit_writes_at_most_one_copy_per_hop_and_every_task_ends(make_pipeline, fault_server):
    """The reported shape: retry delays 2s/4s, 2 partitions, 1 download process x 2 threads, a host
    answering 503 to everything; the circuit opens after 3 distinct URLs fail."""
    max_waits = 2
    delays = ["2s", "4s"]
    paths = [f"/down-{i}.pdf" for i in range(6)]
    for path in paths:
        fault_server.add(path, statuses=[503])
    pipe = make_pipeline(fault_server, {
        "topics": {"retry_delays": delays, "partitions": 2},
        "stages": {"download": {"processes": 1, "threads": 2}},
        "download": {"circuit_minimum_calls": 3, "circuit_window_size": 10, "circuit_reset_timeout": 3.0,
                     "max_circuit_waits": max_waits},
    })
    pipe.start(ALL_STAGES)
    pipe.produce([event(f"t-down-{i}", [fault_server.url(p)]) for i, p in enumerate(paths)])
    pipe.read_topic(pipe.topics["dlq"], len(paths), timeout=150)  # every task reaches a verdict
    pipe.wait_rows(len(paths), status="failed_permanent", timeout=60)
    pipe.wait_caught_up("results", pipe.topics["results"])

    pending, _ = per_task(pipe, pipe.topics["pending"])
    results, result_values = per_task(pipe, pipe.topics["results"])
    dlq, _ = per_task(pipe, pipe.topics["dlq"])
    retries = Counter()
    for delay in delays:
        retries.update(per_task(pipe, f"{pipe.topics['retry_prefix']}.{delay}")[0])
    transient = Counter(r["task_id"] for r in result_values if r["status"] == "failed_transient")
    waits = Counter(r["task_id"] for r in result_values if r["error_category"] == "circuit_open")

    assert len(pending) == len(paths) and set(dlq) == set(pending)
    opened = False
    for task_id in pending:
        assert dlq[task_id] == 1, "one dead letter per task"
        assert results[task_id] == pending[task_id], "one result per pending copy: no copy processed twice"
        assert pending[task_id] == 1 + retries[task_id], "the delay stage forwarded each retry once"
        assert retries[task_id] == transient[task_id], "one retry copy per transient failure or circuit wait"
        assert waits[task_id] <= max_waits, "circuit waits are bounded"
        assert results[task_id] <= 1 + len(delays) + max_waits
        opened = opened or waits[task_id] > 0
    assert opened, "the circuit really opened"
    assert fault_server.total_requests <= len(paths) * (1 + len(delays))
