"""A worker's own CPU and memory, and the build it runs, as metrics.

prometheus_client's process collector describes only the process that serves ``/metrics`` (the
supervisor), so each worker writes its own figures into the multiprocess directory, where the
``liveall`` mode keeps one series per live pid.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

from kafkapipe import metrics

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """Resident set size from /proc/self/statm (pages), 0 where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def sample(stage: str) -> None:
    times = os.times()
    metrics.PROCESS_CPU.labels(stage).set(times.user + times.system)
    metrics.PROCESS_RSS.labels(stage).set(resident_bytes())


def announce_build() -> None:
    try:
        version = metadata.version("kafkapipe")
    except metadata.PackageNotFoundError:  # run from a checkout without installing
        version = "unknown"
    metrics.BUILD_INFO.labels(version, platform.python_version()).set(1)
