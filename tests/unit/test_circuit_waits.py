"""Circuit waits: counted in the task, bounded by number and by time, robust to hostile metadata."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkapipe import config as cfg
from kafkapipe.config import TopicsConfig
from kafkapipe.messages import DownloadTask, ErrorInfo, evolve, utcnow
from kafkapipe.stages import circuitwaits
from kafkapipe.stages.outcomes import Outcomes


def task(**metadata: str) -> DownloadTask:
    now = utcnow()
    return DownloadTask(task_id="t" * 32, trace_id="tr", attachment_url="https://h/a.pdf", blob_path="p/a.pdf",
                        event_type="e", event_subtype="e", source_system="s", original_timestamp=now,
                        created_at=now, metadata=dict(metadata))


def test_waits_are_bounded_by_number():
    waited = task()
    for i in range(3):
        assert circuitwaits.may_wait(waited, 1000.0 + i, max_waits=3, max_wait=3600)
        waited = circuitwaits.one_more(waited, 1000.0 + i)
    assert not circuitwaits.may_wait(waited, 1003.0, max_waits=3, max_wait=3600)
    assert waited.metadata[circuitwaits.SINCE] == "1000.000", "the first wait is kept"


def test_waits_are_bounded_by_time():
    waited = circuitwaits.one_more(task(), 1000.0)
    assert circuitwaits.may_wait(waited, 1599.0, max_waits=100, max_wait=600)
    assert not circuitwaits.may_wait(waited, 1600.0, max_waits=100, max_wait=600)


def test_zero_waits_means_every_rejection_is_an_attempt():
    assert not circuitwaits.may_wait(task(), 1000.0, max_waits=0, max_wait=600)


@pytest.mark.parametrize("count", ["x", "-1", "1e400", "²", "9" * 5000])
def test_unreadable_counts_take_an_attempt_instead_of_waiting(count):
    assert not circuitwaits.may_wait(task(circuit_waits=count), 1000.0, max_waits=10, max_wait=600)


@given(st.dictionaries(st.sampled_from([circuitwaits.WAITS, circuitwaits.SINCE, "other"]), st.text(max_size=40)))
def test_any_metadata_gives_a_verdict_and_one_more_wait_never_raises(metadata):
    hostile = task(**metadata)
    verdict = circuitwaits.may_wait(hostile, 1000.0, max_waits=10, max_wait=600)
    assert verdict in (True, False)
    waited = circuitwaits.one_more(hostile, 1000.0)
    assert circuitwaits.CircuitWaits.of(waited) is not None


def test_a_circuit_wait_goes_to_the_topic_covering_the_probe_and_keeps_the_attempt():
    outcomes = Outcomes(TopicsConfig(retry_delays=["2s", "4s"]), "download", rand=lambda: 0.0, clock=lambda: 1000.0)
    waited = evolve(task(), retry_count=1)
    _, short = outcomes.circuit_open(waited, ErrorInfo("circuit_open", "open"), 0.0, retry_after=1.0)
    _, long = outcomes.circuit_open(waited, ErrorInfo("circuit_open", "open"), 0.0, retry_after=3.0)
    assert short.topic.endswith(".2s") and long.topic.endswith(".4s")
    assert orjson.loads(long.value)["retry_count"] == 1
    assert int(dict(long.headers)["retry-at"]) == 1004 * 1000, "at least the topic's own delay"


def test_circuit_settings_are_checked_at_load():
    with pytest.raises(cfg.ConfigError, match="circuit_minimum_calls"):
        cfg.from_mapping({"download": {"circuit_minimum_calls": 60, "circuit_window_size": 50}}, "x.toml")
    with pytest.raises(cfg.ConfigError, match="circuit_failure_rate"):
        cfg.from_mapping({"download": {"circuit_failure_rate": 1.5}}, "x.toml")
