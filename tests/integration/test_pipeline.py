"""The pipeline end to end on the real broker: events in, files stored, inventory written.

Real `kafkapipe worker` processes for ingest, download and results; a real HTTP server on
loopback; a real SQLite inventory.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
from collections import Counter

import orjson
import pytest
from kafkahelpers import wait_for
from pipelinehelpers import Pipeline, event

from kafkapipe.kafka.clients import header_map


def pdf_body(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    return b"%PDF-1.7\n" + rng.randbytes(size)


@pytest.fixture
def pipeline(tmp_path, kafka_bootstrap, kafka_admin, unique_name, fault_server):
    pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("e2e"), fault_server.port)
    pipe.create_topics(kafka_admin)
    yield pipe
    pipe.stop()


def publish_events(pipe, server, count, seed=1, max_attachments=3, size=(1024, 20 * 1024), rate=None):
    """``count`` events with 1..max attachments each; returns (events, {url: sha256})."""
    rng = random.Random(seed)
    events, digests = [], {}
    for i in range(count):
        urls = []
        for j in range(rng.randint(1, max_attachments)):
            body = pdf_body(seed * 100_000 + i * 10 + j, rng.randint(*size))
            path = f"/claims/{seed}/{i}/doc-{j}.pdf"
            server.add(path, body, content_type="application/pdf", rate=rate)
            urls.append(server.url(path))
            digests[server.url(path)] = hashlib.sha256(body).hexdigest()
        events.append(event(f"trace-{seed}-{i}", urls))
    return events, digests


def assert_stored_exactly(pipe, digests):
    rows = pipe.rows()
    assert len(rows) == len(digests), f"{len(rows)} rows for {len(digests)} attachments"
    assert {r["attachment_url"] for r in rows} == set(digests)
    for row in rows:
        assert row["status"] == "success", row
        assert row["sha256"] == digests[row["attachment_url"]]
        stored = pipe.storage_root / row["blob_path"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == row["sha256"]
    visible = [p for p in pipe.stored_files() if ".incoming" not in p.parts]
    assert len(visible) == len(digests), "one file per task, no strays"


def test_300_events_end_in_the_inventory_with_matching_files(pipeline, fault_server):
    events, digests = publish_events(pipeline, fault_server, 300)
    pipeline.start()
    pipeline.produce(events)
    pipeline.wait_rows(len(digests), status="success", timeout=240)
    assert_stored_exactly(pipeline, digests)
    assert [p for p in pipeline.stored_files() if ".incoming" in p.parts] == []


def test_the_same_events_twice_give_no_second_file_or_row(pipeline, fault_server):
    events, digests = publish_events(pipeline, fault_server, 20, seed=2)
    pipeline.start()
    pipeline.produce(events)
    pipeline.wait_rows(len(digests), status="success")
    first = {r["task_id"]: r for r in pipeline.rows()}

    pipeline.produce(events)
    # Both deliveries produce the same deterministic tasks, so pending holds each task id twice.
    tasks = pipeline.read_topic(pipeline.topics["pending"], 2 * len(digests))
    ids = [header_map(m.headers())["task_id"] for m in tasks]
    assert sorted(set(ids)) == sorted(first) and len(ids) == 2 * len(first)
    # Downloads commit pending only after their results are acknowledged, so once both groups
    # are caught up every second-delivery result is in the inventory.
    pipeline.wait_caught_up("download", pipeline.topics["pending"], timeout=120)
    pipeline.wait_caught_up("results", pipeline.topics["results"], timeout=120)

    rows = {r["task_id"]: r for r in pipeline.rows()}
    assert rows.keys() == first.keys()
    assert all(rows[t]["blob_path"] == first[t]["blob_path"] for t in rows)
    assert_stored_exactly(pipeline, digests)
    # The second delivery was really processed — a second success result per task — but found
    # every blob already stored complete, so it made no request at all.
    results = [orjson.loads(m.value()) for m in pipeline.read_topic(pipeline.topics["results"], 2 * len(digests))]
    per_task = Counter(r["task_id"] for r in results if r["status"] == "success")
    assert set(per_task) == set(first) and set(per_task.values()) == {2}
    assert fault_server.total_requests == len(digests), "work already done is not downloaded again"


def test_kill_9_of_a_download_worker_loses_nothing(pipeline, fault_server):
    # ~0.1 s a body keeps downloads in flight, so the kill lands mid-stream.
    events, digests = publish_events(pipeline, fault_server, 150, seed=3, rate=100_000)
    pipeline.data["stages"]["download"]["threads"] = 4
    pipeline.write_config()
    pipeline.start(["ingest", "results"])
    victim = pipeline.start_worker("download")
    survivor = pipeline.start_worker("download")
    pipeline.produce(events)
    wait_for(lambda: len(pipeline.rows()) >= 20, 120, "the first results")
    assert len(pipeline.rows()) < len(digests), "work still in flight when the worker dies"
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    assert survivor.poll() is None
    pipeline.wait_rows(len(digests), status="success", timeout=240)
    assert_stored_exactly(pipeline, digests)


def test_malformed_events_are_dead_lettered_and_good_ones_proceed(pipeline, fault_server):
    good, digests = publish_events(pipeline, fault_server, 2, seed=4, max_attachments=1)
    bad = [
        b"this is not json",
        b"[1, 2, 3]",
        b'{"event_type": "xact.claims.documentsReceived", "timestamp": "2026-11-25T19:09:22+00:00"}',
        b'{"trace_id": "t-bad-ts", "event_type": "x.y", "timestamp": "2026-11-25T19:09:22"}',
    ]
    pipeline.start()
    pipeline.produce([good[0], *bad, good[1]])
    pipeline.wait_rows(len(digests), status="success")
    dead = pipeline.read_topic(pipeline.topics["events_dlq"], len(bad))
    assert sorted(m.value() for m in dead) == sorted(bad), "dead letters keep the original bytes"
    reasons = {m.value(): header_map(m.headers()) for m in dead}
    assert "not JSON" in reasons[bad[0]]["error-message"]
    assert "not a JSON object" in reasons[bad[1]]["error-message"]
    assert "trace_id is required" in reasons[bad[2]]["error-message"]
    assert "offset" in reasons[bad[3]]["error-message"]
    assert all(h["error-category"] == "validation" for h in reasons.values())
    assert reasons[bad[3]]["trace_id"] == "t-bad-ts"
    assert_stored_exactly(pipeline, digests)


def test_a_url_the_validator_refuses_fails_at_ingest_without_a_request(pipeline, fault_server):
    path = "/claims/refused.pdf"
    fault_server.add(path, pdf_body(9, 100))
    refused = f"ftp://127.0.0.1:{fault_server.port}{path}"
    pipeline.start()
    pipeline.produce([event("trace-refused", [refused])])
    rows = pipeline.wait_rows(1)
    assert rows[0]["status"] == "failed_permanent"
    assert rows[0]["error_category"] == "validation"
    dlq = pipeline.read_topic(pipeline.topics["dlq"], 1)
    assert header_map(dlq[0].headers())["kafkapipe-schema"] == "failed_download/1"
    assert fault_server.requests_to(path) == 0
