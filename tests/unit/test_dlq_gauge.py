"""The DLQ-size gauge: set from the broker read, kept when the broker is away, never read early."""

from __future__ import annotations

import logging

from kafkapipe import config as cfg
from kafkapipe import metrics
from kafkapipe.dlq.sizes import DlqSize
from kafkapipe.stages.dlqgauge import DlqGauge


def value(topic: str, state: str) -> float:
    return metrics.DLQ_ENTRIES.labels(topic, state)._value.get()


def test_a_refresh_sets_unacknowledged_and_total_per_existing_dlq():
    config = cfg.from_mapping({}, "t.toml")
    sizes = [DlqSize("g1.dlq", True, 3, 7), DlqSize("g1.events.dlq", False)]
    DlqGauge(config, read=lambda c, t: sizes).refresh()
    assert (value("g1.dlq", "unacknowledged"), value("g1.dlq", "total")) == (3, 7)
    assert ("g1.events.dlq", "total") not in metrics.DLQ_ENTRIES._metrics


def test_an_unreachable_broker_keeps_the_last_value_and_says_so(caplog):
    config = cfg.from_mapping({}, "t.toml")
    DlqGauge(config, read=lambda c, t: [DlqSize("g2.dlq", True, 5, 5)]).refresh()

    def down(c, t):
        raise RuntimeError("broker unreachable")

    with caplog.at_level(logging.WARNING):
        DlqGauge(config, read=down).refresh()
    assert value("g2.dlq", "unacknowledged") == 5
    assert "broker unreachable" in caplog.text


def test_a_gauge_closed_before_its_first_period_never_reads():
    reads = []
    gauge = DlqGauge(cfg.from_mapping({}, "t.toml"), every=30.0, read=lambda c, t: reads.append(1) or []).start()
    gauge.close()
    assert reads == [] and not gauge._thread.is_alive()


def test_the_thread_refreshes_every_period():
    reads: list[int] = []
    gauge = DlqGauge(cfg.from_mapping({}, "t.toml"), every=0.01, read=lambda c, t: reads.append(1) or [])
    gauge.start()
    try:
        from kafkahelpers import wait_for

        wait_for(lambda: len(reads) >= 3, 10, "three refreshes")
    finally:
        gauge.close()
    assert not gauge._thread.is_alive()
