import hashlib
from datetime import UTC, datetime, timedelta, timezone

import attrs
import orjson
import pytest
from cattrs.preconf.orjson import make_converter
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- the fast paths give what the general code they stand for gives ---

ZONES = st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=5, minutes=30)),
                         timezone(timedelta(hours=-12)), timezone(timedelta(hours=23, minutes=59))])
MOMENTS = st.datetimes(timezones=ZONES)


def _format_generic(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # the comparison is of what each raises
        return (type(exc), str(exc))


@settings(max_examples=3000, deadline=None)
@given(MOMENTS)
def test_format_ts_is_isoformat_in_utc(value: datetime) -> None:
    assert _outcome(m.format_ts, value) == _outcome(_format_generic, value)


def _generic_converter():
    """The converter as cattrs builds it for every class, with the documented timestamp format."""
    conv = make_converter(forbid_extra_keys=False)
    conv.register_unstructure_hook(datetime, _format_generic)
    return conv


GENERIC = _generic_converter()
TEXT = st.text(max_size=20)
UTC_MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES)
TASKS = st.builds(
    m.DownloadTask, task_id=TEXT, trace_id=TEXT, attachment_url=TEXT, blob_path=TEXT, event_type=TEXT,
    event_subtype=TEXT, source_system=TEXT, original_timestamp=UTC_MOMENTS, created_at=UTC_MOMENTS,
    assignment_id=st.none() | TEXT, estimate_version=st.none() | TEXT,
    retry_count=st.integers(0, m.MAX_RETRY_COUNT - 1), retry_at=st.none() | UTC_MOMENTS,
    last_error=st.none() | st.builds(m.ErrorInfo, TEXT, TEXT), metadata=st.dictionaries(TEXT, TEXT, max_size=3),
    schema_version=st.integers(0, 3),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(TASKS, min_size=1, max_size=3))
def test_a_task_serialises_byte_for_byte_as_cattrs_would(tasks: list) -> None:
    generic = GENERIC
    for task in tasks + tasks:  # twice: the second time with its timestamps' texts remembered
        assert m.dumps(task) == orjson.dumps(generic.unstructure(task))
        failed = m.FailedDownload(task=task, error_category="validation", error_message="x", attempts=1,
                                  failed_at=task.created_at, stage="ingest")
        assert m.dumps(failed) == orjson.dumps(generic.unstructure(failed))


def test_tasks_sharing_a_timestamp_each_get_their_own_text() -> None:
    first, second = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    task = m.DownloadTask(task_id="a" * 32, trace_id="T", attachment_url="u", blob_path="p", event_type="e",
                          event_subtype="e", source_system="s", original_timestamp=first, created_at=first)
    texts = [orjson.loads(m.dumps(attrs.evolve(task, original_timestamp=when, created_at=when)))
             for when in (first, first, second, first)]
    assert [t["created_at"] for t in texts] == [m.format_ts(w) for w in (first, first, second, first)]
    assert [t["original_timestamp"] for t in texts] == [t["created_at"] for t in texts]


def _retry_count_attrs_way() -> object:
    return attrs.validators.and_(attrs.validators.ge(0), attrs.validators.lt(m.MAX_RETRY_COUNT))


@settings(max_examples=500, deadline=None)
@given(st.integers(-10, 10) | st.integers(m.MAX_RETRY_COUNT - 5, m.MAX_RETRY_COUNT + 5) | st.integers()
       | st.floats(allow_nan=True) | st.text(max_size=3) | st.none() | st.booleans())
def test_the_retry_count_check_is_the_attrs_pair(value: object) -> None:
    field = attrs.fields(m.DownloadTask).retry_count
    assert _outcome(m._retry_count_in_range, None, field, value) == _outcome(_retry_count_attrs_way(), None, field,
                                                                                value)


TIMESTAMP_PIECES = st.sampled_from(["2026", "-", "11", "25", "T", "t", " ", "19", ":", "09", "22", ".", "123",
                                    "123456", "Z", "z", "+00:00", "-00:00", "+05:30", "+0000", "0001", "9999",
                                    "12", "31", "23", "59", "00", "01", "W", "١"])


@settings(max_examples=5000, deadline=None)
@given(st.lists(TIMESTAMP_PIECES, max_size=10).map("".join) | st.text(max_size=40)
       | st.datetimes(timezones=ZONES).map(datetime.isoformat) | st.none() | st.integers())
def test_parse_ts_fast_path_is_the_full_rules(text: object) -> None:
    fast, full = _outcome(m.parse_ts, text), _outcome(m._parse_ts, text, "timestamp")
    assert fast == full
    if isinstance(fast, datetime):
        assert fast.utcoffset() == full.utcoffset()


def _parse_event_as_it_was(data):
    if data is None:
        raise m.InvalidMessage("empty message (no value)")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise m.InvalidMessage(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise m.InvalidMessage(f"not a JSON object but {type(obj).__name__}")
    event_type = m._required_str(obj, "event_type")
    payload = obj.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise m.InvalidMessage("payload must be an object")
    raw_attachments = obj.get("attachments")
    return m.EventMessage(
        trace_id=m._required_str(obj, "trace_id", limit=m.MAX_TRACE_ID),
        event_type=event_type,
        timestamp=m._parse_ts(obj["timestamp"], "timestamp") if "timestamp" in obj else m._missing("timestamp"),
        event_subtype=m._optional_str(obj, "event_subtype", event_type.rsplit(".", 1)[-1]),
        source_system=m._optional_str(obj, "source_system", "unknown"),
        assignment_id=m._optional_str(obj, "assignment_id"),
        estimate_version=m._optional_str(obj, "estimate_version"),
        attachments=() if raw_attachments is None else _attachments_as_they_were(raw_attachments),
    )


def _attachments_as_they_were(raw):
    if not isinstance(raw, list) or not all(isinstance(u, str) and u for u in raw):
        raise m.InvalidMessage("attachments must be a list of URL strings")
    return tuple(dict.fromkeys(raw))


SMALL_INTS = st.integers(-(2**63), 2**63 - 1)
FIELD_VALUES = (st.none() | st.text(max_size=6) | st.sampled_from(["", "a.b.c", "x" * 1025, "x" * 257]) | SMALL_INTS
                | st.lists(st.text(max_size=3) | SMALL_INTS, max_size=3) | st.dictionaries(TEXT, TEXT)
                | st.sampled_from(["2026-11-25T19:09:22.123Z", "2026-11-25T19:09:22+01:00", "2026-11-25",
                                   "0001-01-01T00:00:00+05:00"]))
EVENTS = st.dictionaries(st.sampled_from(["trace_id", "event_type", "timestamp", "event_subtype", "source_system",
                                          "assignment_id", "estimate_version", "attachments", "payload", "other"]),
                         FIELD_VALUES).map(orjson.dumps)


@settings(max_examples=3000, deadline=None)
@given(EVENTS | st.binary(max_size=20) | st.none())
def test_parse_event_judges_as_it_did(data: bytes | None) -> None:
    assert _outcome(m.parse_event, data) == _outcome(_parse_event_as_it_was, data)
