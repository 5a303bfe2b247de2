"""Identical log lines are rate-limited; different ones are not."""

from __future__ import annotations

import logging

from kafkapipe.log import RepeatFilter


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("kafkapipe.x", logging.INFO, __file__, 1, msg, args, None)


def test_identical_lines_pass_once_per_interval_and_report_what_was_held_back():
    clock = Clock()
    repeats = RepeatFilter(interval=10.0, clock=clock)
    passed = [repeats.filter(record("circuit open for %s", "h")) for _ in range(500)]
    assert passed.count(True) == 1
    assert repeats.filter(record("circuit open for %s", "other"))  # a different line passes
    clock.now = 10.0
    again = record("circuit open for %s", "h")
    assert repeats.filter(again) and again.repeated == 499


def test_memory_is_bounded():
    repeats = RepeatFilter(interval=10.0, max_keys=100, clock=Clock())
    for i in range(10_000):
        assert repeats.filter(record("line %d", i))
    assert len(repeats._seen) <= 100
