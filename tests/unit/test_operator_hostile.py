"""Hostile input to the operator's commands: filters, /metrics text, and what reaches a terminal."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from kafkapipe.dlq.entries import DeadLetter
from kafkapipe.dlq.errors import UsageError
from kafkapipe.dlq.selection import CATEGORIES, category, parse_since
from kafkapipe.dlq.stats import _text, stats_of
from kafkapipe.status.scrape import parse
from kafkapipe.trace import render
from kafkapipe.trace.model import Attachment, Attempt, EventDeadLetter, Trace

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def raw_controls(text: str) -> list[str]:
    return [ch for ch in text if not ch.isprintable() and ch not in "\n"]


@given(st.text(max_size=80))
def test_since_is_a_time_or_a_usage_error(text):
    try:
        value = parse_since(text)
    except UsageError:
        return
    assert value.tzinfo is not None


@given(st.text(max_size=40))
def test_category_is_a_real_one_or_an_argument_error(text):
    try:
        assert category(text) in CATEGORIES
    except argparse.ArgumentTypeError as exc:
        assert text not in CATEGORIES and "one of:" in str(exc)


@settings(max_examples=200)
@given(st.text(max_size=400))
def test_metrics_text_is_read_or_refused_never_crashes(body):
    try:
        view = parse("u", body)
    except ValueError:
        return
    assert isinstance(view.workers, dict)


hostile = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40)


@settings(max_examples=100)
@given(hostile, hostile, hostile)
def test_trace_text_escapes_whatever_the_records_hold(trace_id, url, error):
    attempt = Attempt(attempt=1, outcome="dead-lettered", at=NOW, source="dlq", where=f"dlq:0:{error}",
                      category=error, error=error)
    trace = Trace(trace_id, (Attachment(url, url, url, (attempt,)),), (EventDeadLetter("e:0:0", None, error),), ())
    text = render.as_text(trace, NOW)
    assert raw_controls(text) == []
    assert raw_controls(render.as_json(trace, NOW)) == []


@settings(max_examples=100)
@given(hostile, hostile, st.binary(max_size=64))
def test_stats_text_escapes_hosts_categories_and_ids(key, category_header, value):
    entry = DeadLetter(partition=0, offset=0, timestamp_ms=None, key=key,
                       headers={"error-category": category_header, "trace_id": key}, value=value,
                       failed=None, event=True)
    text = _text(stats_of("topic", [entry], NOW))
    assert raw_controls(text) == []
