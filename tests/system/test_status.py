"""`kafkapipe status` against the real broker and a real supervisor (then with it stopped)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from confluent_kafka import Producer

from kafkapipe import metrics
from kafkapipe.kafka.clients import headers
from kafkapipe.messages import SCHEMA_TASK, DownloadTask, dumps, format_ts, make_task_id, utcnow
from kafkapipe.status import scrape


def status(sup, *args: str) -> dict:
    proc = sup.pipe.cli("status", "--json", "--config", str(sup.pipe.config_path), *args)
    return json.loads(proc.stdout)


def by_stage(doc: dict) -> dict:
    return {s["stage"]: s for s in doc["stages"]}


def park_on_retry(sup, due_in: float) -> DownloadTask:
    """A task on the last retry topic, due ``due_in`` s from now: the delay stage holds it."""
    t = sup.pipe.topics
    url = "http://127.0.0.1:9/never.pdf"
    now = utcnow()
    task = DownloadTask(
        task_id=make_task_id("CLM-wait", url), trace_id="CLM-wait", attachment_url=url, blob_path="x/never.pdf",
        event_type="t", event_subtype="t", source_system="s", original_timestamp=now, created_at=now,
        retry_count=2, retry_at=None,
    )
    due_ms = int((time.time() + due_in) * 1000)
    producer = Producer({"bootstrap.servers": sup.pipe.bootstrap})
    producer.produce(f"{t['retry_prefix']}.{t['retry_delays'][-1]}", key=task.task_id, value=dumps(task),
                     headers=headers(SCHEMA_TASK, task.trace_id, task.task_id, **{"retry-at": str(due_ms)}))
    assert producer.flush(30) == 0
    return task, due_ms


def test_status_reads_workers_groups_backlog_waits_and_dlqs(supervised):
    sup = supervised()
    sup.start()
    sup.wait_ready()
    sup.publish(3, "st")
    sup.wait_rows(3)
    _, due_ms = park_on_retry(sup, due_in=3600)

    def settled():
        doc = status(sup)
        stages = by_stage(doc)
        waiting = [t for t in stages["delay"]["topics"] if t["backlog"]]
        done = all(t["backlog"] == 0 for s in ("ingest", "download", "results") for t in stages[s]["topics"])
        return doc if done and waiting else None

    doc = sup.wait_until(settled, "status to show no backlog and one waiting retry")
    assert doc["supervisor"]["up"] is True
    stages = by_stage(doc)
    assert stages["download"]["workers"] == {"expected": 2, "alive": 2, "ready": 2}
    for name in ("ingest", "download", "delay", "results"):
        assert stages[name]["workers"]["ready"] == stages[name]["workers"]["expected"] >= 1
        assert stages[name]["group_state"] == "STABLE" and stages[name]["members"] >= 1
    (waiting,) = [t for t in stages["delay"]["topics"] if t["backlog"]]
    assert waiting["waiting"] is True and waiting["backlog"] == 1
    assert waiting["oldest_due"] == format_ts(datetime.fromtimestamp(due_ms / 1000, UTC))
    assert [(d["topic"], d["unacknowledged"]) for d in doc["dlqs"]] == [
        (sup.pipe.topics["dlq"], 0), (sup.pipe.topics["events_dlq"], 0)
    ]
    assert doc["open_circuits"] == [] and doc["holds"] == []

    text = sup.pipe.cli("status", "--config", str(sup.pipe.config_path)).stdout
    assert "download  2/2" in text and "waiting, oldest due" in text

    sup.stop()
    proc = sup.pipe.cli("status", "--config", str(sup.pipe.config_path))
    assert "DOWN: not answering" in proc.stdout and "workers unknown" in proc.stdout
    doc = status(sup)
    assert doc["supervisor"]["up"] is False and by_stage(doc)["download"]["workers"] is None
    assert by_stage(doc)["download"]["group_state"] in ("EMPTY", "PREPARING_REBALANCE", "COMPLETING_REBALANCE")


def test_status_reads_the_metric_names_the_pipeline_exports():
    assert metrics.WORKERS._name == scrape.WORKERS
    assert metrics.CIRCUIT_STATE._name == scrape.CIRCUIT
    assert metrics.HOLDING._name == scrape.HOLDING
    assert metrics.AUTH_PAUSES._name + "_total" == scrape.AUTH_PAUSES


def test_two_instances_on_one_host_each_answer_on_their_own_metrics_port(supervised, tmp_path):
    """kafkapipe@ingest and kafkapipe@results with the same config: KAFKAPIPE_METRICS__BIND per instance."""
    import subprocess
    import sys

    from supervisedhelpers import SUPERVISOR

    from tests.system.conftest import free_port

    sup = supervised()
    ports = {"ingest": free_port(), "results": free_port()}
    envs = {
        stage: {"KAFKAPIPE_METRICS__BIND": f"127.0.0.1:{port}",
                "KAFKAPIPE_METRICS__MULTIPROC_DIR": str(tmp_path / f"metrics-{stage}")}
        for stage, port in ports.items()
    }
    sup.start("--stages", "ingest", env=envs["ingest"])
    with open(tmp_path / "results-instance.log", "ab") as log:
        other = subprocess.Popen(
            [sys.executable, str(SUPERVISOR), "--config", str(sup.pipe.config_path), "--stages", "results"],
            stdout=log, stderr=subprocess.STDOUT, cwd=sup.pipe.tmp, env={**sup.pipe.env(), **envs["results"]},
        )
    try:
        def seen(stage: str):
            env = {**sup.pipe.env(), **envs[stage]}
            proc = subprocess.run(
                [sys.executable, "-m", "kafkapipe", "status", "--json", "--config", str(sup.pipe.config_path)],
                capture_output=True, text=True, env=env, timeout=120,
            )
            assert proc.returncode == 0, proc.stderr
            stages = by_stage(json.loads(proc.stdout))
            return stages if (stages[stage]["workers"] or {}).get("ready") == 1 else None

        ingest_view = sup.wait_until(lambda: seen("ingest"), "the ingest instance on its own port")
        results_view = sup.wait_until(lambda: seen("results"), "the results instance on its own port")
        assert ingest_view["results"]["workers"] is None and ingest_view["download"]["workers"] is None
        assert results_view["ingest"]["workers"] is None
    finally:
        other.terminate()
        other.wait(60)


def test_status_counts_what_arrived_in_the_last_minute_by_record_time(supervised):
    """No supervisor needed: two records stamped now and one stamped five minutes ago."""
    sup = supervised()
    pending = sup.pipe.topics["pending"]
    producer = Producer({"bootstrap.servers": sup.pipe.bootstrap})
    now_ms = int(time.time() * 1000)
    for stamp in (now_ms - 300_000, now_ms, now_ms):
        producer.produce(pending, value=b"{}", partition=0, timestamp=stamp)
    assert producer.flush(30) == 0
    doc = status(sup)
    (topic,) = by_stage(doc)["download"]["topics"]
    assert (topic["backlog"], topic["arrived_last_minute"]) == (3, 2)
    assert doc["supervisor"]["up"] is False
