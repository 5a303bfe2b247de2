"""The supervisor with real workers on the real broker: signals, kill -9, reloads, metrics, systemd.

Every wait is on a condition with a deadline; nothing asserts how long something took.
"""

from __future__ import annotations

import os
import signal
from urllib.parse import urlsplit

from kafkahelpers import wait_for
from supervisedhelpers import NotifyListener, alive, worker_pids

from tests.system.conftest import free_port

SIGNATURE = "T0pSecretSignature%2Bvalue%3D"


def started_pids(sup) -> list[int]:
    return [
        int(line["msg"].split(" pid ")[1].split()[0])
        for line in sup.log_lines()
        if line.get("logger") == "kafkapipe.supervisor" and line.get("msg", "").startswith("started ")
    ]


def test_kill_9_of_a_worker_is_replaced_and_counted(supervised):
    sup = supervised()
    # The group notices the killed member after session.timeout.ms: keep that short here.
    with open(sup.pipe.config_path, "a") as f:
        f.write('\n[kafka.consumer]\n"session.timeout.ms" = 6000\n"heartbeat.interval.ms" = 1000\n')
    sup.start("--stages", "ingest,download,results")
    stages = sup.wait_ready()
    assert set(stages) == {"ingest", "download", "results"}
    victim = stages["download"]["pids"][0]
    assert os.path.exists(sup.metrics_dir), "workers write their metric files where the config says"

    os.kill(victim, signal.SIGKILL)
    sup.wait_stage("download", 2, exclude={victim})
    sup.wait_until(lambda: sup.metric("kafkapipe_worker_restarts_total", stage="download") >= 1,
                   "the restart counter to rise")
    assert sup.metric("kafkapipe_worker_exits_total", stage="download", cause="signaled") == 1
    assert not list(sup.metrics_dir.glob(f"gauge_live*_{victim}.db")), "the dead worker's live gauges remain"
    assert "out of memory?" in sup.log()

    urls = sup.publish(20, "after-kill")
    rows = sup.wait_rows(20)
    assert {r["attachment_url"] for r in rows} == set(urls)
    assert sup.stop() == 0


def test_a_stage_that_cannot_boot_makes_the_supervisor_give_up(supervised, tmp_path):
    # A configuration check cannot see this one: nothing listens where the inventory should be.
    window = 30.0
    dsn = tmp_path / "dsn"
    dsn.write_text(f"postgresql://kafkapipe@127.0.0.1:{free_port()}/nowhere")
    sup = supervised({
        "supervisor": {"crash_loop_restarts": 3, "crash_loop_window": window, "restart_backoff_max": 2.0},
        "inventory": {"backend": "postgresql", "postgresql": {"dsn_file": str(dsn), "connect_timeout": 1.0}},
    })
    sup.expected_tracebacks = ("stage results failed to boot",)
    sup.start()
    code = sup.wait_exit(window + sup.pipe.data["supervisor"]["shutdown_timeout"] + 15)
    assert code == 1, sup.tail()
    assert "stage results is crash-looping" in sup.log()
    exits = [
        line for line in sup.log_lines()
        if line.get("logger") == "kafkapipe.supervisor" and "failed to boot" in line.get("msg", "")
    ]
    assert len(exits) >= 4, sup.tail()
    assert not any(alive(pid) for pid in started_pids(sup)), "workers outlived the supervisor"


def test_workers_die_with_a_killed_supervisor(supervised):
    sup = supervised({"stages": {"download": {"processes": 1}}})
    sup.start("--stages", "ingest,download")
    sup.wait_ready()
    pids = worker_pids(sup.proc.pid)
    assert len(pids) == 2

    sup.signal(signal.SIGKILL)
    assert sup.wait_exit(10) == -signal.SIGKILL
    wait_for(lambda: not any(alive(pid) for pid in pids), 30, "the workers to die with their supervisor")


