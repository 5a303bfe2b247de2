"""The deadline watchdog fires each deadline on time, whatever order they were armed in."""

from __future__ import annotations

import time

from kafkapipe.download.http import Watchdog


def test_a_short_deadline_armed_after_long_ones_still_fires_on_time():
    watchdog = Watchdog()
    try:
        long_ones = [watchdog.arm(30) for _ in range(3)]
        short = watchdog.arm(0.05)
        later = watchdog.arm(0.1)  # due after the earliest: the sleeping thread needs no wake-up
        started = time.monotonic()
        while not (short.expired and later.expired) and time.monotonic() - started < 5:
            time.sleep(0.01)
        assert short._fired and later._fired
        assert not any(d._fired for d in long_ones)
    finally:
        watchdog.stop()


def test_deadlines_armed_in_time_order_all_fire():
    watchdog = Watchdog()
    try:
        deadlines = [watchdog.arm(0.02 * (i + 1)) for i in range(5)]
        started = time.monotonic()
        while not all(d._fired for d in deadlines) and time.monotonic() - started < 5:
            time.sleep(0.01)
        assert all(d._fired for d in deadlines)
    finally:
        watchdog.stop()
