"""The child side of the fork: a worker process from its first instruction to ``os._exit``."""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn

from kafkapipe import log as klog
from kafkapipe.config import Config
from kafkapipe.exitcodes import EXIT_FAILURE
from kafkapipe.sdnotify import NOTIFY_ENV
from kafkapipe.supervision.slot import HeartbeatThrottle, WorkerSlot
from kafkapipe.worker import WorkerControl, run_worker

log = logging.getLogger("kafkapipe.supervisor")  # the supervisor's logger: its messages keep one name

PR_SET_PDEATHSIG = 1
IGNORED_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)  # aimed at the supervisor (or a closing terminal)


def load_libc() -> ctypes.CDLL | None:
    """libc for ``prctl``; loaded by the supervisor once, before any fork."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def worker_process(
    slot: WorkerSlot,
    config: Config,
    *,
    parent: int,
    libc: ctypes.CDLL | None,
    leave_parent: Callable[[], None],
    mask: Iterable[int],
) -> NoReturn:
    """Runs in the forked child and never returns into the supervisor's loop.

    ``leave_parent`` undoes what the child inherited from the supervisor (its
    signal handlers, its files); ``mask`` is the signal mask to restore once
    the worker's own handlers are in place.
    """
    code = EXIT_FAILURE
    try:
        leave_parent()
        code = _boot(slot, config, parent, libc, mask)
    except BaseException:  # the child must reach os._exit whatever happened
        with contextlib.suppress(BaseException):
            log.exception("%s worker crashed", slot.stage)
    finally:
        klog.flush()
        os._exit(code)


def _boot(slot: WorkerSlot, config: Config, parent: int, libc: ctypes.CDLL | None, mask: Iterable[int]) -> int:
    for sig in IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if not die_with_parent(libc, parent):
        return EXIT_FAILURE
    for name in NOTIFY_ENV:
        os.environ.pop(name, None)
    # A stale-heartbeat kill sends SIGABRT first: every thread's stack goes to the crash
    # report (logged by the supervisor), and no core file is written.
    faulthandler.enable(slot.crash.fd, all_threads=True)
    _disable_core_dumps()
    klog.bind(stage=slot.stage, worker=slot.age)
    heartbeat = slot.heartbeat
    interval = min(1.0, config.supervisor.heartbeat_timeout / 10)
    control = WorkerControl(on_heartbeat=HeartbeatThrottle(heartbeat, interval), on_ready=heartbeat.mark_ready)
    control.install_signal_handlers()
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a TERM that came during the fork lands now
    return run_worker(config, slot.stage, control)


def die_with_parent(libc: ctypes.CDLL | None, parent: int) -> bool:
    """Ask the kernel to SIGKILL us when the supervisor dies; False if it already has."""
    if libc is not None and sys.platform.startswith("linux"):
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    # The parent may have died between fork and prctl; then we were re-parented already.
    return os.getppid() == parent


def _disable_core_dumps() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if soft != 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
