"""One hostile message never stops a stage: real broker, real ``kafkapipe worker`` processes.

An event just under the broker's size limit that is not valid JSON must still be dead-lettered
(its value cut to what the dead-letter topic takes, with headers saying so), an event whose
timestamp has no UTC instant is dead-lettered with a clear reason, an event flooded with copies
of the dead-letter headers (``trace_id``) is dead-lettered with our headers only, a retry message
whose ``retry-at`` header is garbage does not crash the delay stage, one due centuries ahead does
not hold its partition, and the good messages behind all of them are processed by the same worker
process.
"""

from __future__ import annotations

import json

from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource, ResourceType
from kafkahelpers import wait_for
from pipelinehelpers import Pipeline, event

from kafkapipe.kafka.clients import header_map
from kafkapipe.messages import DownloadTask, dumps, utcnow

TIMEOUT = 90.0


def topic_max_bytes(admin, topic: str) -> int:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    return int(configs["max.message.bytes"].value)


def test_poison_events_are_dead_lettered_and_the_ingest_worker_goes_on(tmp_path, kafka_bootstrap, kafka_admin,
                                                                    unique_name):
    pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("poison"), 443,
                    {"topics": {"partitions": 1}, "download": {"allowed_schemes": ["https"]}})
    pipe.create_topics(kafka_admin)
    events = pipe.topics["events"]
    limit = topic_max_bytes(kafka_admin, events)
    huge = b"{" + b"x" * (limit - 1000)  # not JSON, just under what the broker takes
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": limit + 100_000,
                         "compression.type": "none"})
    producer.produce(events, value=huge, headers=[("origin", b"fuzz")])
    flood = [("trace_id", b"A" * 900)] * 1130  # about 1.03 MB of headers named like the letter's own
    producer.produce(events, value=b"not json", headers=flood)
    producer.produce(events, value=json.dumps(event("T-old", [], timestamp="0001-01-01T00:00:00+05:00")).encode())
    producer.produce(events, value=json.dumps(event("T-good", ["https://files.example.com/a.pdf"])).encode())
    assert producer.flush(30) == 0

    worker = pipe.start_worker("ingest")
    try:
        letters = pipe.read_topic(pipe.topics["events_dlq"], 3, timeout=TIMEOUT)
        [task] = pipe.read_topic(pipe.topics["pending"], 1, timeout=TIMEOUT)
        pipe.wait_caught_up("ingest", events, timeout=TIMEOUT)
        assert worker.poll() is None, pipe.logs()[-3000:]
    finally:
        pipe.stop()

    big, flooded, old = letters
    meta = header_map(big.headers())
    assert meta["original-size"] == str(len(huge)) and meta["truncated"] == "true"
    assert (meta["source-topic"], meta["source-partition"], meta["source-offset"]) == (events, "0", "0")
    assert meta["origin"] == "fuzz" and meta["error-message"].startswith("not JSON")
    assert 0 < len(big.value()) < len(huge) and huge.startswith(big.value())
    assert [k for k, _ in flooded.headers()].count("trace_id") == 1
    meta = header_map(flooded.headers())
    assert meta["source-offset"] == "1" and meta["error-message"].startswith("not JSON")
    assert meta["trace_id"] == "A" * 256 and flooded.value() == b"not json"
    assert "timestamp is out of range once converted to UTC" in header_map(old.headers())["error-message"]
    assert header_map(task.headers())["trace_id"] == "T-good"


def test_garbage_retry_at_headers_do_not_stop_the_delay_worker(tmp_path, kafka_bootstrap, kafka_admin, unique_name):
    pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("poison-delay"), 443, {"topics": {"partitions": 1}})
    pipe.create_topics(kafka_admin)
    retry = f"{pipe.topics['retry_prefix']}.1s"
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(retry, value=b"not a task", headers=[("retry-at", "²".encode())])
    producer.produce(retry, value=b"{}", headers=[("retry-at", b"9" * 400)])
    due = dumps(DownloadTask(task_id="d" * 32, trace_id="T-due", attachment_url="https://files.example.com/a.pdf",
                             blob_path="xact/a.pdf", event_type="e", event_subtype="e", source_system="xact",
                             original_timestamp=utcnow(), created_at=utcnow(), retry_count=1))
    producer.produce(retry, value=due, headers=[("retry-at", b"9" * 15), ("trace_id", b"T-due")])  # year 33658
    producer.produce(retry, value=due, headers=[("retry-at", b"1000"), ("trace_id", b"T-due")])
    assert producer.flush(30) == 0

    worker = pipe.start_worker("delay")
    try:
        letters = pipe.read_topic(pipe.topics["dlq"], 2, timeout=TIMEOUT)
        forwarded = pipe.read_topic(pipe.topics["pending"], 2, timeout=TIMEOUT)
        wait_for(lambda: pipe.lag("delay", retry) == 0, TIMEOUT, "delay to commit the retry topic")
        assert worker.poll() is None, pipe.logs()[-3000:]
    finally:
        pipe.stop()
    assert [header_map(m.headers())["source-offset"] for m in letters] == ["0", "1"]
    assert [m.value() for m in forwarded] == [due, due]
