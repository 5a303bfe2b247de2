"""Property tests: arbitrary messages fed to every stage's handler never stop the stage.

Arbitrary bytes, arbitrary JSON-shaped events, tasks and results, and arbitrary headers go to
ingest, delay and results through the real ConsumeLoop (tests/fakekafka.py stands in for the
broker), and to the download stage's ``process`` with a fetcher that answers whatever
hypothesis picks. For every input:

* no exception escapes and the loop records no fatal error;
* the input gets exactly one verdict, and a ``Done`` one has its offset stored;
* every output is valid: tasks on pending and the retry topics read back as DownloadTasks with
  the task schema header (and a ``retry-at`` of digits on retry topics), results as
  DownloadResults, DLQ entries as FailedDownloads or raw dead letters carrying the reason and
  the source topic/partition/offset.

The normal run keeps examples few (the module takes seconds). To fuzz longer::

    KAFKAPIPE_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/unit/test_fuzz_stages.py

``KAFKAPIPE_FUZZ_EXAMPLES`` sets the examples per property; hypothesis keeps failing examples
in ``.hypothesis/`` and replays them first on the next run.
"""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from fakekafka import FakeConsumer, FakeMessage, FakeProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkapipe.config import from_mapping
from kafkapipe.download.fetch import FetchOutcome
from kafkapipe.errors import (
    AuthError,
    CircuitOpenError,
    ExpiredError,
    PermanentError,
    StorageUnavailableError,
    TransientError,
    ValidationError,
)
from kafkapipe.kafka.clients import header_map
from kafkapipe.kafka.loop import Again, ConsumeLoop, Defer, Done
from kafkapipe.messages import (
    SCHEMA_FAILED,
    SCHEMA_RESULT,
    SCHEMA_TASK,
    DownloadResult,
    DownloadTask,
    FailedDownload,
    loads,
)
from kafkapipe.worker import WorkerControl

EXAMPLES = int(os.environ.get("KAFKAPIPE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="KAFKAPIPE_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ----------------------------------------------------------------------------- strategies
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=3), max_leaves=8)
offsets = st.sampled_from([UTC, timezone(timedelta(hours=5)), timezone(timedelta(hours=-5, minutes=-30)),
                           timezone(timedelta(hours=23, minutes=59))])
timestamps = (st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=offsets)
              .map(lambda d: d.isoformat()) | st.text(max_size=40) | json_values)
urls = (st.sampled_from(["https://files.example.com/a.pdf", "http://127.0.0.1/x", "https://[::1]:443/",
                         "https://files.example.com/%00%2e%2e/", "ftp://h/a", "https://user:pw@h/a",
                         "https://xn--nxasmq6b.example/a", "https://" + "a" * 300 + ".com/"])
        | st.text(max_size=60) | st.from_regex(r"https://[a-z0-9.\[\]:%-]{1,40}/[^\s]{0,40}", fullmatch=True))


def maybe(field_values):
    return st.one_of(st.just(...), field_values, json_values)


events = st.fixed_dictionaries({
    "trace_id": maybe(st.text(max_size=300)),
    "event_type": maybe(st.text(max_size=40)),
    "timestamp": maybe(timestamps),
    "event_subtype": maybe(st.text(max_size=40)),
    "source_system": maybe(st.text(max_size=80)),
    "assignment_id": maybe(st.text(max_size=20)),
    "attachments": maybe(st.lists(urls | json_values, max_size=4)),
    "payload": maybe(json_values),
}).map(lambda d: {k: v for k, v in d.items() if v is not ...})


def task_dict(**over):
    base = {
        "task_id": "t" * 32, "trace_id": "T-1", "attachment_url": "https://files.example.com/a.pdf",
        "blob_path": "xact/2026/11/25/T-1/t-a.pdf", "event_type": "e", "event_subtype": "e",
        "source_system": "xact", "original_timestamp": "2026-11-25T19:09:22.123+00:00",
        "created_at": "2026-11-25T19:09:22.123+00:00", "retry_count": 0,
    }
    base.update(over)
    return base


tasks = st.fixed_dictionaries({}, optional={
    name: json_values | st.text(max_size=40) for name in task_dict()
} | {"retry_count": st.integers(min_value=-5, max_value=2**64 - 1) | json_values,
     "retry_at": timestamps, "last_error": json_values, "metadata": json_values,
     "original_timestamp": timestamps}).map(lambda over: task_dict(**over))
results = st.fixed_dictionaries({}, optional={
    "task_id": st.text(max_size=40) | json_values, "status": st.sampled_from(["success", "failed_permanent", "x"]),
    "attempt": st.integers(min_value=-(2**63), max_value=2**64 - 1),
    "bytes": st.integers(min_value=0, max_value=2**64 - 1),
    "completed_at": timestamps, "error_message": st.text(max_size=2000) | json_values, "http_status": json_values,
}).map(lambda over: {"task_id": "t" * 32, "trace_id": "T", "attachment_url": "https://h/a", "blob_path": "p/a",
                     "status": "success", "attempt": 1, "completed_at": "2026-11-25T19:09:22.123+00:00",
                     "duration_ms": 3, **over})
header_names = st.sampled_from(["retry-at", "trace_id", "task_id", "kafkapipe-schema"]) | st.text(max_size=12)
header_values = (st.binary(max_size=40) | st.from_regex(r"[0-9]{0,400}", fullmatch=True).map(str.encode)
                 | st.sampled_from([b"\xc2\xb2", b"-1", b"1e3", b"0"]) | st.none())
