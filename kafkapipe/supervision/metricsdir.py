"""The directory of prometheus_client's multiprocess files: chosen, locked, emptied, then
handed to :func:`kafkapipe.metrics.use_directory`, the one place the metrics mode is set."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping

import attrs

from kafkapipe import metrics
from kafkapipe.supervision.fds import close_fd

log = logging.getLogger("kafkapipe.supervisor")  # the supervisor's logger: its messages keep one name


def choose_metrics_dir(configured: str, environ: Mapping[str, str]) -> tuple[str, bool]:
    """(path, is_temp): ``metrics.multiproc_dir``, else ``$RUNTIME_DIRECTORY/metrics``, else a temp dir."""
    if configured:
        return os.path.abspath(configured), False
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return os.path.join(runtime, "metrics"), False
    return tempfile.mkdtemp(prefix="kafkapipe-metrics-"), True


def prepare_metrics_dir(path: str) -> int:
    """Create ``path``, lock it against a second supervisor and delete old ``*.db`` files.

    Returns the lock's file descriptor (kept open for the supervisor's life).
    Only ``*.db`` files are removed, so a mistaken path never loses anything else.
    """
    os.makedirs(path, mode=0o750, exist_ok=True)
    lock_fd = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise RuntimeError(f"another supervisor is using the metrics directory {path}") from None
    for name in os.listdir(path):
        if name.endswith(".db"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
    return lock_fd


@attrs.define
class MetricsDir:
    """The supervisor's metrics directory: chosen, then locked, emptied of old files and exported.

    :meth:`prepare` hands the directory to :func:`kafkapipe.metrics.use_directory`.
    """

    path: str
    is_temp: bool
    lock_fd: int = -1

    @classmethod
    def choose(cls, configured: str, environ: Mapping[str, str]) -> MetricsDir:
        return cls(*choose_metrics_dir(configured, environ))

    def prepare(self) -> None:
        """Lock and empty the directory, then make it the metrics directory of this process tree."""
        self.lock_fd = prepare_metrics_dir(self.path)
        metrics.use_directory(self.path)

    def mark_dead(self, pid: int) -> None:
        """Drop a dead process's files, so its ``live*`` gauges disappear from ``/metrics``."""
        from prometheus_client import multiprocess

        try:
            multiprocess.mark_process_dead(pid, self.path)
        except OSError as exc:
            log.warning("cannot remove metric files of pid %d: %s", pid, exc)

    def close(self) -> None:
        """At the supervisor's exit: remove a temporary directory, else this process's files; unlock."""
        if self.is_temp:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self.mark_dead(os.getpid())
        self.lock_fd = close_fd(self.lock_fd)
