"""A worker's own CPU, memory and build, as the metrics the dashboard and `status` read."""

from __future__ import annotations

import platform

from kafkapipe import metrics, processmetrics


def test_resident_memory_is_read_from_proc_and_grows_with_what_the_process_holds():
    before = processmetrics.resident_bytes()
    ballast = bytearray(64 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
    assert processmetrics.resident_bytes() >= before + 32 * 1024 * 1024
    del ballast


def test_a_sample_sets_cpu_and_memory_for_the_stage():
    sum(i * i for i in range(200_000))  # some CPU to see
    processmetrics.sample("teststage")
    assert metrics.PROCESS_CPU.labels("teststage")._value.get() > 0
    assert metrics.PROCESS_RSS.labels("teststage")._value.get() > 1024 * 1024


def test_build_info_names_the_version_and_python():
    processmetrics.announce_build()
    children = metrics.BUILD_INFO._metrics
    assert any(python == platform.python_version() and child._value.get() == 1
               for (version, python), child in children.items() if version)