header_lists = st.lists(st.tuples(header_names, header_values), max_size=4)


def json_bytes(strategy):
    return strategy.map(lambda obj: orjson.dumps(obj))


def payloads(shaped):
    return st.binary(max_size=300) | st.none() | json_bytes(shaped) | json_bytes(json_values)


# ----------------------------------------------------------------------------- checks
def check_output(out, config, source: FakeMessage) -> None:
    topics = config.topics
    meta = header_map(out.headers)
    if out.topic == topics.pending or out.topic in topics.retry_topics:
        loads(out.value, DownloadTask)
        assert meta["kafkapipe-schema"] == SCHEMA_TASK
        if out.topic in topics.retry_topics:
            assert meta["retry-at"].isascii() and meta["retry-at"].isdigit()
    elif out.topic == topics.results:
        loads(out.value, DownloadResult)
        assert meta["kafkapipe-schema"] == SCHEMA_RESULT
    elif out.topic in (topics.dlq, topics.events_dlq):
        if meta.get("kafkapipe-schema") == SCHEMA_FAILED:
            loads(out.value, FailedDownload)
        else:  # a raw dead letter: the message as it came, with why and where from
            assert meta["error-message"] and meta["error-category"]
            assert (meta["source-topic"], meta["source-partition"], meta["source-offset"]) == (
                source.topic(), str(source.partition()), str(source.offset()))
            assert out.value == (source.value() or b"")
    else:
        raise AssertionError(f"output to an unexpected topic {out.topic}")


def through_loop(stage, config, topic: str, value: bytes | None, headers: list | None):
    """One message through a real ConsumeLoop; checks the verdict count, the offset and every output."""
    consumer, producer = FakeConsumer(), FakeProducer()
    loop = ConsumeLoop(stage, consumer, producer, WorkerControl(), max_in_flight=10, drain_timeout=1.0)
    verdicts = defaultdict(list)
    complete = loop.complete

    def recording(msg, verdict):
        verdicts[msg.offset()].append(verdict)
        complete(msg, verdict)

    loop.complete = recording
    consumer.subscribe(stage.topics, loop._on_assign, loop._on_revoke, loop._on_lost)
    consumer.add(topic, 0, value, headers)
    consumer.assign((topic, 0))
    for _ in range(3):
        loop._iterate()
    assert loop._fatal is None
    [verdict] = verdicts[0]
    assert isinstance(verdict, Done | Defer | Again)
    if isinstance(verdict, Done):
        assert consumer.stored[(topic, 0)] == 1
    msg = FakeMessage(topic, 0, 0, value, headers=headers)
    for out in producer.produced:
        check_output(out, config, msg)
    return verdict, producer


@pytest.fixture
def config(tmp_path):
    return from_mapping({
        "inventory": {"path": str(tmp_path / "inventory.sqlite3")},
        "storage": {"root": str(tmp_path / "attachments")},
        "stages": {"delay": {"max_pending_lag": 0}},
    })


# ----------------------------------------------------------------------------- properties
def test_ingest_survives_anything(config):
    from kafkapipe.stages.ingest import IngestStage

    stage = IngestStage(config)

    @FUZZ
    @given(value=payloads(events), headers=header_lists)
    def prop(value, headers):
        verdict, _ = through_loop(stage, config, config.topics.events, value, headers)
        assert isinstance(verdict, Done)

    prop()


def test_delay_survives_anything(config):
    from kafkapipe.stages.delay import DelayStage

    now = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    stage = DelayStage(config, clock=lambda: now)

    @FUZZ
    @given(value=payloads(tasks), headers=header_lists, topic=st.sampled_from(config.topics.retry_topics))
    def prop(value, headers, topic):
        through_loop(stage, config, topic, value, headers)

    prop()


def test_results_survive_anything(config):
    from kafkapipe.stages.results import ResultsStage

    stage = ResultsStage(config)

    @FUZZ
    @given(value=payloads(results), headers=header_lists)
    def prop(value, headers):
        verdict, _ = through_loop(stage, config, config.topics.results, value, headers)
        assert isinstance(verdict, Done)

    prop()


failures = st.sampled_from([
    None, TransientError("HTTP 503", http_status=503, retry_after=None),
    PermanentError("HTTP 404", http_status=404), ValidationError("type not allowed"), ExpiredError("expired"),
    CircuitOpenError("circuit open"), AuthError("refused"), StorageUnavailableError("disk full"),
    RuntimeError("bug"), OSError(28, "No space left on device"),
]) | st.floats(allow_nan=True, allow_infinity=True).map(
    lambda ra: TransientError("HTTP 429", http_status=429, retry_after=ra))


def test_download_process_survives_anything(config, monkeypatch):
    from kafkapipe.stages.download import DownloadStage

    stage = DownloadStage(config)

    @FUZZ
    @given(value=payloads(tasks), headers=header_lists, failure=failures)
    def prop(value, headers, failure):
        def fetch(url, writer):
            if failure is not None:
                raise failure
            writer.write(b"%PDF-1.4\n")
            return FetchOutcome(http_status=200, bytes=9, sha256="0" * 64, content_type="application/pdf",
                                file_type="pdf", final_url=url.split("?")[0])

        monkeypatch.setattr(stage.fetcher, "fetch", fetch)
        msg = FakeMessage(config.topics.pending, 0, 7, value, headers=headers)
        verdict = stage.process(msg)
        assert isinstance(verdict, Done | Again)
        for out in verdict.outputs if isinstance(verdict, Done) else ():
            check_output(out, config, msg)

    try:
        prop()
    finally:
        stage.close()
