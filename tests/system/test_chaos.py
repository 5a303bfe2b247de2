"""Crash storms and chaos on the real supervisor, broker and HTTP servers.

``kill -9`` of random workers all through a run: the supervisor must never give up, and every
task must end exactly once — one stored file with the right digest, or one dead letter for a
URL that fails for good. ``bin/chaos`` runs the same at full size, with a broker restart.
"""

from __future__ import annotations

import pytest
from chaoshelpers import KillStorm, Workload, all_final, publish_in_waves, tally
from kafkahelpers import wait_for

from tests.integration.httpfaults import FaultServer

# The group notices a killed member after session.timeout.ms: keep that short under a storm.
FAST_REBALANCE = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def _storm_run(sup, workload: Workload, waves: int, per_wave: int, interval: tuple[float, float]) -> KillStorm:
    """Publishes ``waves`` batches two seconds apart under a kill -9 storm; returns the stopped storm."""
    sup.start()
    sup.wait_ready()
    storm = KillStorm(lambda: sup.proc.pid, interval=interval, seed=7)
    storm.start()
    try:
        publish_in_waves(sup.pipe, workload, waves * per_wave, waves, pause=2.0, prefix="storm",
                         stop=lambda: sup.proc.poll() is not None)
        wait_for(lambda: len(storm.kills) >= 2 * waves // 3 or sup.proc.poll() is not None, 60,
                 "the storm to have killed enough workers")
    finally:
        storm.stop()
    return storm


def _check_survived(sup, workload: Workload, storm: KillStorm, timeout: float) -> None:
    assert sup.proc.poll() is None, f"the supervisor exited under the storm\n{sup.tail()}"
    sup.wait_until(all_final(sup.pipe, workload.expected), "every task to reach its final outcome", timeout)
    result = tally(sup.pipe, workload.expected)
    assert result.failures == {}, "\n".join(result.lines()) + "\n" + sup.tail()
    assert "crash-looping" not in sup.log()
    sup.wait_until(lambda: sup.metric("kafkapipe_worker_restarts_total") >= len(storm.kills),
                   "every killed worker to be restarted")
    assert sup.stop() == 0, sup.tail()


def test_a_kill_9_storm_never_stops_the_supervisor_and_every_task_is_stored_once(supervised, fault_server):
    # A strict crash-loop setting: deaths of ready workers must not count towards it at all.
    sup = supervised({
        "supervisor": {"crash_loop_restarts": 2, "crash_loop_window": 120.0, "restart_backoff_max": 5.0},
        "stages": {"download": {"processes": 2, "threads": 4}},
        "kafka": {"consumer": FAST_REBALANCE},
    })
    workload = Workload(good=fault_server, bad=fault_server, transient=0.0, bad_share=0.0)
    storm = _storm_run(sup, workload, waves=12, per_wave=10, interval=(1.0, 2.0))
    _check_survived(sup, workload, storm, timeout=180)
    assert len(storm.kills) >= 8


@pytest.mark.chaos
def test_chaos_kills_http_faults_and_a_half_broken_host_lose_nothing(supervised, fault_server):
    with FaultServer(host="127.0.0.2") as bad:
        sup = supervised({
            "topics": {"retry_delays": ["1s", "2s", "4s"]},
            "stages": {"download": {"processes": 2, "threads": 8}},
            "download": {"allowed_ports": [fault_server.port, bad.port]},
            "kafka": {"consumer": FAST_REBALANCE},
        })
        workload = Workload(good=fault_server, bad=bad, transient=0.05, bad_share=0.2, bad_permanent=0.3, seed=3)
        storm = _storm_run(sup, workload, waves=15, per_wave=20, interval=(2.0, 2.0))
        _check_survived(sup, workload, storm, timeout=240)
        assert any(want.permanent for want in workload.expected.values())


def test_storm_helpers_notice_a_lost_task(supervised, fault_server):
    """The tally itself can fail: a task nobody processed is counted as lost."""
    sup = supervised()
    workload = Workload(good=fault_server, bad=fault_server, transient=0.0, bad_share=0.0)
    workload.events(3, "never-sent")
    result = tally(sup.pipe, workload.expected)
    assert result.lost == 3 and result.failures == {"lost": 3}
