"""The consume loop's metrics: gathered per iteration, the same totals as one write per event."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from kafkapipe.kafka.loopmetrics import LoopMetrics, ProcessingTimes

BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def histogram_samples(hist: Histogram) -> dict[tuple[str, str], float]:
    [family] = hist.collect()
    return {(s.name, s.labels.get("le", "")): s.value for s in family.samples if not s.name.endswith("_created")}


def pair() -> tuple[Histogram, Histogram]:
    def one() -> Histogram:
        return Histogram("t_seconds", "t", ["stage"], buckets=BUCKETS, registry=CollectorRegistry())

    return one(), one()


# Dyadic fractions and the bounds themselves: sums exact in binary, and every "<=" edge.
EXACT = [0.0, 0.0009765625, 0.001, 0.005, 0.0078125, 0.01, 0.125, 0.25, 0.5, 1.0, 2.5, 4.0, 10.0, 30.0, 60.0,
         300.0, 512.0, 1024.0, 0.03125]


def test_observations_gathered_and_flushed_give_the_totals_of_direct_observes():
    direct, gathered = pair()
    times = ProcessingTimes(gathered.labels("s"))
    for rounds in range(3):  # flushed several times, each adding to what is there
        for seconds in EXACT * (rounds + 1):
            direct.labels("s").observe(seconds)
            times.observe(seconds)
        times.flush()
        assert histogram_samples(gathered) == histogram_samples(direct)


def test_random_times_give_the_same_counts_and_a_sum_equal_but_for_rounding():
    direct, gathered = pair()
    times = ProcessingTimes(gathered.labels("s"))
    rng = random.Random(11)
    for _ in range(5000):
        seconds = rng.choice([rng.uniform(0, 0.02), rng.expovariate(2.0), rng.choice(BUCKETS)])
        direct.labels("s").observe(seconds)
        times.observe(seconds)
    times.flush()
    want, got = histogram_samples(direct), histogram_samples(gathered)
    assert {k: v for k, v in got.items() if k[0] != "t_seconds_sum"} == {
        k: v for k, v in want.items() if k[0] != "t_seconds_sum"}
    assert got[("t_seconds_sum", "")] == pytest.approx(want[("t_seconds_sum", "")], rel=1e-12)


def test_nothing_is_written_before_a_flush_and_a_flush_without_observations_writes_nothing():
    _, gathered = pair()
    times = ProcessingTimes(gathered.labels("s"))
    times.observe(0.2)
    assert histogram_samples(gathered)[("t_seconds_count", "")] == 0
    times.flush()
    times.flush()
    assert histogram_samples(gathered)[("t_seconds_count", "")] == 1


def test_a_nan_counts_in_no_bucket_as_with_observe():
    direct, gathered = pair()
    times = ProcessingTimes(gathered.labels("s"))
    direct.labels("s").observe(math.nan)
    times.observe(math.nan)
    times.flush()
    want, got = histogram_samples(direct), histogram_samples(gathered)
    assert math.isnan(got.pop(("t_seconds_sum", ""))) and math.isnan(want.pop(("t_seconds_sum", "")))
    assert got == want


def test_the_loop_metrics_write_processing_times_on_flush():
    from kafkapipe import metrics

    child = metrics.PROCESSING_SECONDS.labels("loopmetrics-test")
    before = child._sum.get()
    loop_metrics = LoopMetrics("loopmetrics-test")
    loop_metrics.processing(0.5)
    loop_metrics.processing(0.25)
    assert child._sum.get() == before
    loop_metrics.flush()
    assert child._sum.get() == before + 0.75


def test_a_loop_iteration_writes_one_processing_time_per_finished_message():
    from loophelpers import OUT, P0, ScriptedStage, T, make

    from kafkapipe import metrics
    from kafkapipe.kafka.loop import Done, Output

    stage = ScriptedStage(lambda msg: Done([Output(OUT, None, b"x")] if msg.offset() % 2 else []))

    def count() -> float:
        child = metrics.PROCESSING_SECONDS.labels(stage.name)
        return sum(bucket.get() for bucket in child._buckets)

    loop, consumer, _, _ = make(stage)
    for _ in range(7):
        consumer.add(T, 0)
    consumer.assign(P0)
    before = count()
    loop._iterate()
    assert count() == before + 7 and consumer.stored[P0] == 7
