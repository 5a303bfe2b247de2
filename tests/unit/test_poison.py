"""Hostile single messages each stage must dead-letter or survive, never crash on.

The stages run inside the real ConsumeLoop against the in-memory consumer and producer of
tests/fakekafka.py, so what is checked is what the worker would do: the message ends on the
right dead-letter topic with a reason, and the stage goes on to the next one.
"""

from __future__ import annotations

import orjson
import pytest
from fakekafka import FakeConsumer, FakeMessage, FakeProducer

from kafkapipe.config import from_mapping
from kafkapipe.kafka.loop import ConsumeLoop, Defer, Done
from kafkapipe.messages import InvalidMessage, dumps, parse_event, parse_ts, utcnow
from kafkapipe.stages.delay import DelayStage, due_time
from kafkapipe.stages.ingest import IngestStage
from kafkapipe.stages.outcomes import MAX_JITTER, Outcomes
from kafkapipe.stages.results import ResultsStage
from kafkapipe.worker import WorkerControl


@pytest.fixture
def config(tmp_path):
    return from_mapping({
        "inventory": {"path": str(tmp_path / "inventory.sqlite3")},
        "download": {"allowed_schemes": ["https"]},
        "stages": {"delay": {"max_pending_lag": 0}},
    })


def run_stage(stage, messages: list[tuple[str, bytes | None, list | None]]):
    """Every message through a real ConsumeLoop; returns (producer, consumer) once all are stored."""
    consumer, producer = FakeConsumer(), FakeProducer()
    loop = ConsumeLoop(stage, consumer, producer, WorkerControl(), max_in_flight=100, drain_timeout=1.0)
    consumer.subscribe(stage.topics, loop._on_assign, loop._on_revoke, loop._on_lost)
    for topic, value, headers in messages:
        consumer.add(topic, 0, value, headers)
    consumer.assign(*{(t, 0) for t, _, _ in messages})
    for _ in range(5):
        loop._iterate()
    assert loop._fatal is None
    for topic in {t for t, _, _ in messages}:
        assert consumer.stored[(topic, 0)] == sum(1 for t, _, _ in messages if t == topic)
    return producer


def event(timestamp="2026-11-25T19:09:22.123+01:00", **fields):
    return orjson.dumps({"trace_id": "T-1", "event_type": "xact.claims.documentsReceived",
                         "timestamp": timestamp, "attachments": ["https://files.example.com/a.pdf"], **fields})


# ----------------------------------------------------------------------------- timestamps
@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_timestamp_without_a_utc_instant_is_invalid_at_parse_time(text):
    with pytest.raises(InvalidMessage, match="out of range once converted to UTC"):
        parse_ts(text)
    with pytest.raises(InvalidMessage, match="timestamp is out of range"):
        parse_event(event(text))


def test_ingest_dead_letters_an_out_of_range_event_and_goes_on(config):
    stage = IngestStage(config)
    topics = config.topics
    producer = run_stage(stage, [(topics.events, event("0001-01-01T00:00:00+05:00"), None),
                                 (topics.events, event(), None)])
    [letter] = producer.on(topics.events_dlq)
    assert b"timestamp is out of range once converted to UTC" in letter.header("error-message")
    assert letter.header("trace_id") == b"T-1"
    assert len(producer.on(topics.pending)) == 1


# ----------------------------------------------------------------------------- delay headers
def retry_message(config, retry_at_header: bytes | None, body: bytes | None = None):
    now = utcnow()
    task = parse_event(event())
    outcomes = Outcomes(config.topics, "download", clock=lambda: 0.0)
    ingest = IngestStage(config)
    task = ingest._task(task, "https://files.example.com/a.pdf", now)
    routed = outcomes._route(task, 0, outcomes_error(), None, 1)
    headers = [(k, v) for k, v in routed.headers if k != "retry-at"]
    if retry_at_header is not None:
        headers.append(("retry-at", retry_at_header))
    return (routed.topic, body if body is not None else routed.value, headers)


def outcomes_error():
    from kafkapipe.messages import ErrorInfo

    return ErrorInfo("transient", "HTTP 503")


