"""The directory of prometheus_client's multiprocess files, prepared before prometheus_client is imported.

prometheus_client fixes its mode when it is imported: ``PROMETHEUS_MULTIPROC_DIR``
must be set by then, so the supervisor opens the directory first and imports
:mod:`kafkapipe.metrics` only afterwards. This module imports prometheus_client
only inside :meth:`MetricsDir.mark_dead`, which runs after that.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping

import attrs

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


def export_metrics_dir(path: str) -> None:
    """Point prometheus_client at ``path``; must happen before it is imported (the mode is fixed then)."""
    values = sys.modules.get("prometheus_client.values")
    if "kafkapipe.metrics" in sys.modules or (
        values is not None and not getattr(values.ValueClass, "_multiprocess", False)
    ):
        raise RuntimeError(
            "prometheus_client was imported before the metrics directory was set; "
            "import kafkapipe.supervisor before anything that imports kafkapipe.metrics"
        )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


@attrs.define
class MetricsDir:
    """The supervisor's metrics directory: chosen, then locked, emptied of old files and exported.

    :meth:`prepare` sets ``PROMETHEUS_MULTIPROC_DIR``; import prometheus_client
    (or :mod:`kafkapipe.metrics`) only after it.
    """

    path: str
    is_temp: bool
    lock_fd: int = -1

    @classmethod
    def choose(cls, configured: str, environ: Mapping[str, str]) -> MetricsDir:
        return cls(*choose_metrics_dir(configured, environ))

    def prepare(self) -> None:
        """Lock and empty the directory, then export it: import prometheus_client only after this."""
        self.lock_fd = prepare_metrics_dir(self.path)
        export_metrics_dir(self.path)

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
