"""`kafkapipe trace TRACE_ID` against a real broker and a real SQLite inventory, through the real CLI.

One claim with four attachments, each in another place: stored (inventory), waiting on a retry
topic (due later), dead-lettered (DLQ plus the inventory's failed row), and an event of the claim
dead-lettered by ingest; a second claim's records sit beside them and must not show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafkahelpers import create_topics
from pipelinehelpers import to_toml

from kafkapipe.config import InventoryConfig
from kafkapipe.inventory import open_inventory
from kafkapipe.kafka.clients import headers
from kafkapipe.messages import (
    SCHEMA_FAILED,
    SCHEMA_TASK,
    DownloadResult,
    DownloadTask,
    ErrorInfo,
    FailedDownload,
    dumps,
    format_ts,
    make_task_id,
    utcnow,
)

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0
SECRET = "sig=trace-canary-secret"
TRACE = "CLM-\u202e123"  # a bidi override: must reach the terminal escaped


def task(trace_id: str, name: str, retry_count: int = 0, retry_at=None, error=None) -> DownloadTask:
    url = f"https://files.example.com/claims/{name}.pdf?{SECRET}"
    now = utcnow()
    return DownloadTask(
        task_id=make_task_id(trace_id, url), trace_id=trace_id, attachment_url=url,
        blob_path=f"claims/{name}.pdf", event_type="xact.claims.documentsReceived",
        event_subtype="documentsReceived", source_system="xact", original_timestamp=now,
        created_at=now, retry_count=retry_count, retry_at=retry_at, last_error=error,
    )


def result(t: DownloadTask, status: str, attempt: int, at, error: ErrorInfo | None = None) -> DownloadResult:
    return DownloadResult(
        task_id=t.task_id, trace_id=t.trace_id, attachment_url=t.attachment_url, blob_path=t.blob_path,
        status=status, attempt=attempt, completed_at=at, duration_ms=10,
        error_category=error.category if error else None,
        error_message=f"{error.message} at {t.attachment_url}" if error else None,
    )


@pytest.fixture
def env(kafka_bootstrap, kafka_admin, unique_name, tmp_path):
    prefix = unique_name("trace")
    topics = {
        "events": f"{prefix}.events", "pending": f"{prefix}.pending", "results": f"{prefix}.results",
        "dlq": f"{prefix}.dlq", "events_dlq": f"{prefix}.events.dlq", "retry_prefix": f"{prefix}.retry",
        "retry_delays": ["1m", "10m"],
    }
    create_topics(kafka_admin, [topics["dlq"], topics["events_dlq"], f"{prefix}.retry.1m"], partitions=2)
    # the 10m retry topic is missing on purpose: trace must read what exists
    table = {
        "kafka": {"bootstrap_servers": kafka_bootstrap, "group_prefix": prefix},
        "topics": topics,
        "inventory": {"path": str(tmp_path / "inventory.sqlite3")},
        "logging": {"format": "json"},
    }
    path = tmp_path / "pipeline.toml"
    path.write_text(to_toml(table))
    return path, topics, table


def produce(bootstrap: str, items: list[tuple[str, bytes, list]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    errors: list = []
    for topic, value, hdrs in items:
        producer.produce(topic, value=value, headers=hdrs, on_delivery=lambda e, m: errors.append(e))
    producer.flush(TIMEOUT)
    assert errors == [None] * len(items)


def cli(config: Path, *argv: str) -> subprocess.CompletedProcess:
    envvars = {k: v for k, v in os.environ.items() if not k.startswith("KAFKAPIPE_")}
    return subprocess.run(
        [sys.executable, "-m", "kafkapipe.cli", "trace", *argv, "--config", str(config)],
        cwd=ROOT, env=envvars, capture_output=True, text=True, timeout=120,
    )


def test_trace_shows_each_attachment_where_it_is(env):
    config, topics, table = env
    now = utcnow()
    stored, waiting, dead = task(TRACE, "stored"), task(TRACE, "waiting"), task(TRACE, "dead")
    other = task("CLM-999", "other")
    e503, e404 = ErrorInfo("transient", "HTTP 503"), ErrorInfo("permanent", "HTTP 404")
    due = now + timedelta(minutes=1)
    retried = task(TRACE, "waiting", retry_count=1, retry_at=due, error=e503)
    failed = FailedDownload(task=task(TRACE, "dead", 2), error_category="permanent",
                            error_message=f"HTTP 404 for {dead.attachment_url}", attempts=3,
                            failed_at=now, stage="download")
    inventory = open_inventory(InventoryConfig(path=table["inventory"]["path"]))
    inventory.upsert([
        result(stored, "success", 1, now - timedelta(minutes=5)),
        result(waiting, "failed_transient", 1, now - timedelta(seconds=1), e503),
        result(dead, "failed_permanent", 3, now - timedelta(seconds=1), e404),
        result(other, "success", 1, now),
    ])
    inventory.close()
    produce(table["kafka"]["bootstrap_servers"], [
        (f"{topics['retry_prefix']}.1m", dumps(retried), headers(SCHEMA_TASK, TRACE, waiting.task_id)),
        (f"{topics['retry_prefix']}.1m", dumps(task("CLM-999", "w2", 1, due, e503)),
         headers(SCHEMA_TASK, "CLM-999", "x")),
        (topics["dlq"], dumps(failed), headers(SCHEMA_FAILED, TRACE, dead.task_id)),
        (topics["events_dlq"], b'{"trace_id": "CLM-\\u202e123", "attachments": 7}',
         headers(None, TRACE, **{"error-message": "attachments must be a list of URL strings"})),
    ])

    proc = cli(config, TRACE, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["trace_id"] == TRACE
    found = {a["task_id"]: a for a in doc["attachments"]}
    assert set(found) == {stored.task_id, waiting.task_id, dead.task_id}
    assert (found[stored.task_id]["state"], found[stored.task_id]["where"]) == ("stored", "claims/stored.pdf")
    assert found[waiting.task_id]["state"] == "waiting"
    assert found[waiting.task_id]["where"].startswith(f"{topics['retry_prefix']}.1m:")
    assert found[waiting.task_id]["due_at"] == format_ts(due)
    assert found[dead.task_id]["state"] == "dead-lettered"
    assert found[dead.task_id]["where"].startswith(f"{topics['dlq']}:")
    outcomes = [(a["source"], a["outcome"], a["attempt"]) for a in found[dead.task_id]["attempts"]]
    assert ("dlq", "dead-lettered", 3) in outcomes and ("inventory", "failed_permanent", 3) in outcomes
    assert found[dead.task_id]["url"] == "https://files.example.com/claims/dead.pdf"
    (event,) = doc["event_dead_letters"]
    assert event["where"].startswith(f"{topics['events_dlq']}:") and "list of URL" in event["error"]
    assert SECRET not in proc.stdout and SECRET not in proc.stderr

    proc = cli(config, TRACE)
    assert proc.returncode == 0, proc.stderr
    assert "\u202e" not in proc.stdout and "CLM-\\u202e123" in proc.stdout
    assert "now: dead-lettered" in proc.stdout and "now: stored claims/stored.pdf" in proc.stdout
    assert SECRET not in proc.stdout


def test_trace_of_an_unknown_claim_exits_1_and_says_so(env):
    config, _, _ = env
    proc = cli(config, "CLM-nothing")
    assert proc.returncode == 1
    assert "nothing found for CLM-nothing" in proc.stderr
    assert "Traceback" not in proc.stderr