def test_term_under_load_drains_exits_0_and_loses_nothing(supervised):
    sup = supervised({"supervisor": {"shutdown_timeout": 10.0}, "stages": {"download": {"threads": 4}}})
    sup.start()
    sup.wait_ready()
    urls = sup.publish(150, "load", stall=0.05)
    sup.wait_until(lambda: len(sup.pipe.rows()) >= 20, "some work to complete before the stop")

    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(sup.pipe.data["supervisor"]["shutdown_timeout"] + 10) == 0, sup.tail()
    completed = {r["task_id"]: r for r in sup.pipe.rows() if r["status"] == "success"}
    assert completed
    for row in completed.values():
        assert (sup.pipe.storage_root / row["blob_path"]).is_file()
    paths = [urlsplit(url).path for url in urls]
    # A drain finishes what it started: nothing was fetched twice (a kill would leave downloads to redo).
    assert all(sup.server.requests_to(path) <= 1 for path in paths), sup.tail()

    sup.start()  # whatever was in flight is redone after the restart
    rows = sup.wait_rows(len(urls))
    assert {r["attachment_url"] for r in rows} == set(urls)
    after = {r["task_id"]: r for r in rows}
    for task_id, row in completed.items():
        assert after[task_id]["sha256"] == row["sha256"]
        assert (sup.pipe.storage_root / row["blob_path"]).is_file()
    assert {path: sup.server.requests_to(path) for path in paths} == dict.fromkeys(paths, 1), \
        "every attachment fetched exactly once across the drain and the restart"
    assert sup.stop() == 0


def test_hup_applies_a_new_process_count_without_losing_messages(supervised):
    sup = supervised({"stages": {"download": {"processes": 1}}})
    sup.start()
    before = set(sup.wait_ready()["download"]["pids"])
    first = sup.publish(60, "before-hup", stall=0.02)

    sup.pipe.data["stages"]["download"]["processes"] = 3
    sup.pipe.write_config()
    sup.signal(signal.SIGHUP)
    second = sup.publish(60, "during-hup", stall=0.02)
    after = sup.wait_stage("download", 3, exclude=before, timeout=120)
    sup.wait_log("reload complete")
    assert len(worker_pids(sup.proc.pid)) == 1 + 3 + 1 + 1  # ingest, download x3, delay, results

    rows = sup.wait_rows(120)
    assert {r["attachment_url"] for r in rows} == set(first + second)
    assert sup.metric("kafkapipe_config_reloads_total", outcome="applied") == 1

    # A broken file is refused: same workers, and the log says why.
    sup.pipe.config_path.write_text(sup.pipe.config_path.read_text() + "\n[stages.download]\nprocesses = 'many'\n")
    sup.signal(signal.SIGHUP)
    sup.wait_log("reload rejected, keeping the running workers")
    rejection = next(line for line in sup.log_lines() if "reload rejected" in line.get("msg", ""))
    assert str(sup.pipe.config_path) in rejection["msg"]
    assert set(sup.stages()["download"]["pids"]) == set(after)
    assert sup.metric("kafkapipe_config_reloads_total", outcome="rejected") == 1
    assert sup.stop() == 0


def test_ttin_and_ttou_scale_the_download_stage(supervised):
    sup = supervised({"stages": {"download": {"processes": 1}}})
    sup.start("--stages", "download")
    stages = sup.wait_ready()
    assert set(stages) == {"download"}
    (first,) = stages["download"]["pids"]

    sup.signal(signal.SIGTTIN)
    pids = sup.wait_stage("download", 2)
    assert first in pids
    assert worker_pids(sup.proc.pid) == set(pids)

    sup.signal(signal.SIGTTOU)
    (remaining,) = sup.wait_stage("download", 1, exclude={first})  # the oldest goes
    sup.wait_until(lambda: worker_pids(sup.proc.pid) == {remaining}, "the retired worker to exit")
    # Gone from the process table a moment before the supervisor has reaped and counted it.
    stopped = lambda: sup.metric("kafkapipe_worker_exits_total", stage="download", cause="stopped")  # noqa: E731
    sup.wait_until(lambda: stopped() >= 1, "the retired worker's exit to be counted")
    assert stopped() == 1
    assert sup.metric("kafkapipe_worker_restarts_total", stage="download") == 0
    assert sup.stop() == 0


