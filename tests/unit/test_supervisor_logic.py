"""The supervisor's decisions without processes: backoff, crash loops, scaling and rolling reloads."""

from __future__ import annotations

import os
import signal

import attrs
import pytest

from kafkapipe.config import SupervisorConfig
from kafkapipe.errors import ConfigError
from kafkapipe.supervision.metricsdir import choose_metrics_dir, prepare_metrics_dir
from kafkapipe.supervision.planning import SlotView, plan_stage
from kafkapipe.supervision.restarts import ExitKind, RestartPolicy, backoff_delay, classify_exit
from kafkapipe.supervision.slot import CrashReport, Heartbeat, HeartbeatThrottle
from kafkapipe.supervision.status import StageCount, status_line
from kafkapipe.supervisor import parse_stages

# ------------------------------------------------------------------------------- backoff
BOOT = ExitKind.BOOT_FAILURE
RUNTIME = ExitKind.RUNTIME
KILLED_BOOTING = ExitKind.KILLED_BOOTING


def _policy(**overrides) -> RestartPolicy:
    settings = {"restart_backoff_max": 30.0, "crash_loop_restarts": 5, "crash_loop_window": 60.0, **overrides}
    return RestartPolicy.from_config(SupervisorConfig(**settings))


def test_backoff_first_restart_is_immediate_then_doubles_up_to_the_cap():
    delays = [backoff_delay(n, base=1.0, maximum=30.0) for n in range(1, 9)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


@pytest.mark.parametrize(
    ("code", "was_ready", "stale", "kind"),
    [
        (-signal.SIGKILL, True, False, RUNTIME),
        (-signal.SIGTERM, True, False, RUNTIME),
        (-signal.SIGSEGV, True, False, RUNTIME),
        (1, True, False, RUNTIME),
        (0, True, False, RUNTIME),
        (3, False, False, BOOT),  # EXIT_BOOT_ERROR
        (1, False, False, BOOT),
        (0, False, False, BOOT),  # a worker that ends by itself before ready did not start
        (-signal.SIGSEGV, False, False, BOOT),
        (-signal.SIGABRT, False, False, BOOT),
        (-signal.SIGKILL, False, True, BOOT),  # hung at boot, killed for its silent heartbeat
        (-signal.SIGKILL, False, False, KILLED_BOOTING),  # OOM killer or kill -9 while booting
        (-signal.SIGTERM, False, False, KILLED_BOOTING),
    ],
)
def test_classify_exit(code, was_ready, stale, kind):
    assert classify_exit(code, was_ready, stale) is kind


def test_boot_failures_back_off_exponentially():
    policy = _policy()
    assert policy.record_exit(100.0, BOOT) == 0.0
    assert policy.may_spawn(100.0)
    assert policy.record_exit(101.0, BOOT) == 1.0
    assert not policy.may_spawn(101.5)
    assert policy.may_spawn(102.0)
    assert policy.record_exit(102.0, BOOT) == 2.0


def test_crash_loop_is_more_than_max_restarts_boot_failures_within_the_window():
    policy = _policy(crash_loop_restarts=3)
    for t in (0.0, 1.0, 3.0):
        policy.record_exit(t, BOOT)
        assert not policy.crash_looping(t)
    policy.record_exit(7.0, BOOT)
    assert policy.crash_looping(7.0)


def test_failures_older_than_the_window_are_forgotten():
    policy = _policy(crash_loop_restarts=2, crash_loop_window=10.0)
    for t in (0.0, 8.0):
        policy.record_exit(t, BOOT)
    policy.record_exit(16.0, BOOT)  # the failure at 0.0 has left the window
    assert not policy.crash_looping(16.0)
    assert policy.recent_failures(16.0) == 2


def test_deaths_after_ready_never_make_a_crash_loop():
    """A kill -9 storm: hundreds of ready workers dying within one window is no reason to give up."""
    policy = _policy(crash_loop_restarts=1, crash_loop_window=600.0)
    for n in range(300):
        policy.record_exit(float(n), RUNTIME, ready_for=0.5)
        assert not policy.crash_looping(float(n))


def test_kills_while_booting_get_the_short_backoff_and_never_make_a_crash_loop():
    policy = _policy(crash_loop_restarts=1, crash_loop_window=600.0, runtime_restart_backoff_max=2.0)
    delays = [policy.record_exit(float(n), KILLED_BOOTING) for n in range(8)]
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert not policy.crash_looping(8.0)


def test_a_dead_ready_worker_restarts_at_once_and_its_backoff_stays_short():
    policy = _policy(runtime_restart_backoff_max=2.0, restart_backoff_max=30.0)
    delays = [policy.record_exit(float(n), RUNTIME, ready_for=1.0) for n in range(10)]
    assert delays[0] == 0.0
    assert max(delays) == 2.0
    assert delays == sorted(delays)


def test_a_worker_that_ran_healthily_resets_the_runtime_backoff():
    policy = _policy(healthy_after=10.0)
    for n in range(5):
        policy.record_exit(float(n), RUNTIME, ready_for=1.0)
    assert policy.record_exit(100.0, RUNTIME, ready_for=10.0) == 0.0
    assert policy.may_spawn(100.0)


def test_the_boot_and_runtime_backoffs_are_separate():
    """The two backoffs are separate: a ready worker's death does not earn a boot failure's delay."""
    policy = _policy()
    for t in (0.0, 1.0, 3.0):
        policy.record_exit(t, BOOT)
    policy.record_ready()
    assert policy.record_exit(50.0, RUNTIME, ready_for=1.0) == 0.0
    assert policy.record_exit(50.0, BOOT) == 0.0  # a ready worker reset the boot backoff


def test_boot_failures_are_not_forgiven_by_a_long_boot():
    policy = _policy()
    policy.record_exit(0.0, BOOT)
    assert policy.record_exit(100.0, BOOT) == 1.0


def test_crash_at_start_gives_up_inside_the_window_with_default_settings():
    """Default config: 5 restarts allowed in 60 s; a stage dying at boot is given up on in time."""
    config = SupervisorConfig()
    policy = RestartPolicy.from_config(config)
    now, boot_time = 0.0, 0.5
    while not policy.crash_looping(now):
        delay = policy.record_exit(now, BOOT)
        if policy.crash_looping(now):
            break
        now += delay + boot_time
    assert now < config.crash_loop_window


def test_configure_applies_reloaded_settings_and_keeps_history():
    policy = _policy()
    policy.record_exit(0.0, BOOT)
    policy.record_exit(1.0, BOOT)
    policy.configure(SupervisorConfig(crash_loop_restarts=1, runtime_restart_backoff_max=0.5))
    assert policy.crash_looping(1.0)
    for n in range(5):
        assert policy.record_exit(2.0 + n, RUNTIME) <= 0.5


# ---------------------------------------------------------------------------- planning
def _slots(*specs: tuple[int, int, bool, bool]) -> list[SlotView]:
    """(age, generation, ready, retiring); pid = 1000 + age."""
    return [SlotView(1000 + age, age, gen, ready, retiring) for age, gen, ready, retiring in specs]


def test_steady_state_spawns_what_is_missing():
    assert plan_stage([], target=3, generation=0) == plan_stage([], 3, 0)
    assert plan_stage([], target=3, generation=0).spawn == 3
    assert plan_stage(_slots((1, 0, True, False)), target=3, generation=0).spawn == 2


def test_a_retiring_worker_does_not_count_towards_the_target():
    plan = plan_stage(_slots((1, 0, True, True), (2, 0, True, False)), target=2, generation=0)
    assert plan.spawn == 1 and plan.retire == ()


def test_scale_down_retires_the_oldest():
    slots = _slots((5, 0, True, False), (2, 0, True, False), (9, 0, False, False))
    assert plan_stage(slots, target=1, generation=0).retire == (1002, 1005)


@attrs.define
class _Sim:
    """Applies plans the way the supervisor does: spawned workers boot, retired ones drain and exit."""

    slots: list[SlotView]
    age: int = 100

    def step(self, target: int, generation: int) -> bool:
        plan = plan_stage(self.slots, target, generation)
        for pid in plan.retire:
            self.slots = [attrs.evolve(s, retiring=True) if s.pid == pid else s for s in self.slots]
        for _ in range(plan.spawn):
            self.age += 1
            self.slots.append(SlotView(1000 + self.age, self.age, generation, False))
        return bool(plan.spawn or plan.retire)

    def settle(self) -> None:
        """New workers become ready; retiring workers finish draining."""
        self.slots = [attrs.evolve(s, ready=True) for s in self.slots if not s.retiring]

    def serving(self) -> int:
        return sum(1 for s in self.slots if s.ready and not s.retiring)


@pytest.mark.parametrize(("before", "after"), [(2, 2), (1, 3), (3, 1), (2, 0), (1, 1)])
def test_rolling_reload_replaces_one_at_a_time(before, after):
    sim = _Sim(_slots(*[(age, 0, True, False) for age in range(1, before + 1)]))
    steps = 0
    while True:
        changed = sim.step(after, generation=1)
        in_flight = sum(1 for s in sim.slots if s.retiring or not s.ready)
        assert in_flight <= 1, "more than one worker changing at once"
        # A new worker is ready before an old one retires (unless there are more than the target),
        # so a one-worker stage never drops to zero during a reload.
        assert sim.serving() >= min(before, after)
        sim.settle()
        steps += 1
        assert steps < 20
        if not changed:
            break
    assert len(sim.slots) == after
    assert all(s.generation == 1 and s.ready for s in sim.slots)


def test_rollout_waits_for_the_new_worker_to_be_ready():
    slots = _slots((1, 0, True, False), (2, 1, False, False))
    assert plan_stage(slots, target=1, generation=1) == plan_stage([], 0, 0)


def test_rollout_waits_while_an_old_worker_drains():
    slots = _slots((1, 0, True, True), (2, 0, True, False), (3, 1, True, False))
    assert plan_stage(slots, target=2, generation=1).spawn == 0
    assert plan_stage(slots, target=2, generation=1).retire == ()


# ----------------------------------------------------------------------------- helpers
def test_status_line_is_one_short_line():
    counts = {"ingest": StageCount(1, 1, 1), "download": StageCount(3, 3, 2)}
    line = status_line(counts, "running", 2)
    assert line == "running; ingest 1/1, download 2/3 ready; 2 restarts"
    assert "\n" not in line


def test_parse_stages():
    assert parse_stages("") is None
    assert parse_stages(None) is None
    assert parse_stages("download, ingest,download") == ("download", "ingest")
    with pytest.raises(ConfigError, match="unknown stage.*uploads"):
        parse_stages("ingest,uploads")


def test_metrics_dir_choice(tmp_path):
    assert choose_metrics_dir(str(tmp_path / "m"), {}) == (str(tmp_path / "m"), False)
    assert choose_metrics_dir("", {"RUNTIME_DIRECTORY": "/run/kafkapipe:/run/other"}) == (
        "/run/kafkapipe/metrics", False,
    )
    path, temporary = choose_metrics_dir("", {})
    try:
        assert temporary and os.path.isdir(path)
    finally:
        os.rmdir(path)


def test_prepare_metrics_dir_wipes_only_metric_files_and_locks(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old")
    (directory / "gauge_livesum_123.db").write_bytes(b"old")
    (directory / "notes.txt").write_text("keep me")
    fd = prepare_metrics_dir(str(directory))
    try:
        assert sorted(p.name for p in directory.iterdir()) == [".lock", "notes.txt"]
        with pytest.raises(RuntimeError, match="another supervisor"):
            prepare_metrics_dir(str(directory))
    finally:
        os.close(fd)
    os.close(prepare_metrics_dir(str(directory)))  # free again once the first holder is gone


def test_heartbeat_file_carries_beats_and_readiness():
    heartbeat = Heartbeat()
    try:
        heartbeat.touch(1234.5)
        assert heartbeat.last_beat() == pytest.approx(1234.5)
        assert not heartbeat.is_ready()
        heartbeat.mark_ready()
        assert heartbeat.is_ready()
    finally:
        heartbeat.close()
    assert heartbeat.fd == -1


def test_beat_is_rate_limited():
    heartbeat = Heartbeat()
    try:
        heartbeat.touch(1.0)
        beat = HeartbeatThrottle(heartbeat, interval=3600.0)
        beat()
        first = heartbeat.last_beat()
        assert first > 1.0
        heartbeat.touch(2.0)
        beat()  # within the interval: no write
        assert heartbeat.last_beat() == pytest.approx(2.0)
    finally:
        heartbeat.close()


def test_crash_report_reads_what_was_written():
    report = CrashReport()
    try:
        assert report.read() == ""
        os.write(report.fd, b"Fatal Python error: Aborted\n")
        assert report.read() == "Fatal Python error: Aborted"
    finally:
        report.close()
    assert report.read() == ""