@pytest.mark.parametrize("header", ["9" * 400, "²", "-5", "1e3", " 12"])
def test_a_hostile_retry_at_header_falls_back_to_the_task(config, header):
    topic, value, headers = retry_message(config, header.encode())
    msg = FakeMessage(topic, 0, 0, value, headers=headers)
    assert due_time(msg) == pytest.approx(orjson_retry_at(value))


def orjson_retry_at(value: bytes) -> float:
    return parse_ts(orjson.loads(value)["retry_at"]).timestamp()


def test_delay_forwards_a_due_task_with_a_hostile_header_and_dead_letters_an_unreadable_one(config):
    stage = DelayStage(config, clock=lambda: 1e12)
    good = retry_message(config, ("9" * 400).encode())
    bad = retry_message(config, "²".encode(), body=b"\xff not a task")
    producer = run_stage(stage, [good, bad])
    assert [p.value for p in producer.on(config.topics.pending)] == [good[1]]
    [letter] = producer.on(config.topics.dlq)
    assert letter.value == b"\xff not a task" and letter.header("error-message").startswith(b"not JSON")


def verdicts_of(stage, messages) -> list:
    got: list = []
    stage.handle(messages, lambda msg, verdict: got.append(verdict))
    return got


def test_a_retry_due_further_ahead_than_any_of_ours_is_forwarded_now(config):
    now = 1.8e9
    stage = DelayStage(config, clock=lambda: now)
    topic, value, headers = retry_message(config, None)
    delay = config.topics.retry_delay_seconds(config.topics.retry_topics.index(topic))
    latest = now + delay + config.download.max_retry_after + MAX_JITTER
    last_ours = FakeMessage(topic, 0, 0, value, headers=[*headers, ("retry-at", str(int(latest * 1000)).encode())])
    [held] = verdicts_of(stage, [last_ours])
    assert isinstance(held, Defer) and held.until == pytest.approx(latest)
    for far in (str(int(latest * 1000) + 1000), "9" * 15):  # a second past the latest; the year 33658
        msg = FakeMessage(topic, 0, 1, value, headers=[*headers, ("retry-at", far.encode())])
        [verdict] = verdicts_of(stage, [msg])
        assert isinstance(verdict, Done) and [o.topic for o in verdict.outputs] == [config.topics.pending]


def test_a_task_whose_own_retry_at_is_centuries_ahead_is_forwarded_now(config):
    topic, value, headers = retry_message(config, None)
    obj = orjson.loads(value)
    obj["retry_at"] = "9999-12-31T23:59:59.000+00:00"
    producer = run_stage(DelayStage(config, clock=lambda: 1.8e9), [(topic, orjson.dumps(obj), headers)])
    assert [p.value for p in producer.on(config.topics.pending)] == [orjson.dumps(obj)]


# ----------------------------------------------------------------------------- results
def result_value(**changes) -> bytes:
    from kafkapipe.messages import DownloadResult

    base = DownloadResult(task_id="f" * 32, trace_id="tr", attachment_url="https://h/a.pdf", blob_path="p/a.pdf",
                          status="success", attempt=1, completed_at=utcnow(), duration_ms=5)
    obj = orjson.loads(dumps(base))
    obj.update(changes)
    return orjson.dumps(obj)


def test_results_dead_letter_an_unreadable_result_and_one_sqlite_cannot_store(config):
    stage = ResultsStage(config)
    topic = config.topics.results
    producer = run_stage(stage, [
        (topic, b"[]", None),
        (topic, result_value(task_id="a" * 32), None),
        (topic, result_value(task_id="b" * 32, bytes=2**63), None),  # out of range: would overflow sqlite3
        (topic, result_value(task_id="c" * 32), None),
    ])
    letters = producer.on(config.topics.dlq)
    assert [p.header("source-offset") for p in letters] == [b"0", b"2"]
    assert letters[1].header("error-message").startswith(b"not a valid DownloadResult: bytes")
    stored = {c for c in "abc" if stage.inventory.lookup(c * 32) is not None}
    assert stored == {"a", "c"}


def test_done_is_what_a_valid_result_gets(config):
    stage = ResultsStage(config)
    verdicts = []
    stage.handle([FakeMessage(config.topics.results, 0, 0, result_value())], lambda m, v: verdicts.append(v))
    assert verdicts == [Done()]