def test_systemd_notify_socket_gets_ready_status_watchdog_and_stopping(supervised):
    with NotifyListener() as notify:
        received = notify.received
        sup = supervised({"stages": {"download": {"processes": 1}}})
        sup.start("--stages", "ingest,download", env={**notify.env, "WATCHDOG_USEC": "2000000"})
        wait_for(lambda: any(m.get("READY") == "1" for m in received), 90, "READY=1")
        ready = next(m for m in received if m.get("READY") == "1")
        assert ready["STATUS"].startswith("running; ingest 1/1, download 1/1 ready")
        assert sup.get("/readyz")[0] == 200
        wait_for(lambda: any(m.get("WATCHDOG") == "1" for m in received), 30, "WATCHDOG=1")

        sup.signal(signal.SIGTERM)
        assert sup.wait_exit(30) == 0
        wait_for(lambda: any(m.get("STOPPING") == "1" for m in received), 10, "STOPPING=1")
    statuses = notify.statuses()
    assert statuses and all("\n" not in s for s in statuses)
    assert any(s.startswith("stopping") for s in statuses)


def test_metrics_scrape_sums_across_processes(supervised):
    count = 40
    sup = supervised({"stages": {"download": {"processes": 2}}})
    sup.start()
    sup.wait_ready()
    # Presigned-looking URLs: their signatures must never reach a log line.
    sup.publish(count, "metrics", query=f"sv=2023-11-03&se=2099-01-01T00%3A00%3A00Z&sp=r&sig={SIGNATURE}")
    sup.wait_rows(count)

    def consumed(stage: str) -> float:
        return sup.metric("kafkapipe_messages_consumed_total", stage=stage)

    sup.wait_until(lambda: consumed("results") >= count, "the results stage to count its messages")
    assert consumed("ingest") == count
    assert consumed("download") == count
    assert consumed("results") == count
    assert sup.metric("kafkapipe_downloads_total", status="success") == count
    assert sup.metric("kafkapipe_workers", stage="download", state="ready") == 2
    # What the dashboard and the alerts read moves with the work (produced counts flush per poll).
    sup.wait_until(lambda: sup.metric("kafkapipe_messages_produced_total", stage="download") >= count,
                   "the download stage's produced results to be counted")
    assert sup.metric("kafkapipe_messages_produced_total", stage="ingest") == count
    assert sup.metric("kafkapipe_messages_produced_total", stage="download") == count
    assert sup.metric("kafkapipe_processing_seconds_count", stage="download") == count
    assert sup.metric("kafkapipe_build_info") == 1
    assert sup.metric("kafkapipe_process_resident_memory_bytes", stage="download") > 0
    # One file per process that counted something: the sums above span processes.
    assert len(list(sup.metrics_dir.glob("counter_*.db"))) >= 5

    assert sup.get("/healthz")[0] == 200
    assert sup.get("/readyz")[0] == 200
    assert sup.get("/nope")[0] == 404
    assert sup.stop() == 0

    log = sup.log()
    assert SIGNATURE not in log
    assert "sig=" not in log.replace("sig=<redacted>", "")
    for line in sup.log_lines():
        if line.get("not_json"):
            # librdkafka's own stderr logger, used until clients are given a Python logger
            assert line["msg"].startswith("%"), line
            continue
        assert {"stage", "pid", "level", "msg"} <= set(line), line
    traced = [line for line in sup.log_lines() if line.get("stage") == "download" and "task_id" in line]
    assert traced and all({"trace_id", "topic", "partition", "offset"} <= set(line) for line in traced)


def test_an_unknown_stage_is_a_usage_error(supervised):
    sup = supervised()
    sup.start("--stages", "ingest,uploads")
    assert sup.wait_exit(30) == 2
    assert "unknown stage(s) uploads" in sup.log()
    assert sup.get("/healthz")[0] == 0, "nothing may listen after a usage error"


def test_a_bad_configuration_exits_2_naming_key_and_file(supervised):
    sup = supervised()
    sup.pipe.config_path.write_text("[supervisor]\nshutdown_timeout = 'soon'\n")
    sup.start()
    assert sup.wait_exit(30) == 2
    assert "supervisor.shutdown_timeout" in sup.log()
    assert str(sup.pipe.config_path) in sup.log()
    assert sup.get("/healthz")[0] == 0, "nothing may listen after a configuration error"
