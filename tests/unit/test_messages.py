import hashlib
from datetime import UTC, datetime

import orjson
import pytest

from kafkapipe import messages as m
from kafkapipe import paths


def raw(**fields):
    base = {"trace_id": "T-1", "event_type": "xact.claims.documentsReceived",
            "timestamp": "2026-11-25T19:09:22.123+01:00"}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_event_defaults_and_duplicate_collapse():
    e = m.parse_event(raw(attachments=["https://h/a.pdf", "https://h/b.pdf", "https://h/a.pdf"], extra=1))
    assert e.event_subtype == "documentsReceived"
    assert e.source_system == "unknown"
    assert e.attachments == ("https://h/a.pdf", "https://h/b.pdf")
    assert e.timestamp.utcoffset().total_seconds() == 3600


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (None, "empty message"),
        (raw(trace_id=...), "trace_id is required"),
        (raw(trace_id=""), "trace_id must be a non-empty string"),
        (raw(trace_id="x" * 257), "trace_id is longer than 256"),
        (raw(trace_id=5), "trace_id must be a non-empty string"),
        (raw(event_type=...), "event_type is required"),
        (raw(timestamp=...), "timestamp is required"),
        (raw(timestamp="2026-11-25T19:09:22"), "with an offset"),
        (raw(timestamp="2026-11-25"), "with an offset"),
        (raw(timestamp="yesterday"), "not an RFC 3339"),
        (raw(attachments="https://h/a"), "attachments must be a list"),
        (raw(attachments=[1]), "attachments must be a list"),
        (raw(payload=[1]), "payload must be an object"),
        (raw(assignment_id=7), "assignment_id must be a string"),
    ],
)
def test_invalid_events_name_the_rule(data, reason):
    with pytest.raises(m.InvalidMessage, match=reason):
        m.parse_event(data)


def test_task_id_is_deterministic():
    expected = hashlib.sha256(b"T-1\nhttps://h/a.pdf").hexdigest()[:32]
    assert m.make_task_id("T-1", "https://h/a.pdf") == expected


def test_task_round_trip_and_utc_output():
    when = datetime(2026, 11, 25, 19, 9, 22, 123000, tzinfo=UTC)
    task = m.DownloadTask(
        task_id="a" * 32, trace_id="T", attachment_url="https://h/a.pdf", blob_path="x/a.pdf",
        event_type="e", event_subtype="e", source_system="s", original_timestamp=when, created_at=when,
        last_error=m.ErrorInfo("transient", "503"), metadata={"k": "v"},
    )
    data = m.dumps(task)
    decoded = orjson.loads(data)
    assert decoded["original_timestamp"] == "2026-11-25T19:09:22.123+00:00"
    assert decoded["schema_version"] == 1
    assert m.loads(data, m.DownloadTask) == task


def test_result_error_message_is_bounded():
    when = datetime(2026, 1, 1, tzinfo=UTC)
    r = m.DownloadResult(task_id="t", trace_id="t", attachment_url="u", blob_path="p", status="failed_permanent",
                         attempt=1, completed_at=when, duration_ms=1, error_message="x" * 5000)
    assert len(r.error_message) == m.MAX_RESULT_ERROR


def test_loads_rejects_wrong_shapes():
    with pytest.raises(m.InvalidMessage, match="not a valid DownloadTask"):
        m.loads(b'{"task_id": "x"}', m.DownloadTask)
    with pytest.raises(m.InvalidMessage, match="not JSON"):
        m.loads(b"{", m.DownloadTask)


@pytest.mark.parametrize(
    "url",
    [
        "https://h/a.pdf",
        "https://h/../../etc/passwd",
        "https://h/%2e%2e/%2e%2e/x",
        "https://h/",
        "https://h/" + "é" * 600 + ".pdf",
        "https://h/a b/c?d=e#f",
        "https://h/.hidden",
    ],
)
def test_blob_paths_are_safe_and_deterministic(url):
    when = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)
    task_id = m.make_task_id("../trace/..", url)
    path = paths.blob_path(task_id, "../trace/..", url, "src/../x", when)
    assert paths.is_valid(path)
    assert path == paths.blob_path(task_id, "../trace/..", url, "src/../x", when)
    assert task_id in path
    assert "/2026/11/25/" in path
