"""The supervisor: forks one process per stage worker and keeps them running.

Modelled on gunicorn's arbiter. Signal handlers only queue the signal number;
a wake-up pipe (``signal.set_wakeup_fd``) ends the main loop's ``select`` so
the loop, not the handler, does the work (``handle_<signal>``). Each tick the
loop reaps children, kills workers whose heartbeat went stale, spawns or
retires workers towards each stage's target, and publishes health to
``/healthz``, ``/readyz`` and systemd.

The pieces it uses live in :mod:`kafkapipe.supervision`: the worker's slot and
the files it shares with the supervisor (``slot``), restart backoff and
crash-loop detection (``restarts``), scaling and rolling-reload plans
(``planning``), stage counts and the systemd status line (``status``), the
child side of the fork (``child``) and the metrics directory (``metricsdir``).

:meth:`MetricsDir.prepare` chooses the metrics directory before any metric is used
(:mod:`kafkapipe.metrics`), so the workers it forks write multiprocess metrics.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import queue
import select
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kafkapipe import log as klog
from kafkapipe import metrics
from kafkapipe.config import STAGES, Config, load, parse_stages
from kafkapipe.errors import ConfigError
from kafkapipe.exitcodes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from kafkapipe.kafka.topiccheck import BrokerUnreachable, check_topics
from kafkapipe.metrics_server import Health, MetricsServer
from kafkapipe.preflight import check_or_raise
from kafkapipe.sdnotify import Notifier
from kafkapipe.stages.registry import SCALED
from kafkapipe.supervision.child import load_libc, worker_process
from kafkapipe.supervision.fds import close_fd
from kafkapipe.supervision.metricsdir import MetricsDir
from kafkapipe.supervision.planning import plan_stage
from kafkapipe.supervision.restarts import ExitKind, RestartPolicy, classify_exit
from kafkapipe.supervision.slot import Heartbeat, WorkerSlot
from kafkapipe.supervision.status import StageCount, status_line

if TYPE_CHECKING:
    import ctypes

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


class Supervisor:
    """``Supervisor(config_path, stages=None).run()`` → exit status."""

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
        self.scale_delta: collections.Counter[str] = collections.Counter()  # TTIN/TTOU per stage
        self.restarts = 0
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake_r = self._wake_w = -1
        self._metrics_dir: MetricsDir | None = None
        self._server: MetricsServer | None = None
        self._notifier = Notifier()
        self._health = Health()
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
        """Exit status; a ConfigError before anything starts goes to :func:`main`."""
        self.config = load(self.config_path)
        self._check(self.config, ports=True)
        klog.setup(self.config.logging.level, self.config.logging.format)
        klog.bind(stage="supervisor")
        refused = self._check_topics_at_start()
        if refused is not None:
            klog.flush()
            self._notifier.close()
            return refused
        try:
            self.start()
        except (OSError, RuntimeError) as exc:
            log.error("cannot start: %s", exc)
            self._cleanup()
            return EXIT_FAILURE
        try:
            code = self._loop()
        except Exception:  # a bug in this loop: say so, stop the workers, exit as a runtime failure
            log.exception("supervisor failed; stopping the workers")
            with contextlib.suppress(Exception):
                self.stop_workers(quick=False)
            code = EXIT_FAILURE
        finally:
            self._cleanup()
        log.info("supervisor exiting with status %d", code)
        klog.flush()
        return code

    def _check(self, config: Config, *, ports: bool) -> None:
        """What load() cannot know: this supervisor's stages and this host (:mod:`kafkapipe.preflight`)."""
        if sum(self._configured(config, stage) for stage in self.stages) == 0:
            raise ConfigError(
                f"{config.source}: no worker processes to run: stages.<name>.processes is 0 for "
                f"{', '.join(self.stages)}"
            )
        check_or_raise(config, self.stages, ports=ports)

    def _check_topics_at_start(self) -> int | None:
        """None when the topics are fine; else the exit status, within seconds, never a silent wait.

        A missing topic does not appear by itself (production brokers do not auto-create) and a
        worker subscribed to one waits forever for an assignment, so the supervisor exits 2 at once
        naming the topics and the command that creates them. A broker that does not answer within
        ``supervisor.broker_check_timeout`` is a runtime failure (exit 1): systemd tries again later.
        """
        bootstrap = self.config.kafka.bootstrap_servers
        self._notifier.status(f"starting: checking topics on {bootstrap}")
        try:
            found = check_topics(self.config, self.config.supervisor.broker_check_timeout)
        except BrokerUnreachable as exc:
            log.critical("cannot start: %s", exc)
            self._notifier.status(f"failed: broker {bootstrap} unreachable")
            return EXIT_FAILURE
        if found.ok:
            return None
        problems = found.problems(self.config_path)
        for problem in problems:
            log.critical("cannot start: %s", problem)
        self._notifier.status("failed: " + "; ".join(problems))
        return EXIT_CONFIG

    def start(self) -> None:
        self._metrics_dir = MetricsDir.choose(self.config.metrics.multiproc_dir, os.environ)
        self._metrics_dir.prepare()  # before the first metric: the workers inherit multiprocess mode
        self._server = MetricsServer(self.config.metrics.bind, lambda: self._health, self._metrics_dir.path)
        self._server.start()
        self._libc = load_libc()
        self.init_signals()
        self.policies = {stage: RestartPolicy.from_config(self.config.supervisor) for stage in self.stages}
        host, port = self._server.address
        log.info(
            "supervisor started: stages %s, metrics on %s:%d, metrics files in %s",
            ",".join(self.stages), host, port, self._metrics_dir.path,
        )

    def _cleanup(self) -> None:
        self._reset_signals()
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._wake_r = close_fd(self._wake_r)
        self._wake_w = close_fd(self._wake_w)
        if self._metrics_dir is not None:
            self._metrics_dir.close()
        self._notifier.close()

    # --------------------------------------------------------------------------- main loop
    def _loop(self) -> int:
        code = EXIT_OK
        self.manage_workers()
        self._publish()
        while self._stop is None:
            for sig in self._wait_signals(TICK):
                self._dispatch(sig)
            self.reap_workers()
            if self._give_up_on_crash_loop():
                code = EXIT_FAILURE
                break
            self.murder_workers()
            self.manage_workers()
            self._publish()
        self.stop_workers(quick=self._stop == "quick")
        return code

    def _give_up_on_crash_loop(self) -> bool:
        """True, and a graceful stop under way, if a stage failed too often within the crash-loop window."""
        now = time.monotonic()
        for stage, policy in self.policies.items():
            if policy.crash_looping(now):
                log.critical(
                    "stage %s is crash-looping (%d failures within %gs): giving up",
                    stage, policy.recent_failures(now), self.config.supervisor.crash_loop_window,
                )
                self._stop = "graceful"
                return True
        return False

    # ----------------------------------------------------------------------------- signals
    def init_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self.queue_signal)

    def _reset_signals(self) -> None:
        """Default dispositions and no wake-up fd: at exit, and first thing in a forked worker."""
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, signal.SIG_DFL)

    def queue_signal(self, signum: int, frame: object) -> None:
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
        getattr(self, "handle_" + name.removeprefix("SIG").lower())()

    def handle_term(self) -> None:
        """Drain the workers and exit."""
        self._stop = self._stop or "graceful"

    def handle_int(self) -> None:
        """As TERM."""
        self.handle_term()

    def handle_quit(self) -> None:
        """Stop without draining (also while a drain is under way)."""
        self._stop = "quick"

    def handle_hup(self) -> None:
        """Reload the configuration and replace the workers one at a time."""
        self.reload()

    def handle_ttin(self) -> None:
        """One more worker of each stage that scales (the registry's ``scales``: download)."""
        self._scale(+1)

    def handle_ttou(self) -> None:
        """One worker fewer of each stage that scales (never below one)."""
        self._scale(-1)

    # ---------------------------------------------------------------------------- targets
    @staticmethod
    def _configured(config: Config, stage: str) -> int:
        return config.stages.processes(stage)

    def _target(self, stage: str) -> int:
        target = self._configured(self.config, stage)
        if stage in SCALED:
            target = max(0, target + self.scale_delta[stage])
        return target

    def _scale(self, step: int) -> None:
        scaled = [stage for stage in SCALED if stage in self.stages]
        if not scaled:
            log.warning("not running a stage that scales (%s): ignoring the scaling signal", ", ".join(SCALED))
        for stage in scaled:
            current = self._target(stage)
            if step < 0 and current <= 1:
                log.info("%s stage already at %d process(es): not scaling down", stage, current)
                continue
            self.scale_delta[stage] += step
            log.info("%s stage: %d -> %d process(es)", stage, current, self._target(stage))

    def reload(self) -> None:
        try:
            new = load(self.config_path)
            self._check(new, ports=False)
            self._check_topic_change(new)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running workers: %s", exc)
            metrics.RELOADS.labels("rejected").inc()
            self._notifier.status(f"reload rejected, keeping the running workers: {exc}")
            return
        self._apply_config(new)
        self.generation += 1
        self._reloading = True
        metrics.RELOADS.labels("applied").inc()
        self._notifier.reloading(status="reloading: replacing workers one at a time")
        log.info(
            "configuration reloaded (generation %d): replacing workers one at a time; targets %s",
            self.generation, ", ".join(f"{s}={self._target(s)}" for s in self.stages),
        )

    def _check_topic_change(self, new: Config) -> None:
        """Raises ConfigError for a topic change a rolling reload cannot apply safely.

        Retry topics change only at a restart: during a rollout, download workers of the old
        generation still write to the old retry topics, which new delay workers no longer read,
        so tasks would be stranded there. (At start, :func:`check_topics` refuses to run while a
        retry topic that is no longer configured still holds tasks.) Other renamed topics must exist.
        """
        old = self.config.topics
        if (new.topics.retry_prefix, new.topics.retry_delays) != (old.retry_prefix, old.retry_delays):
            raise ConfigError(
                f"{new.source}: topics.retry_delays / retry_prefix changed ({', '.join(old.retry_topics)} -> "
                f"{', '.join(new.topics.retry_topics)}): retry topics change only at a restart, because during "
                "a rolling reload old download workers would keep writing to retry topics the new delay "
                "workers no longer read"
            )
        if new.topics == old and new.kafka.bootstrap_servers == self.config.kafka.bootstrap_servers:
            return
        try:
            found = check_topics(new, new.supervisor.broker_check_timeout)
        except BrokerUnreachable as exc:
            raise ConfigError(f"{new.source}: cannot check the new topics: {exc}") from None
        if not found.ok:
            raise ConfigError(f"{new.source}: " + "; ".join(found.problems(self.config_path)))

    def _apply_config(self, new: Config) -> None:
        old, self.config = self.config, new
        klog.setup(new.logging.level, new.logging.format)
        for key in ("bind", "multiproc_dir"):
            if getattr(new.metrics, key) != getattr(old.metrics, key):
                log.warning("metrics.%s changed: it takes effect at the next start", key)
        for policy in self.policies.values():
            policy.configure(new.supervisor)
        adjusted = [stage for stage in SCALED if self.scale_delta[stage]]
        if adjusted:
            log.info("reload resets the TTIN/TTOU adjustment of %s", ", ".join(adjusted))
        self.scale_delta.clear()

    # ---------------------------------------------------------------------------- workers
    def manage_workers(self) -> None:
        """Retire and spawn so every stage converges on its target; during a reload, one worker at a time."""
        now = time.monotonic()
        grace = self.config.supervisor.heartbeat_timeout
        for stage in self.stages:
            slots = [slot for slot in self.workers.values() if slot.stage == stage]
            target = self._target(stage)
            plan = plan_stage([s.view(now, grace) for s in slots], target, self.generation)
            for pid in plan.retire:
                self._retire(self.workers[pid], "no longer needed" if not self._reloading else "replaced")
            deficit = max(0, target - sum(1 for s in slots if not s.retiring))
            self.pending_restarts[stage] = min(self.pending_restarts[stage], deficit)
            if plan.spawn and self.policies[stage].may_spawn(now):
                self.spawn_workers(stage, plan.spawn)

    def spawn_workers(self, stage: str, count: int) -> None:
        for _ in range(count):
            if not self.spawn_worker(stage):
                break

    def spawn_worker(self, stage: str) -> bool:
        """Fork one worker of ``stage``; False if the fork failed (which counts as a failure of the stage)."""
        self.age += 1
        slot = WorkerSlot(stage, self.age, self.generation, Heartbeat(), time.monotonic())
        klog.flush()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            slot.close_files()
            log.error("cannot fork a %s worker: %s", stage, exc)
            self.policies[stage].record_exit(time.monotonic(), ExitKind.BOOT_FAILURE)
            return False
        if pid == 0:
            worker_process(
                slot, self.config, parent=self.pid, libc=self._libc, mask=blocked,
                leave_parent=lambda: self._leave_supervisor(slot),
            )
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        slot.pid = pid
        self.workers[pid] = slot
        self._count_restart(stage)
        log.info("started %s worker pid %d (#%d, generation %d)", stage, pid, slot.age, slot.generation)
        return True

    def _count_restart(self, stage: str) -> None:
        """A worker spawned to replace one that failed is a restart."""
        if self.pending_restarts[stage] > 0:
            self.pending_restarts[stage] -= 1
            self.restarts += 1
            metrics.WORKER_RESTARTS.labels(stage).inc()

    def _leave_supervisor(self, slot: WorkerSlot) -> None:
        """In a freshly forked worker: drop the supervisor's signal handling and close what it holds open."""
        self._reset_signals()
        if self._server is not None:
            self._server.close_in_child()
        close_fd(self._wake_r)
        close_fd(self._wake_w)
        if self._metrics_dir is not None:
            close_fd(self._metrics_dir.lock_fd)
        for other in self.workers.values():
            if other is not slot:
                other.close_files()
        self._notifier.close()

    def _retire(self, slot: WorkerSlot, why: str) -> None:
        slot.retiring = True
        slot.stop_deadline = time.monotonic() + self.config.supervisor.shutdown_timeout
        log.info("stopping %s worker pid %d (%s)", slot.stage, slot.pid, why)
        self.kill_worker(slot, signal.SIGTERM)

    def kill_worker(self, slot: WorkerSlot, sig: int) -> None:
        if sig == signal.SIGKILL:
            slot.killed = True
        try:
            os.kill(slot.pid, sig)
        except ProcessLookupError:
            pass  # already gone; the reaper will see it

    def murder_workers(self) -> None:
        """Kill workers that outstayed their drain deadline or whose heartbeat went stale.

        Both get SIGABRT first, so faulthandler writes every thread's stack to the crash
        report (what was it stuck on?), then SIGKILL one tick later.
        """
        now = time.monotonic()
        for slot in list(self.workers.values()):
            if slot.killed:
                continue
            if slot.aborted_at is not None:
                if now - slot.aborted_at >= KILL_AFTER_ABORT:
                    self.kill_worker(slot, signal.SIGKILL)
            elif slot.retiring:
                self._murder_if_overdue(slot, now)
            else:
                self._murder_if_stale(slot, now)

    def _murder_if_overdue(self, slot: WorkerSlot, now: float) -> None:
        if now < slot.stop_deadline:
            return
        if self._stop == "quick":
            self.kill_worker(slot, signal.SIGKILL)
            return
        log.warning("%s worker pid %d did not finish draining in time: killing it", slot.stage, slot.pid)
        self._abort(slot, now)

    def _murder_if_stale(self, slot: WorkerSlot, now: float) -> None:
        silent = now - slot.heartbeat.last_beat()
        if silent > self.config.supervisor.heartbeat_timeout:
            log.error(
                "%s worker pid %d sent no heartbeat for %.0fs: killing and replacing it",
                slot.stage, slot.pid, silent,
            )
            slot.stale = True
            self._abort(slot, now)

    def _abort(self, slot: WorkerSlot, now: float) -> None:
        slot.aborted_at = now
        self.kill_worker(slot, signal.SIGABRT)

    def reap_workers(self) -> None:
        assert self._metrics_dir is not None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._metrics_dir.mark_dead(pid)
            slot = self.workers.pop(pid, None)
            if slot is not None:
                self._on_exit(slot, status)

    def _on_exit(self, slot: WorkerSlot, status: int) -> None:
        now = time.monotonic()
        if not slot.retiring:
            self._note_ready(slot, now)  # it may have become ready since the last look
        self._log_crash_report(slot)
        code = os.waitstatus_to_exitcode(status)
        cause = slot.exit_cause(code)
        metrics.WORKER_EXITS.labels(slot.stage, cause).inc()
        how = f"exited with status {code}" if code >= 0 else f"was killed by {_signame(-code)}"
        if cause == "stopped":
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "%s worker pid %d %s after stopping", slot.stage, slot.pid, how)
            return
        if code == -signal.SIGKILL and not slot.killed:
            how += " (out of memory?)"
        if self._stop is not None:
            log.warning("%s worker pid %d %s during shutdown", slot.stage, slot.pid, how)
            return
        if slot.stage in self.policies:
            self._schedule_restart(slot, code, how, now)

    def _log_crash_report(self, slot: WorkerSlot) -> None:
        dump = slot.crash.read()
        slot.close_files()
        if dump:
            log.error("%s worker pid %d crash report", slot.stage, slot.pid, extra={"worker_stack": dump})

    def _schedule_restart(self, slot: WorkerSlot, code: int, how: str, now: float) -> None:
        uptime = now - slot.started_at
        kind = classify_exit(code, slot.ready_at is not None, slot.stale)
        ready_for = 0.0 if slot.ready_at is None else now - slot.ready_at
        delay = self.policies[slot.stage].record_exit(now, kind, ready_for)
        self.pending_restarts[slot.stage] += 1
        before, after = {
            ExitKind.RUNTIME: ("", ""),
            ExitKind.BOOT_FAILURE: ("failed to boot and ", ""),
            ExitKind.KILLED_BOOTING: ("", " while booting"),
        }[kind]
        log.error(
            "%s worker pid %d %s%s%s after %.1fs; restarting in %.1fs",
            slot.stage, slot.pid, before, how, after, uptime, delay,
        )

    def stop_workers(self, quick: bool) -> None:
        """TERM every worker and give them ``shutdown_timeout`` (none if ``quick``) to drain; then kill them."""
        timeout = 0.0 if quick else self.config.supervisor.shutdown_timeout
        log.info("stopping %d worker(s), %gs to drain", len(self.workers), timeout)
        self._notifier.stopping(status=f"stopping: draining {len(self.workers)} worker(s)")
        deadline = time.monotonic() + timeout
        for slot in self.workers.values():
            if not slot.retiring:
                slot.retiring = True
                self.kill_worker(slot, signal.SIGTERM)
            slot.stop_deadline = min(slot.stop_deadline, deadline)
        while self.workers:
            now = time.monotonic()
            for sig in self._wait_signals(STOP_TICK):
                if sig in (signal.SIGINT, signal.SIGQUIT):
                    self._end_drain(sig, now)
            self.reap_workers()
            self.murder_workers()
            self._publish()
            if all(slot.killed for slot in self.workers.values()):
                break
        self._reap_killed()

    def _end_drain(self, sig: int, now: float) -> None:
        log.info("received %s while draining: killing the workers now", signal.Signals(sig).name)
        for slot in self.workers.values():
            slot.stop_deadline = now

    def _reap_killed(self) -> None:
        deadline = time.monotonic() + REAP_AFTER_KILL
        while self.workers and time.monotonic() < deadline:
            self._wait_signals(STOP_TICK)
            self.reap_workers()
        for slot in self.workers.values():
            log.error("%s worker pid %d did not exit after SIGKILL", slot.stage, slot.pid)

    # ------------------------------------------------------------------------------ health
    def _publish(self) -> None:
        """Readiness and liveness to ``/healthz``, ``/readyz``, the worker gauges and systemd."""
        now = time.monotonic()
        counts = self._counts()
        alive = all(c.alive >= c.expected for c in counts.values())
        ready = all(c.ready >= c.expected for c in counts.values())
        self._advance_state(counts, ready)
        self._export_health(counts, alive, ready)
        line = status_line(counts, self._state, self.restarts)
        if line != self._last_status:
            self._last_status = line
            self._notifier.status(line)
        self._unhealthy_since = None if alive else (self._unhealthy_since or now)
        self._watchdog(now)

    def _counts(self) -> dict[str, StageCount]:
        now = time.monotonic()
        for slot in self.workers.values():
            if not slot.retiring:
                self._note_ready(slot, now)
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

    def _note_ready(self, slot: WorkerSlot, now: float) -> None:
        if slot.ready or slot.heartbeat.fd < 0 or not slot.heartbeat.is_ready():
            return
        slot.ready = True
        slot.ready_at = now
        if slot.stage in self.policies:
            self.policies[slot.stage].record_ready()
        log.info("%s worker pid %d is ready (%.1fs)", slot.stage, slot.pid, now - slot.started_at)

    def _advance_state(self, counts: dict[str, StageCount], ready: bool) -> None:
        """starting → running (READY=1 once) ⇄ reloading (READY=1 when rolled out); stopping at the end."""
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

    def _export_health(self, counts: dict[str, StageCount], alive: bool, ready: bool) -> None:
        for stage, c in counts.items():
            metrics.WORKERS.labels(stage, "expected").set(c.expected)
            metrics.WORKERS.labels(stage, "alive").set(c.alive)
            metrics.WORKERS.labels(stage, "ready").set(c.ready)
        detail = {
            stage: {"expected": c.expected, "alive": c.alive, "ready": c.ready, "pids": list(c.pids)}
            for stage, c in counts.items()
        }
        stopping = self._stop is not None
        self._health = Health(
            alive=alive and not stopping, ready=ready and not stopping, state=self._state, detail=detail
        )

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


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


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
        return Supervisor(args.config, parse_stages(args.stages)).run()
    except ConfigError as exc:  # the one place the supervisor turns a ConfigError into exit 2
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
