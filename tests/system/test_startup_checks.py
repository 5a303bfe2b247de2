"""What the supervisor refuses before and while it runs: missing topics, an unreachable broker,
Kafka overrides that break at-least-once, and retry-topic changes that would strand tasks.

Each refusal comes within seconds, with its reason; nothing is left listening or running.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from kafkahelpers import create_topics, wait_for
from supervisedhelpers import NotifyListener, worker_pids

from tests.system.conftest import free_port

CHECK_TIMEOUT = 3.0


def _critical(sup) -> list[str]:
    return [line["msg"] for line in sup.log_lines() if line.get("level") == "CRITICAL"]


def test_missing_topics_exit_2_at_once_naming_them_and_the_command(supervised, kafka_admin):
    sup = supervised({"supervisor": {"broker_check_timeout": CHECK_TIMEOUT}}, create_topics=False)
    topics = sup.pipe.topics
    missing = {topics["results"], topics["dlq"]}
    create_topics(kafka_admin, [t for t in sup.pipe.all_topics() if t not in missing], partitions=3)

    with NotifyListener() as notify:
        sup.start(env=notify.env)
        assert sup.wait_exit(CHECK_TIMEOUT + 30) == 2, sup.tail()
        wait_for(lambda: any(s.startswith("failed: missing topic(s)") for s in notify.statuses()), 10,
                 "systemd to be told why")
    assert not any(m.get("READY") for m in notify.received)
    (message,) = _critical(sup)
    named = message.split("missing topic(s) ")[1].split(":")[0].split(", ")
    assert set(named) == missing
    assert f"kafkapipe topics create --config {sup.pipe.config_path}" in message
    assert sup.get("/healthz")[0] == 0, "nothing may listen after refusing to start"
    assert "started " not in sup.log(), "no worker may be forked"


def test_an_unreachable_broker_at_start_exits_1_naming_it(supervised):
    nowhere = f"127.0.0.1:{free_port()}"
    sup = supervised({"kafka": {"bootstrap_servers": nowhere}, "supervisor": {"broker_check_timeout": CHECK_TIMEOUT}},
                     create_topics=False)
    sup.start()
    assert sup.wait_exit(CHECK_TIMEOUT + 30) == 1, sup.tail()
    (message,) = _critical(sup)
    assert f"no broker at {nowhere} answered within {CHECK_TIMEOUT:g}s" in message
    assert sup.get("/healthz")[0] == 0


def test_an_override_breaking_at_least_once_is_refused_at_start_and_on_reload(supervised):
    sup = supervised({"kafka": {"producer": {"acks": 1}}, "stages": {"download": {"processes": 1}}})
    sup.start("--stages", "ingest,download")
    assert sup.wait_exit(30) == 2, sup.tail()
    assert "'acks' = 1 is refused" in sup.log()
    assert "[kafka.producer]" in sup.log()
    assert sup.get("/healthz")[0] == 0

    sup.pipe.data["kafka"]["producer"] = {"acks": "all"}
    sup.pipe.write_config()
    sup.start("--stages", "ingest,download")
    before = sup.wait_ready()
    sup.pipe.data["kafka"]["consumer"] = {"enable.auto.offset.store": True}
    sup.pipe.write_config()
    sup.signal(signal.SIGHUP)
    sup.wait_log("reload rejected, keeping the running workers")
    assert "'enable.auto.offset.store' = True is refused" in sup.log()
    assert sup.stages() == before
    assert sup.metric("kafkapipe_config_reloads_total", outcome="rejected") == 1
    assert sup.stop() == 0


def test_changing_retry_delays_on_reload_is_refused_and_keeps_the_workers(supervised):
    sup = supervised({"stages": {"download": {"processes": 1}}})
    sup.start("--stages", "download,delay")
    before = sup.wait_ready()
    pids = worker_pids(sup.proc.pid)
    new_delays = ["1s", "3s"]
    sup.pipe.data["topics"]["retry_delays"] = new_delays
    sup.pipe.write_config()
    sup.signal(signal.SIGHUP)
    sup.wait_log("reload rejected, keeping the running workers")
    rejection = next(line["msg"] for line in sup.log_lines() if "reload rejected" in line.get("msg", ""))
    assert "retry topics change only at a restart" in rejection
    assert sup.stages() == before and worker_pids(sup.proc.pid) == pids
    assert sup.metric("kafkapipe_config_reloads_total", outcome="applied") == 0
    assert sup.stop() == 0


def test_a_dropped_retry_topic_that_still_holds_tasks_refuses_the_start(supervised, kafka_admin, kafka_bootstrap):
    sup = supervised({"supervisor": {"broker_check_timeout": CHECK_TIMEOUT}, "stages": {"download": {"processes": 1}}})
    old = f"{sup.pipe.topics['retry_prefix']}.9s"  # a delay no longer in retry_delays
    create_topics(kafka_admin, [old], partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(3):
        producer.produce(old, value=b'{"task": %d}' % i, partition=i % 2)
    assert producer.flush(30) == 0

    sup.start("--stages", "download,delay")
    assert sup.wait_exit(CHECK_TIMEOUT + 30) == 2, sup.tail()
    (message,) = _critical(sup)
    assert f"{old} (3 message(s))" in message
    assert "still hold tasks" in message
    assert "started " not in sup.log()

    # Once the delay group has moved them (committed past them), the same start goes ahead.
    group = f"{sup.pipe.data['kafka']['group_prefix']}.delay"
    mover = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        ends = [TopicPartition(old, p, mover.get_watermark_offsets(TopicPartition(old, p), timeout=10)[1])
                for p in range(2)]
        mover.commit(offsets=ends, asynchronous=False)
    finally:
        mover.close()
    sup.start("--stages", "download,delay")
    sup.wait_ready()
    assert sup.stop() == 0


def test_a_missing_backend_setting_fails_the_check_and_a_hup_keeps_the_workers(supervised):
    sup = supervised({"stages": {"download": {"processes": 1}}})
    with NotifyListener() as notify:
        sup.start("--stages", "download", env=notify.env)
        before = sup.wait_ready()
        pids = worker_pids(sup.proc.pid)
        sup.pipe.data["storage"].update(backend="azure_blob", azure={"container": "claims"})
        sup.pipe.write_config()

        check = subprocess.run(
            [sys.executable, "-m", "kafkapipe.cli", "config", "check", "--reload", "--stages", "download",
             "--config", str(sup.pipe.config_path)],
            capture_output=True, text=True, env=sup.pipe.env(), timeout=60,
        )
        assert check.returncode == 2, check.stderr
        assert "storage.azure.account_url: required" in check.stderr

        sup.signal(signal.SIGHUP)
        sup.wait_log("reload rejected, keeping the running workers")
        wait_for(lambda: any(s.startswith("reload rejected") for s in notify.statuses()), 10,
                 "systemd to be told the reload was rejected")
    rejection = next(line["msg"] for line in sup.log_lines() if "reload rejected" in line.get("msg", ""))
    assert "storage.azure.account_url: required" in rejection
    assert sup.stages() == before and worker_pids(sup.proc.pid) == pids
    assert sup.metric("kafkapipe_config_reloads_total", outcome="rejected") == 1
    assert sup.stop() == 0
