"""Legacy retry-queue rows → tasks and routes: the task is ingest's own, hostile rows are BadRow only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkapipe.config import Config, MigrateConfig, TopicsConfig
from kafkapipe.messages import EventMessage, make_task_id
from kafkapipe.migrate.legacy import BadRow, to_task
from kafkapipe.migrate.routing import DLQ_EXPIRED, DLQ_PERMANENT, PENDING, RETRY, Router
from kafkapipe.stages.ingest import IngestStage
from kafkapipe.stages.outcomes import MAX_JITTER

MAPPING = MigrateConfig()
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
URL = "https://files.example.com/claims/a%20b.pdf"


def row(**over):
    base = {"trace_id": "t-1", "attachment_url": URL, "retry_count": 1, "next_retry_at": None,
            "last_error": "HTTP 503", "created_at": "2026-11-20T08:00:00.000+00:00", "source_system": "xact",
            "event_type": "xact.claims.documentsReceived", "id": 42}
    return {**base, **over}


def test_task_is_the_one_ingest_makes_for_the_same_event():
    legacy = to_task(1, row(), MAPPING, NOW).task
    event = EventMessage("t-1", "xact.claims.documentsReceived", datetime(2026, 11, 20, 8, tzinfo=UTC),
                         "documentsReceived", "xact", attachments=(URL,))
    fresh = IngestStage._task(event, URL, NOW)
    assert legacy.task_id == fresh.task_id == make_task_id("t-1", URL)
    assert legacy.blob_path == fresh.blob_path
    assert legacy.retry_count == 1 and legacy.last_error.message == "HTTP 503"
    assert legacy.metadata["legacy_id"] == "42"


@pytest.mark.parametrize("over, reason", [
    ({"attachment_url": None}, "attachment_url is empty"),
    ({"attachment_url": "   "}, "attachment_url is empty"),
    ({"created_at": "2026-11-20T08:00:00"}, "created_at is not an RFC 3339"),
    ({"created_at": datetime(2026, 11, 20)}, "created_at has no time zone"),
    ({"next_retry_at": "soon"}, "next_retry_at is not an RFC 3339"),
    ({"retry_count": -1}, "retry_count is not a count"),
    ({"retry_count": "three"}, "retry_count is not a count"),
    ({"trace_id": "a\x00b"}, "trace_id holds a NUL"),
    ({"trace_id": "x" * 300}, "trace_id is longer"),
])
def test_bad_rows_say_why(over, reason):
    with pytest.raises(BadRow, match=reason):
        to_task(7, row(**over), MAPPING, NOW)


values = st.one_of(st.none(), st.text(), st.integers(), st.floats(), st.booleans(), st.datetimes(),
                   st.datetimes(timezones=st.just(UTC)), st.binary())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(row())), values))
def test_any_row_is_a_task_or_a_bad_row(hostile):
    try:
        task = to_task(1, {**row(), **hostile}, MAPPING, NOW).task
    except BadRow:
        return
    assert task.task_id == make_task_id(task.trace_id, task.attachment_url)


def router(now=NOW):
    config = Config(topics=TopicsConfig(retry_delays=["5m", "10m", "20m"]))
    return Router(config, now=now.timestamp())


def test_routes():
    r = router()
    at = lambda delta: (NOW + delta).isoformat()  # noqa: E731
    assert r.plan(to_task(1, row(next_retry_at=None), MAPPING, NOW)).route == PENDING
    assert r.plan(to_task(1, row(next_retry_at=at(-timedelta(hours=1))), MAPPING, NOW)).route == PENDING
    soon = r.plan(to_task(1, row(next_retry_at=at(timedelta(minutes=7))), MAPPING, NOW))
    assert (soon.route, soon.topic, soon.due) == (RETRY, "attachments.downloads.retry.10m", NOW + timedelta(minutes=7))
    far = r.plan(to_task(1, row(next_retry_at=at(timedelta(minutes=80))), MAPPING, NOW))
    assert far.topic == "attachments.downloads.retry.20m" and far.due == NOW + timedelta(minutes=80)
    used_up = r.plan(to_task(1, row(retry_count=3), MAPPING, NOW))
    assert used_up.route == DLQ_PERMANENT and [o.topic for o in used_up.outputs] == [
        "attachments.downloads.results", "attachments.downloads.dlq"]
    expired = f"{URL}?se=2026-11-01&sig=abc"
    assert r.plan(to_task(1, row(attachment_url=expired), MAPPING, NOW)).route == DLQ_EXPIRED


@pytest.mark.parametrize("ahead", [timedelta(hours=5), datetime(9999, 12, 31, tzinfo=UTC) - NOW])
def test_a_legacy_due_time_further_ahead_than_any_retry_of_ours_is_cut_to_the_latest(ahead):
    # The longest retry topic (20m), plus the longest Retry-After honoured (1h), plus the jitter (30s).
    latest = NOW + timedelta(minutes=20, hours=1, seconds=MAX_JITTER)
    planned = router().plan(to_task(1, row(next_retry_at=(NOW + ahead).isoformat()), MAPPING, NOW))
    assert (planned.route, planned.topic, planned.due) == (RETRY, "attachments.downloads.retry.20m", latest)
    [out] = planned.outputs
    assert dict(out.headers)["retry-at"] == str(int(latest.timestamp() * 1000)).encode()


def test_offsets_reset_knows_every_stage_and_its_topics():
    from kafkapipe.config import STAGES
    from kafkapipe.kafka.offsets_reset import STAGE_TOPICS

    topics = TopicsConfig(retry_delays=["1s", "2s"])
    assert set(STAGE_TOPICS) == set(STAGES)
    assert STAGE_TOPICS["delay"](topics) == topics.retry_topics
    assert STAGE_TOPICS["download"](topics) == [topics.pending]


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(), st.text(alphabet=st.characters(exclude_characters="/?#@\\")))
def test_compare_never_shows_query_fragment_or_userinfo(path, query, secret):
    from kafkapipe.migrate.compare import shown_url

    shown = shown_url(f"https://user:{secret}@files.example.com/{path}?sig={query}#{secret}")
    assert "?" not in shown and "#" not in shown and "user:" not in shown
    assert shown_url("https://files.example.com/a/b.pdf?X-Amz-Signature=abc") == "https://files.example.com/a/b.pdf"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["trace_id", "attachment_url", "sha256", "bytes", "blob_path", "created_at",
                                        "source_system"]), values))
def test_any_legacy_inventory_row_is_a_success_or_a_bad_row(hostile):
    from kafkapipe.migrate.importing import to_result
    from kafkapipe.paths import is_valid

    base = {"trace_id": "t", "attachment_url": URL, "sha256": "a" * 64, "bytes": 5, "blob_path": None,
            "created_at": "2026-11-20T08:00:00Z", "source_system": "xact"}
    try:
        result = to_result({**base, **hostile}, MAPPING)
    except BadRow:
        return
    assert result.status == "success" and is_valid(result.blob_path)
    assert result.sha256 is None or len(result.sha256) == 64
    assert result.bytes is None or result.bytes >= 0
