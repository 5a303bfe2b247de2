"""The supervisor: forks one process per stage worker and keeps them running.

Modelled on gunicorn's arbiter. Signal handlers only queue the signal number;
a wake-up pipe (``signal.set_wakeup_fd``) ends the main loop's ``select`` so
the loop, not the handler, does the work. Each tick the loop reaps children,
kills workers whose heartbeat went stale, spawns or retires workers towards
each stage's target, and publishes health to ``/healthz``, ``/readyz`` and
systemd.

Liveness and readiness travel through one unlinked file per worker, created
before the fork: the worker sets its mtime (heartbeat) and writes ``R`` at
offset 0 (ready); the supervisor ``fstat``s and ``pread``s it. No pipes to
drain, nothing for a dead worker to leave behind.

Prometheus multiprocess mode is fixed when prometheus_client is imported, so
this module imports :mod:`kafkapipe.metrics` only after
:func:`prepare_metrics_dir` has set ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import faulthandler
import fcntl
import logging
import os
import queue
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import attrs

from kafkapipe import log as klog
from kafkapipe.config import STAGES, Config, SupervisorConfig, load
from kafkapipe.errors import ConfigError
from kafkapipe.sdnotify import NOTIFY_ENV, Notifier
from kafkapipe.worker import EXIT_BOOT_ERROR, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, WorkerControl, run_worker

if TYPE_CHECKING:
    from kafkapipe.metrics_server import Health, MetricsServer

log = logging.getLogger(__name__)

PROG = "kafkapipe-supervisor"
TICK = 0.5  # seconds between housekeeping passes when no signal arrives
STOP_TICK = 0.1
KILL_AFTER_ABORT = 1.0  # a stale worker gets SIGABRT (stack dump), then SIGKILL this much later
REAP_AFTER_KILL = 5.0
HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)
PR_SET_PDEATHSIG = 1


# ----------------------------------------------------------------------------- pure logic
def backoff_delay(failures: int, base: float, maximum: float) -> float:
    """Wait before restarting after ``failures`` failures in a row: 0, base, 2·base, 4·base … ≤ maximum.

    The first failure restarts at once: a single crash (an OOM kill, a
    ``kill -9``) should cost one rebalance, not a pause.
    """
    if failures <= 1:
        return 0.0
    return min(maximum, base * 2.0 ** (failures - 2))


@attrs.define
class RestartPolicy:
    """Per-stage restart bookkeeping: exponential backoff and crash-loop detection.

    Every unplanned exit counts at once, boot failures included; more than
    ``max_restarts`` of them inside ``window`` seconds is a crash loop, and
    the supervisor gives up so systemd's restart policy decides what next.
    A worker that ran for a whole window before dying resets the backoff.
    """

    backoff_max: float
    max_restarts: int
    window: float
    base: float = 1.0
    consecutive: int = 0
    not_before: float = 0.0
    failures: collections.deque[float] = attrs.Factory(collections.deque)

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> RestartPolicy:
        return cls(config.restart_backoff_max, config.crash_loop_restarts, config.crash_loop_window)

    def configure(self, config: SupervisorConfig) -> None:
        self.backoff_max = config.restart_backoff_max
        self.max_restarts = config.crash_loop_restarts
        self.window = config.crash_loop_window

    def record_failure(self, now: float, uptime: float, boot_error: bool = False) -> float:
        """Note a failure; returns the delay before the next spawn of this stage."""
        if uptime >= self.window and not boot_error:
            self.consecutive = 0
        self.consecutive += 1
        self.failures.append(now)
        self._prune(now)
        delay = backoff_delay(self.consecutive, self.base, self.backoff_max)
        self.not_before = now + delay
        return delay

    def may_spawn(self, now: float) -> bool:
        return now >= self.not_before

    def crash_looping(self, now: float) -> bool:
        self._prune(now)
        return len(self.failures) > self.max_restarts

    def recent_failures(self, now: float) -> int:
        self._prune(now)
        return len(self.failures)

    def _prune(self, now: float) -> None:
        while self.failures and now - self.failures[0] > self.window:
            self.failures.popleft()


@attrs.frozen
class SlotView:
    """What the planner needs to know about one worker."""

    pid: int
    age: int
    generation: int
    ready: bool
    retiring: bool = False


@attrs.frozen
class Plan:
    spawn: int = 0
    retire: tuple[int, ...] = ()


def plan_stage(slots: Iterable[SlotView], target: int, generation: int) -> Plan:
    """What to do next for one stage so it converges on ``target`` workers of ``generation``.

    Steady state: spawn what is missing, retire the oldest extras (TTOU).
    After a reload (workers of an older generation exist) replace one at a
    time: wait while a new worker is not ready yet or an old one is still
    draining; then retire an old worker if there are more than ``target``,
    else start one new worker. Capacity never drops below ``target - 1``.
    """
    slots = list(slots)
    active = [s for s in slots if not s.retiring]
    new = [s for s in active if s.generation >= generation]
    old = sorted((s for s in active if s.generation < generation), key=lambda s: s.age)
    if old:
        if any(s.retiring for s in slots) or not all(s.ready for s in new):
            return Plan()
        if len(new) + len(old) > target:
            return Plan(retire=(old[0].pid,))
        if len(new) < target:
            return Plan(spawn=1)
        return Plan()
    if len(new) < target:
        return Plan(spawn=target - len(new))
    extras = sorted(new, key=lambda s: s.age)[: len(new) - target]
    return Plan(retire=tuple(s.pid for s in extras))


@attrs.frozen
class StageCount:
    expected: int
    alive: int
    ready: int
    pids: tuple[int, ...] = ()


def status_line(counts: Mapping[str, StageCount], state: str, restarts: int) -> str:
    """One line for ``systemctl status``: ``running; ingest 1/1, download 2/2 ready; 0 restarts``."""
    parts = ", ".join(f"{stage} {c.ready}/{c.expected}" for stage, c in counts.items())
    return f"{state}; {parts} ready; {restarts} restarts"


def parse_stages(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"ingest,download"`` → ("ingest", "download"); None/empty → None (all). Raises ConfigError."""
    if not text:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    unknown = [name for name in names if name not in STAGES]
    if unknown:
        raise ConfigError(
            f"--stages: unknown stage(s) {', '.join(unknown)}; expected some of {', '.join(STAGES)}"
        )
    return names or None


