"""One worker as the supervisor sees it: its slot, and the files it shares with the worker across the fork.

Liveness and readiness travel through one unlinked file per worker, created
before the fork: the worker sets its mtime (heartbeat) and writes ``R`` at
offset 0 (ready); the supervisor ``fstat``s and ``pread``s it. No pipes to
drain, nothing for a dead worker to leave behind. A second unlinked file
receives the worker's stack dumps.
"""

from __future__ import annotations

import contextlib
import os
import time

import attrs

from kafkapipe.exitcodes import EXIT_BOOT_ERROR
from kafkapipe.supervision.fds import anonymous_file, close_fd
from kafkapipe.supervision.planning import SlotView


class Heartbeat:
    """An unlinked file shared across the fork: the worker touches it, the supervisor reads it.

    mtime = the worker's last heartbeat on the monotonic clock (system-wide on
    Linux, so both processes agree); byte 0 = ``B`` booting / ``R`` ready.
    """

    def __init__(self) -> None:
        self.fd = anonymous_file("kafkapipe-heartbeat")
        os.pwrite(self.fd, b"B", 0)
        self.touch()

    def touch(self, now: float | None = None) -> None:
        stamp = time.monotonic() if now is None else now
        os.utime(self.fd, (stamp, stamp))

    def last_beat(self) -> float:
        return os.fstat(self.fd).st_mtime

    def mark_ready(self) -> None:
        os.pwrite(self.fd, b"R", 0)
        self.touch()

    def is_ready(self) -> bool:
        return os.pread(self.fd, 1, 0) == b"R"

    def close(self) -> None:
        self.fd = close_fd(self.fd)


class HeartbeatThrottle:
    """The worker's ``on_heartbeat``: at most one ``utime`` per ``interval``, however often it is called."""

    def __init__(self, heartbeat: Heartbeat, interval: float) -> None:
        self._heartbeat = heartbeat
        self._interval = interval
        self._last = float("-inf")

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._heartbeat.touch(now)


class CrashReport:
    """An unlinked file the worker's faulthandler writes to (SIGABRT from a stale kill, SIGSEGV …).

    The supervisor reads it after the reap and logs it as one JSON line,
    instead of a multi-line stack dump interleaved with other processes' logs.
    """

    LIMIT = 64 * 1024

    def __init__(self) -> None:
        self.fd = anonymous_file("kafkapipe-crash")

    def read(self) -> str:
        if self.fd < 0:
            return ""
        with contextlib.suppress(OSError):
            return os.pread(self.fd, self.LIMIT, 0).decode("utf-8", "replace").strip()
        return ""

    def close(self) -> None:
        self.fd = close_fd(self.fd)


@attrs.define(eq=False)
class WorkerSlot:
    stage: str
    age: int
    generation: int
    heartbeat: Heartbeat
    started_at: float
    crash: CrashReport = attrs.Factory(CrashReport)
    pid: int = 0
    ready: bool = False
    ready_at: float | None = None  # monotonic time the supervisor saw it ready
    retiring: bool = False
    stop_deadline: float = float("inf")
    killed: bool = False
    stale: bool = False
    aborted_at: float | None = None

    def view(self, now: float, grace: float) -> SlotView:
        """For the planner; a worker booting for longer than ``grace`` counts as ready (a reload must go on)."""
        ready = self.ready or now - self.started_at >= grace
        return SlotView(self.pid, self.age, self.generation, ready, self.retiring)

    def exit_cause(self, code: int) -> str:
        """The ``cause`` label of an exit with ``code`` (negative: killed by that signal)."""
        if code == EXIT_BOOT_ERROR:
            return "boot_error"
        if self.stale:
            return "stale"
        if self.retiring:
            return "stopped"
        return "signaled" if code < 0 else "exited"

    def close_files(self) -> None:
        self.heartbeat.close()
        self.crash.close()
