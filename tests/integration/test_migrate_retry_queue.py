"""``kafkapipe migrate retry-queue`` on the real broker, from a real Delta table, through real workers.

The table has three versions (two appends and a delete) and hostile rows; the migrated tasks are
downloaded by real `kafkapipe worker` processes (download, delay, results) from a loopback HTTP
server, and must reach storage and the inventory with their retry counts. A second run sends nothing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from migratehelpers import RETRY_SCHEMA, retry_row, write_versions
from pipelinehelpers import Pipeline

from kafkapipe.kafka.clients import header_map
from kafkapipe.messages import FailedDownload, loads, make_task_id


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


@pytest.fixture
def pipeline(tmp_path, kafka_bootstrap, kafka_admin, unique_name, fault_server):
    pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("mig"), fault_server.port,
                    overrides={"topics": {"retry_delays": ["1s", "3s"]}})
    pipe.create_topics(kafka_admin)
    yield pipe
    pipe.stop()


def test_retry_queue_reaches_storage_and_inventory_and_runs_once(pipeline, fault_server, tmp_path):
    now = datetime.now(UTC)
    bodies = {name: b"%PDF-1.7\n" + name.encode() * 500 for name in ("due", "later")}
    for name, body in bodies.items():
        fault_server.add(f"/legacy/{name}.pdf", body, content_type="application/pdf")
    due_url, later_url = fault_server.url("/legacy/due.pdf"), fault_server.url("/legacy/later.pdf")
    used_up_url = fault_server.url("/legacy/gone.pdf")
    expired_url = fault_server.url("/legacy/old.pdf", query="X-Amz-Date=20200101T000000Z&X-Amz-Expires=60"
                                   "&X-Amz-Signature=deadbeef")
    table = tmp_path / "legacy_retry"
    write_versions(table, [
        [
            retry_row("1", "trace-due", due_url, 1, iso(now - timedelta(minutes=5)), "HTTP 503"),
            retry_row("2", "trace-later", later_url, 0, iso(now + timedelta(seconds=5)), "timeout"),
            retry_row("3", "trace-nourl", None, 0),                                   # hostile: no URL
            retry_row("4", "trace-badtime", due_url, 0, created_at="yesterday"),      # hostile: time
        ],
        [
            retry_row("5", "trace-used-up", used_up_url, 2, None, "HTTP 500 three times"),
            retry_row("6", "trace-expired", expired_url, 0),
            retry_row("7", "trace-\x1b[31mred\x00", due_url, 0, created_at="2026-11-20T08:00:00"),  # hostile
            retry_row("8", "trace-deleted", fault_server.url("/legacy/deleted.pdf"), 0),
        ],
    ], RETRY_SCHEMA, delete="id = '8'")
    topics = pipeline.topics
    source = ["migrate", "retry-queue", "--config", str(pipeline.config_path), "--source", str(table)]

    dry = pipeline.cli(*source, "--dry-run", check=False)
    assert dry.returncode == 1, dry.stderr  # bad rows were skipped
    assert pipeline.count(topics["pending"]) == 0 and pipeline.count(topics["dlq"]) == 0
    assert "to pending" in dry.stdout and "plan (dry run" in dry.stdout
    bad_lines = sorted(line for line in dry.stderr.splitlines() if line.startswith("row "))
    assert len(bad_lines) == 3, dry.stderr
    assert "\x1b" not in dry.stderr and "\x00" not in dry.stderr

    first = pipeline.cli(*source, check=False)
    assert first.returncode == 1, first.stdout + first.stderr
    summary = dict(line.rsplit(None, 1) for line in first.stdout.splitlines())
    assert summary == {
        "rows read": "7", "to pending": "1", "to retry": "1", "to dlq permanent": "1", "to dlq expired": "1",
        "already migrated": "0", "duplicate rows": "0", "before --since": "0", "bad rows skipped": "3",
        "sent": "4", "failed to send": "0",
    }, first.stdout + first.stderr

    audit = [json.loads(line) for line in first.stderr.splitlines() if '"kafkapipe.audit"' in line]
    assert [(a["action"], a["sent"], a["bad_rows"]) for a in audit] == [("migrate.retry-queue", 4, 3)], first.stderr
    assert "X-Amz-Signature" not in first.stdout + first.stderr

    pipeline.start(("download", "delay", "results"))
    rows = {r["trace_id"]: r for r in pipeline.wait_rows(4, timeout=120)}
    assert set(rows) == {"trace-due", "trace-later", "trace-used-up", "trace-expired"}
    for trace, name, attempt in (("trace-due", "due", 2), ("trace-later", "later", 1)):
        row = rows[trace]
        assert row["status"] == "success" and row["attempt"] == attempt, row
        assert row["task_id"] == make_task_id(trace, fault_server.url(f"/legacy/{name}.pdf"))
        stored = pipeline.storage_root / row["blob_path"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == hashlib.sha256(bodies[name]).hexdigest()
        assert row["blob_path"].startswith("xact/2026/11/20/")
    assert rows["trace-used-up"]["status"] == "failed_permanent" and rows["trace-used-up"]["attempt"] == 3
    assert rows["trace-expired"]["error_category"] == "expired"
    assert fault_server.requests_to("/legacy/gone.pdf") == 0 and fault_server.requests_to("/legacy/old.pdf") == 0

    dead = {}
    for msg in pipeline.read_topic(topics["dlq"], 2):
        failed = loads(msg.value(), FailedDownload)
        dead[failed.task.trace_id] = (failed, header_map(msg.headers()))
    assert dead["trace-used-up"][0].error_category == "permanent"
    assert dead["trace-used-up"][0].error_message == "HTTP 500 three times"
    assert dead["trace-used-up"][0].task.retry_count == 2
    assert dead["trace-expired"][1]["error-category"] == "expired"
    assert "X-Amz-Signature" not in dead["trace-expired"][0].error_message
    (retried,) = pipeline.read_topic(f"{topics['retry_prefix']}.3s", 1)
    assert int(header_map(retried.headers())["retry-at"]) == int((now + timedelta(seconds=5)).timestamp() * 1000)

    counts = {t: pipeline.count(t) for t in (topics["pending"], topics["dlq"], topics["results"])}
    second = pipeline.cli(*source, check=False)
    assert "already migrated       4" in second.stdout and "sent                   0" in second.stdout, second.stdout
    assert {t: pipeline.count(t) for t in counts} == counts