# ------------------------------------------------------------------------ metrics directory
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


# ------------------------------------------------------------------------------ heartbeat
class Heartbeat:
    """An unlinked file shared across the fork: the worker touches it, the supervisor reads it.

    mtime = the worker's last heartbeat on the monotonic clock (system-wide on
    Linux, so both processes agree); byte 0 = ``B`` booting / ``R`` ready.
    """

    def __init__(self) -> None:
        self.fd = _anonymous_file("kafkapipe-heartbeat")
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
        self.fd = _close(self.fd)


class CrashReport:
    """An unlinked file the worker's faulthandler writes to (SIGABRT from a stale kill, SIGSEGV …).

    The supervisor reads it after the reap and logs it as one JSON line,
    instead of a multi-line stack dump interleaved with other processes' logs.
    """

    LIMIT = 64 * 1024

    def __init__(self) -> None:
        self.fd = _anonymous_file("kafkapipe-crash")

    def read(self) -> str:
        if self.fd < 0:
            return ""
        with contextlib.suppress(OSError):
            return os.pread(self.fd, self.LIMIT, 0).decode("utf-8", "replace").strip()
        return ""

    def close(self) -> None:
        self.fd = _close(self.fd)


def _anonymous_file(name: str) -> int:
    try:
        return os.memfd_create(name, os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd, path = tempfile.mkstemp(prefix=f"{name}-")
        os.unlink(path)
        return fd


def _close(fd: int) -> int:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    return -1


class _Beat:
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
    retiring: bool = False
    stop_deadline: float = float("inf")
    killed: bool = False
    stale: bool = False
    aborted_at: float | None = None


# ----------------------------------------------------------------------------- the arbiter
class Supervisor:
    """``Supervisor(config_path, stages=None).run()`` → exit status (CONTRACT §6)."""

    def __init__(self, config_path: str | os.PathLike[str], stages: Sequence[str] | None = None) -> None:
        self.config_path = os.path.abspath(config_path)
        self.only = tuple(stages) if stages else None
        self.config = Config()
        self.pid = os.getpid()
        self.workers: dict[int, WorkerSlot] = {}
        self.policies: dict[str, RestartPolicy] = {}
        self.pending_restarts: collections.Counter[str] = collections.Counter()
        self.generation = 0
        self.age = 0
        self.download_delta = 0
        self.restarts = 0
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake_r = self._wake_w = -1
        self._lock_fd = -1
        self._metrics_dir = ""
        self._metrics_dir_is_temp = False
        self._m: ModuleType | None = None
        self._server: MetricsServer | None = None
        self._notifier = Notifier()
        self._health: Health | None = None
        self._health_cls: type[Health] | None = None
        self._state = "starting"
        self._stop: str | None = None  # "graceful" / "quick" once asked to stop
        self._announced_ready = False
        self._reloading = False
        self._last_status = ""
        self._last_watchdog = 0.0
        self._unhealthy_since: float | None = None
        self._libc: ctypes.CDLL | None = None

    @property
    def stages(self) -> tuple[str, ...]:
        return self.only or STAGES

    # ---------------------------------------------------------------------- start and stop
    def run(self) -> int:
        try:
            self.config = load(self.config_path)
            self._check(self.config)
        except ConfigError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        klog.setup(self.config.logging.level, self.config.logging.format)
        klog.bind(stage="supervisor")
        try:
            self._start()
        except (OSError, RuntimeError) as exc:
            log.error("cannot start: %s", exc)
            self._cleanup()
            return EXIT_FAILURE
        try:
            code = self._loop()
        except Exception:  # a bug in this loop: say so, stop the workers, exit as a runtime failure
            log.exception("supervisor failed; stopping the workers")
            with contextlib.suppress(Exception):
                self._shutdown(quick=False)
            code = EXIT_FAILURE
        finally:
            self._cleanup()
        log.info("supervisor exiting with status %d", code)
        klog.flush()
        return code

    def _check(self, config: Config) -> None:
        if sum(self._configured(config, stage) for stage in self.stages) == 0:
            raise ConfigError(
                f"{config.source}: no worker processes to run: stages.<name>.processes is 0 for "
                f"{', '.join(self.stages)}"
            )

    def _start(self) -> None:
        self._metrics_dir, self._metrics_dir_is_temp = choose_metrics_dir(
            self.config.metrics.multiproc_dir, os.environ
        )
        self._lock_fd = prepare_metrics_dir(self._metrics_dir)
        export_metrics_dir(self._metrics_dir)
        from kafkapipe import metrics
        from kafkapipe.metrics_server import Health, MetricsServer

        self._m = metrics
        self._health_cls = Health
        self._health = Health()
        self._server = MetricsServer(self.config.metrics.bind, lambda: self._health, self._metrics_dir)
        self._server.start()
        self._libc = _load_libc()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._on_signal)
        self.policies = {stage: RestartPolicy.from_config(self.config.supervisor) for stage in self.stages}
        host, port = self._server.address
        log.info(
            "supervisor started: stages %s, metrics on %s:%d, metrics files in %s",
            ",".join(self.stages), host, port, self._metrics_dir,
        )

    def _cleanup(self) -> None:
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, signal.SIG_DFL)
        if self._server is not None:
            self._server.stop()
            self._server = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._metrics_dir:
            if self._metrics_dir_is_temp:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
            else:
                self._mark_dead(os.getpid())
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._notifier.close()

    # --------------------------------------------------------------------------- main loop
    def _loop(self) -> int:
        code = EXIT_OK
        self._manage()
        self._publish()
        while self._stop is None:
            for sig in self._wait_signals(TICK):
                self._dispatch(sig)
            self._reap()
            looping = self._crash_looping()
            if looping:
                log.critical(
                    "stage %s is crash-looping (%d failures within %gs): giving up",
                    looping, self.policies[looping].recent_failures(time.monotonic()),
                    self.config.supervisor.crash_loop_window,
                )
                self._stop = "graceful"
                code = EXIT_FAILURE
                break
            self._murder()
            self._manage()
            self._publish()
        self._shutdown(quick=self._stop == "quick")
        return code

    def _on_signal(self, signum: int, frame: object) -> None:
        # Reentrant-safe and nothing else: no logging, no locks.
        self._signals.put_nowait(signum)

    def _wait_signals(self, timeout: float) -> list[int]:
        with contextlib.suppress(InterruptedError):
            select.select([self._wake_r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        received = []
        while True:
            try:
                received.append(self._signals.get_nowait())
            except queue.Empty:
                return received

    def _dispatch(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return  # reaped right after
        name = signal.Signals(sig).name
        log.info("received %s", name)
        if self._stop is not None and sig != signal.SIGQUIT:
            return  # already stopping: a reload or scaling now would only slow the drain
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._stop = self._stop or "graceful"
        elif sig == signal.SIGQUIT:
            self._stop = "quick"
        elif sig == signal.SIGHUP:
            self._reload()
        elif sig == signal.SIGTTIN:
            self._scale_download(+1)
        elif sig == signal.SIGTTOU:
            self._scale_download(-1)

    # ---------------------------------------------------------------------------- targets
    @staticmethod
    def _configured(config: Config, stage: str) -> int:
        return config.stages.processes(stage)

    def _target(self, stage: str) -> int:
        target = self._configured(self.config, stage)
        if stage == "download":
            target = max(0, target + self.download_delta)
        return target

    def _scale_download(self, step: int) -> None:
        if "download" not in self.stages:
            log.warning("not running the download stage: ignoring the scaling signal")
            return
        current = self._target("download")
        if step < 0 and current <= 1:
            log.info("download stage already at %d process(es): not scaling down", current)
            return
        self.download_delta += step
        log.info("download stage: %d -> %d process(es)", current, self._target("download"))

    def _reload(self) -> None:
        assert self._m is not None
        try:
            new = load(self.config_path)
            self._check(new)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running workers: %s", exc)
            self._m.RELOADS.labels("rejected").inc()
            return
        old, self.config = self.config, new
        klog.setup(new.logging.level, new.logging.format)
        for key in ("bind", "multiproc_dir"):
            if getattr(new.metrics, key) != getattr(old.metrics, key):
                log.warning("metrics.%s changed: it takes effect at the next start", key)
        for policy in self.policies.values():
            policy.configure(new.supervisor)
        if self.download_delta:
            log.info("reload resets the TTIN/TTOU adjustment of the download stage")
        self.download_delta = 0
        self.generation += 1
        self._reloading = True
        self._m.RELOADS.labels("applied").inc()
        self._notifier.reloading(status="reloading: replacing workers one at a time")
        log.info(
            "configuration reloaded (generation %d): replacing workers one at a time; targets %s",
            self.generation, ", ".join(f"{s}={self._target(s)}" for s in self.stages),
        )

    # ---------------------------------------------------------------------------- workers
    def _manage(self) -> None:
        now = time.monotonic()
        grace = self.config.supervisor.heartbeat_timeout
        for stage in self.stages:
            slots = [slot for slot in self.workers.values() if slot.stage == stage]
            views = [
                SlotView(s.pid, s.age, s.generation, s.ready or now - s.started_at >= grace, s.retiring)
                for s in slots
            ]
            target = self._target(stage)
            plan = plan_stage(views, target, self.generation)
            for pid in plan.retire:
                self._retire(self.workers[pid], "no longer needed" if not self._reloading else "replaced")
            deficit = max(0, target - sum(1 for s in slots if not s.retiring))
            self.pending_restarts[stage] = min(self.pending_restarts[stage], deficit)
            if not plan.spawn:
                continue
            if not self.policies[stage].may_spawn(now):
                continue
            for _ in range(plan.spawn):
                if not self._spawn(stage):
                    break

    def _spawn(self, stage: str) -> bool:
        assert self._m is not None
        self.age += 1
        heartbeat = Heartbeat()
        slot = WorkerSlot(stage, self.age, self.generation, heartbeat, time.monotonic())
        klog.flush()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            heartbeat.close()
            slot.crash.close()
            log.error("cannot fork a %s worker: %s", stage, exc)
            self.policies[stage].record_failure(time.monotonic(), 0.0)
            return False
        if pid == 0:
            self._worker_main(slot, blocked)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        slot.pid = pid
        self.workers[pid] = slot
        if self.pending_restarts[stage] > 0:
            self.pending_restarts[stage] -= 1
            self.restarts += 1
            self._m.WORKER_RESTARTS.labels(stage).inc()
        log.info("started %s worker pid %d (#%d, generation %d)", stage, pid, slot.age, slot.generation)
        return True

    def _retire(self, slot: WorkerSlot, why: str) -> None:
        slot.retiring = True
        slot.stop_deadline = time.monotonic() + self.config.supervisor.shutdown_timeout
        log.info("stopping %s worker pid %d (%s)", slot.stage, slot.pid, why)
        self._kill(slot, signal.SIGTERM)

    def _kill(self, slot: WorkerSlot, sig: int) -> None:
        if sig == signal.SIGKILL:
            slot.killed = True
        try:
            os.kill(slot.pid, sig)
        except ProcessLookupError:
            pass  # already gone; the reaper will see it

    def _murder(self) -> None:
        """Kill workers that outstayed their drain deadline or whose heartbeat went stale.

        Both get SIGABRT first, so faulthandler writes every thread's stack to the crash
        report (what was it stuck on?), then SIGKILL one tick later.
        """
        now = time.monotonic()
        timeout = self.config.supervisor.heartbeat_timeout
        for slot in list(self.workers.values()):
            if slot.killed:
                continue
            if slot.aborted_at is not None:
                if now - slot.aborted_at >= KILL_AFTER_ABORT:
                    self._kill(slot, signal.SIGKILL)
            elif slot.retiring:
                if now >= slot.stop_deadline:
                    if self._stop == "quick":
                        self._kill(slot, signal.SIGKILL)
                        continue
                    log.warning(
                        "%s worker pid %d did not finish draining in time: killing it", slot.stage, slot.pid
                    )
                    self._abort(slot, now)
            else:
                silent = now - slot.heartbeat.last_beat()
                if silent > timeout:
                    log.error(
                        "%s worker pid %d sent no heartbeat for %.0fs: killing and replacing it",
                        slot.stage, slot.pid, silent,
                    )
                    slot.stale = True
                    self._abort(slot, now)

    def _abort(self, slot: WorkerSlot, now: float) -> None:
        slot.aborted_at = now
        self._kill(slot, signal.SIGABRT)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._mark_dead(pid)
            slot = self.workers.pop(pid, None)
            if slot is not None:
                self._on_exit(slot, status)

    def _on_exit(self, slot: WorkerSlot, status: int) -> None:
        assert self._m is not None
        now = time.monotonic()
        slot.heartbeat.close()
        dump = slot.crash.read()
        slot.crash.close()
        if dump:
            log.error("%s worker pid %d crash report", slot.stage, slot.pid, extra={"worker_stack": dump})
        code = os.waitstatus_to_exitcode(status)
        cause = _exit_cause(slot, code)
        self._m.WORKER_EXITS.labels(slot.stage, cause).inc()
        how = f"exited with status {code}" if code >= 0 else f"was killed by {_signame(-code)}"
        uptime = now - slot.started_at
        if cause == "stopped":
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "%s worker pid %d %s after stopping", slot.stage, slot.pid, how)
            return
        if code == -signal.SIGKILL and not slot.killed:
            how += " (out of memory?)"
        if self._stop is not None:
            log.warning("%s worker pid %d %s during shutdown", slot.stage, slot.pid, how)
            return
        if slot.stage not in self.policies:
            return
        delay = self.policies[slot.stage].record_failure(now, uptime, boot_error=cause == "boot_error")
        self.pending_restarts[slot.stage] += 1
        what = "failed to boot and " if cause == "boot_error" else ""
        log.error(
            "%s worker pid %d %s%s after %.1fs; restarting in %.1fs",
            slot.stage, slot.pid, what, how, uptime, delay,
        )

    def _crash_looping(self) -> str | None:
        now = time.monotonic()
        for stage, policy in self.policies.items():
            if policy.crash_looping(now):
                return stage
        return None

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        try:
            multiprocess.mark_process_dead(pid, self._metrics_dir)
        except OSError as exc:
            log.warning("cannot remove metric files of pid %d: %s", pid, exc)

    # ------------------------------------------------------------------------------ health
    def _counts(self) -> dict[str, StageCount]:
        now = time.monotonic()
        for slot in self.workers.values():
            if not slot.ready and not slot.retiring and slot.heartbeat.is_ready():
                slot.ready = True
                log.info("%s worker pid %d is ready (%.1fs)", slot.stage, slot.pid, now - slot.started_at)
        counts = {}
        for stage in self.stages:
            active = [s for s in self.workers.values() if s.stage == stage and not s.retiring]
            alive = [s for s in active if not s.stale]
            counts[stage] = StageCount(
                expected=self._target(stage),
                alive=len(alive),
                ready=sum(1 for s in alive if s.ready),
                pids=tuple(sorted(s.pid for s in alive)),
            )
        return counts

    def _publish(self) -> None:
        assert self._m is not None
        now = time.monotonic()
        counts = self._counts()
        alive = all(c.alive >= c.expected for c in counts.values())
        ready = all(c.ready >= c.expected for c in counts.values())
        rolled = not any(s.generation < self.generation for s in self.workers.values())
        if self._stop is not None:
            self._state = "stopping"
        elif self._reloading:
            if ready and rolled:
                self._reloading = False
                log.info("reload complete: every worker runs generation %d", self.generation)
                self._notifier.ready(status_line(counts, "running", self.restarts))
            self._state = "reloading" if self._reloading else "running"
        elif ready and not self._announced_ready:
            self._announced_ready = True
            log.info("every worker is ready")
            self._notifier.ready(status_line(counts, "running", self.restarts))
        if self._announced_ready and self._state == "starting":
            self._state = "running"
        for stage, c in counts.items():
            self._m.WORKERS.labels(stage, "expected").set(c.expected)
            self._m.WORKERS.labels(stage, "alive").set(c.alive)
            self._m.WORKERS.labels(stage, "ready").set(c.ready)
        detail = {
            stage: {"expected": c.expected, "alive": c.alive, "ready": c.ready, "pids": list(c.pids)}
            for stage, c in counts.items()
        }
        stopping = self._stop is not None
        self._health = self._health_cls(
            alive=alive and not stopping, ready=ready and not stopping, state=self._state, detail=detail
        )
        line = status_line(counts, self._state, self.restarts)
        if line != self._last_status:
            self._last_status = line
            self._notifier.status(line)
        self._unhealthy_since = None if alive else (self._unhealthy_since or now)
        self._watchdog(now)

    def _watchdog(self, now: float) -> None:
        """Ping while healthy; a stage down longer than it takes to restart lets systemd's watchdog act."""
        interval = self._notifier.watchdog_interval
        if interval is None or now - self._last_watchdog < interval:
            return
        sup = self.config.supervisor
        grace = sup.heartbeat_timeout + sup.restart_backoff_max
        if self._unhealthy_since is None or now - self._unhealthy_since < grace or self._stop is not None:
            self._last_watchdog = now
            self._notifier.watchdog()

    # ---------------------------------------------------------------------------- shutdown
    def _shutdown(self, quick: bool) -> None:
        timeout = 0.0 if quick else self.config.supervisor.shutdown_timeout
        log.info("stopping %d worker(s), %gs to drain", len(self.workers), timeout)
        self._notifier.stopping(status=f"stopping: draining {len(self.workers)} worker(s)")
        deadline = time.monotonic() + timeout
        for slot in self.workers.values():
            if not slot.retiring:
                slot.retiring = True
                self._kill(slot, signal.SIGTERM)
            slot.stop_deadline = min(slot.stop_deadline, deadline)
        while self.workers:
            now = time.monotonic()
            for sig in self._wait_signals(STOP_TICK):
                if sig in (signal.SIGINT, signal.SIGQUIT):
                    log.info("received %s while draining: killing the workers now", signal.Signals(sig).name)
                    for slot in self.workers.values():
                        slot.stop_deadline = now
            self._reap()
            self._murder()
            self._publish()
            if all(slot.killed for slot in self.workers.values()):
                break
        self._reap_killed()

    def _reap_killed(self) -> None:
        deadline = time.monotonic() + REAP_AFTER_KILL
        while self.workers and time.monotonic() < deadline:
            self._wait_signals(STOP_TICK)
            self._reap()
        for slot in self.workers.values():
            log.error("%s worker pid %d did not exit after SIGKILL", slot.stage, slot.pid)

    # ------------------------------------------------------------------------- in the child
    def _worker_main(self, slot: WorkerSlot, mask: Iterable[int]) -> NoReturn:
        """Runs in the forked child and never returns into the supervisor's loop."""
        code = EXIT_FAILURE
        try:
            code = self._worker_boot(slot, mask)
        except BaseException:  # the child must reach os._exit whatever happened
            with contextlib.suppress(BaseException):
                log.exception("%s worker crashed", slot.stage)
        finally:
            klog.flush()
            os._exit(code)

    def _worker_boot(self, slot: WorkerSlot, mask: Iterable[int]) -> int:
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)  # aimed at the supervisor (or a closing terminal)
        if not _die_with_parent(self._libc, self.pid):
            return EXIT_FAILURE
        self._close_inherited(slot)
        for name in NOTIFY_ENV:
            os.environ.pop(name, None)
        # A stale-heartbeat kill sends SIGABRT first: every thread's stack goes to the crash
        # report (logged by the supervisor), and no core file is written.
        faulthandler.enable(slot.crash.fd, all_threads=True)
        soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        if soft != 0:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
        klog.bind(stage=slot.stage, worker=slot.age)
        heartbeat = slot.heartbeat
        interval = min(1.0, self.config.supervisor.heartbeat_timeout / 10)
        control = WorkerControl(on_heartbeat=_Beat(heartbeat, interval), on_ready=heartbeat.mark_ready)
        control.install_signal_handlers()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a TERM that came during the fork lands now
        return run_worker(self.config, slot.stage, control)

    def _close_inherited(self, slot: WorkerSlot) -> None:
        if self._server is not None:
            self._server.close_in_child()
        for fd in (self._wake_r, self._wake_w, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for other in self.workers.values():
            if other is not slot:
                other.heartbeat.close()
                other.crash.close()
        self._notifier.close()


def _exit_cause(slot: WorkerSlot, code: int) -> str:
    if code == EXIT_BOOT_ERROR:
        return "boot_error"
    if slot.stale:
        return "stale"
    if slot.retiring:
        return "stopped"
    return "signaled" if code < 0 else "exited"


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _die_with_parent(libc: ctypes.CDLL | None, parent: int) -> bool:
    """Ask the kernel to SIGKILL us when the supervisor dies; False if it already has."""
    if libc is not None and sys.platform.startswith("linux"):
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    # The parent may have died between fork and prctl; then we were re-parented already.
    return os.getppid() == parent


# ---------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the pipeline's stages as supervised worker processes until SIGTERM/SIGINT.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="pipeline configuration (TOML)")
    parser.add_argument(
        "--stages", default="", metavar="A,B",
        help=f"run only these stages (default: all of {','.join(STAGES)})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``kafkapipe-supervisor --config FILE [--stages a,b]``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        stages = parse_stages(args.stages)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return Supervisor(args.config, stages).run()


if __name__ == "__main__":
    sys.exit(main())
