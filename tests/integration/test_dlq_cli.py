"""`kafkapipe dlq list|show|replay|ack` against a real broker.

Each test has its own topics and group prefix. Dead letters are produced
directly to the DLQ topic at chosen partitions; the tool runs through
``dlq.run`` with arguments parsed by the same argparse wiring the command
line uses, and once through a real ``kafkapipe`` subprocess.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition
from kafkahelpers import create_topics

from kafkapipe import dlq
from kafkapipe.config import Config, from_mapping
from kafkapipe.kafka.clients import header_map, headers
from kafkapipe.messages import (
    SCHEMA_FAILED,
    DownloadTask,
    ErrorInfo,
    FailedDownload,
    dumps,
    format_ts,
    loads,
    make_task_id,
    parse_ts,
    utcnow,
)

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0
SECRET = "X-Amz-Signature=deadbeefsecret"


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def env(kafka_bootstrap, kafka_admin, unique_name, tmp_path) -> Config:
    prefix = unique_name("dlqt")
    topics = {
        "events": f"{prefix}.events",
        "pending": f"{prefix}.pending",
        "results": f"{prefix}.results",
        "dlq": f"{prefix}.dlq",
        "events_dlq": f"{prefix}.events.dlq",
        "retry_prefix": f"{prefix}.retry",
    }
    create_topics(kafka_admin, [topics["dlq"], topics["pending"]], partitions=2, timeout=TIMEOUT)
    return from_mapping(
        {
            "kafka": {"bootstrap_servers": kafka_bootstrap, "group_prefix": prefix},
            "topics": topics,
            "dlq": {"audit_log": str(tmp_path / "audit" / "dlq-audit.jsonl")},
        },
        source="test",
    )


def failed(name: str, category: str, failed_at=None, retry_count: int = 4, message: str | None = None):
    url = f"https://files.example.com/claims/{name}.pdf?{SECRET}&X-Amz-Expires=600"
    trace_id = f"trace-{name}"
    now = utcnow()
    task = DownloadTask(
        task_id=make_task_id(trace_id, url),
        trace_id=trace_id,
        attachment_url=url,
        blob_path=f"claims/{name}.pdf",
        event_type="xact.claims.documentsReceived",
        event_subtype="documentsReceived",
        source_system="xact",
        original_timestamp=now - timedelta(days=1),
        created_at=now - timedelta(hours=5),
        retry_count=retry_count,
        retry_at=now - timedelta(minutes=1),
        last_error=ErrorInfo("transient", "HTTP 503 (attempt before last)"),
        metadata={"origin": "test"},
    )
    return FailedDownload(
        task=task,
        error_category=category,
        error_message=message or f"{category} failure of {name}",
        attempts=retry_count + 1,
        failed_at=failed_at or now,
        stage="download",
    )


def produce(config: Config, items: list[tuple]) -> list[str]:
    """Produces (partition, value, key[, headers]) to the DLQ; returns each one's "partition:offset"."""
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers})
    reports: list[tuple] = []
    for partition, value, key, *extra in items:
        hdrs = extra[0] if extra else None
        if isinstance(value, FailedDownload):
            key = value.task.task_id
            hdrs = headers(SCHEMA_FAILED, value.task.trace_id, value.task.task_id)
            value = dumps(value)
        producer.produce(
            config.topics.dlq,
            value=value,
            key=key,
            partition=partition,
            headers=hdrs,
            on_delivery=lambda err, msg: reports.append((err, msg.partition(), msg.offset())),
        )
        producer.flush(TIMEOUT)  # one at a time: the returned order is the produced order
    assert [r[0] for r in reports] == [None] * len(items)
    return [f"{p}:{o}" for _, p, o in reports]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kafkapipe")
    dlq.add_parser(top.add_subparsers(dest="command", required=True))
    return top


def tool(config: Config, *argv: str) -> tuple[int, str, str]:
    args = parser().parse_args(["dlq", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = dlq.run(args, config, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def listed(config: Config, *argv: str) -> list[dict]:
    code, out, err = tool(config, "list", "--json", *argv)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def read_topic(config: Config, topic: str) -> list:
    """Every message now in ``topic`` (assign + watermarks, so it terminates)."""
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": "unused",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        parts = sorted(consumer.list_topics(topic, timeout=TIMEOUT).topics[topic].partitions)
        wanted = {}
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT)
            if high > low:
                wanted[p] = (low, high)
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in wanted.items()])
        messages, done = [], set()
        deadline = time.monotonic() + TIMEOUT
        while len(done) < len(wanted):
            assert time.monotonic() < deadline, f"reading {topic} did not finish within {TIMEOUT}s"
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            messages.append(msg)
            if msg.offset() >= wanted[msg.partition()][1] - 1:
                done.add(msg.partition())
        return messages
    finally:
        consumer.close()


def review_offsets(config: Config) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": dlq.review_group(config)}
    )
    try:
        tps = consumer.committed([TopicPartition(config.topics.dlq, p) for p in (0, 1)], timeout=TIMEOUT)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def audit_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kafkapipe.audit"]


# ------------------------------------------------------------------------------- list
def test_list_table_filters_and_json(env):
    now = utcnow()
    old = failed("old", "transient", failed_at=now - timedelta(hours=3))
    mid = failed("mid", "permanent", failed_at=now - timedelta(hours=1), message="HTTP 404\nnot found " * 10)
    new = failed(
        "new", "validation", failed_at=now, message=f"bad type at https://files.example.com/n?{SECRET}"
    )
    raw_reason = [("error-category", b"validation"), ("error-message", b"not a valid DownloadTask: bad")]
    coords = produce(
        env, [(0, old, None), (1, mid, None), (0, new, None), (1, b"{not json", b"k-garbage", raw_reason)]
    )

    code, out, err = tool(env, "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "PARTITION:OFFSET",
        "TASK_ID",
        "TRACE_ID",
        "CATEGORY",
        "MESSAGE",
        "FAILED_AT",
        "REPLAYED_AT",
    ]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(coords)
    assert old.task.task_id in rows[coords[0]] and "transient" in rows[coords[0]]
    assert format_ts(old.failed_at) in rows[coords[0]]
    assert "…" in rows[coords[1]] and "\n" not in rows[coords[1]]  # truncated, one line
    assert "undecodable" in rows[coords[3]] and "k-garbage" in rows[coords[3]]
    assert SECRET not in out
    assert "4 dead letter(s) shown" in err

    assert [e["task_id"] for e in listed(env, "--category", "permanent")] == [mid.task.task_id]
    assert [e["task_id"] for e in listed(env, "--category", "undecodable")] == ["k-garbage"]
    since = format_ts(now - timedelta(hours=2))
    recent = {e["task_id"] for e in listed(env, "--since", since)}
    assert recent == {mid.task.task_id, new.task.task_id, "k-garbage"}
    assert {e["task_id"] for e in listed(env, "--since", "30m")} == {new.task.task_id, "k-garbage"}
    assert len(listed(env, "--limit", "2")) == 2
    assert len(listed(env, "--limit", "1", "--category", "validation")) == 1

    docs = {e["task_id"]: e for e in listed(env)}
    entry = docs[new.task.task_id]
    assert entry["category"] == "validation"
    assert entry["trace_id"] == "trace-new"
    assert entry["attachment_url"] == "https://files.example.com/claims/new.pdf"
    assert entry["failed_at"] == format_ts(new.failed_at)
    assert (entry["partition"], entry["offset"]) == tuple(map(int, coords[2].split(":")))
    assert entry["replayed_at"] is None
    assert docs["k-garbage"]["category"] == "undecodable"
    assert docs["k-garbage"]["message"] == "not a valid DownloadTask: bad"
    revealed = {e["task_id"]: e for e in listed(env, "--reveal-url")}
    assert SECRET in revealed[new.task.task_id]["attachment_url"]
    assert SECRET in revealed[new.task.task_id]["message"]
    assert entry["message"] == "bad type at https://files.example.com/n"

    assert tool(env, "list", "--since", "yesterday")[0] == 2
    assert tool(env, "list", "--since", "2026-01-01T00:00:00")[0] == 2  # no offset
    assert tool(env, "list", "--limit", "0")[0] == 2


def test_list_of_a_missing_topic_fails_cleanly(env, unique_name):
    config = from_mapping(
        {
            "kafka": {
                "bootstrap_servers": env.kafka.bootstrap_servers,
                "group_prefix": env.kafka.group_prefix,
            },
            "topics": {"dlq": unique_name("absent")},
        }
    )
    code, _, err = tool(config, "list", "--timeout", "10")
    assert code == 1
    assert "does not exist" in err

    no_pending = from_mapping(
        {
            "kafka": {
                "bootstrap_servers": env.kafka.bootstrap_servers,
                "group_prefix": env.kafka.group_prefix,
            },
            "topics": {"dlq": env.topics.dlq, "pending": unique_name("absent")},
        }
    )
    produce(env, [(0, failed("stuck", "transient"), None)])
    code, _, err = tool(no_pending, "replay", "--all-entries", "--timeout", "10")
    assert code == 1
    assert no_pending.topics.pending in err and "does not exist" in err


# ------------------------------------------------------------------------------- show
def test_show_by_task_id_and_coordinate(env):
    first = failed("shown", "permanent")
    poison = orjson.dumps({"attachment_url": f"https://files.example.com/p.pdf?{SECRET}"})
    coords = produce(
        env,
        [(1, first, None), (0, None, b"tombstone-key"), (0, b"\xff\xfe", b"binary"), (0, poison, b"poison")],
    )

    code, out, err = tool(env, "show", first.task.task_id)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["coordinate"] == f"{env.topics.dlq}:{coords[0]}"
    assert doc["headers"] == {
        "trace_id": "trace-shown",
        "task_id": first.task.task_id,
        "kafkapipe-schema": SCHEMA_FAILED,
    }
    assert doc["value"]["task"]["task_id"] == first.task.task_id
    assert doc["value"]["error_category"] == "permanent"
    assert doc["value"]["task"]["attachment_url"] == "https://files.example.com/claims/shown.pdf"
    assert doc["replayed"] is None
    assert SECRET not in out

    code, out, _ = tool(env, "show", coords[0], "--reveal-url")
    assert code == 0
    assert SECRET in json.loads(out)["value"]["task"]["attachment_url"]

    code, out, _ = tool(env, "show", coords[1])
    assert code == 0
    doc = json.loads(out)
    assert doc["key"] == "tombstone-key" and doc["value"] is None and "empty" in doc["error"]
    code, out, _ = tool(env, "show", coords[2])
    assert code == 0
    doc = json.loads(out)
    assert "not JSON" in doc["error"] and doc["raw"] == "\ufffd\ufffd"
    code, out, _ = tool(env, "show", coords[3])
    assert code == 0
    doc = json.loads(out)
    assert doc["value"] == {"attachment_url": "https://files.example.com/p.pdf"}
    assert "not a valid FailedDownload" in doc["error"]

    assert tool(env, "show", "no-such-task")[0] == 1
    assert tool(env, "show", "1:999")[0] == 1
    assert tool(env, "show", "7:0")[0] == 1


# ----------------------------------------------------------------------------- replay
def test_replay_resets_tasks_to_pending_once(env, caplog):
    caplog.set_level(logging.INFO, logger="kafkapipe.audit")
    a = failed("a", "transient")
    b = failed("b", "transient")
    c = failed("c", "permanent")
    coords = produce(env, [(0, a, None), (1, b, None), (0, c, None), (1, b"garbage", b"bad")])

    code, out, err = tool(env, "replay", "--category", "transient", "--dry-run")
    assert code == 0, err
    assert out.count("would replay") == 2
    assert read_topic(env, env.topics.pending) == []

    before = utcnow()
    code, out, err = tool(env, "replay", "--category", "transient", "--execute")
    assert code == 0, err
    assert "replayed=2" in out and "failed=0" in out
    sent = read_topic(env, env.topics.pending)
    assert len(sent) == 2
    by_id = {m.key().decode(): m for m in sent}
    assert set(by_id) == {a.task.task_id, b.task.task_id}
    for original, coordinate in ((a, coords[0]), (b, coords[1])):
        msg = by_id[original.task.task_id]
        task = loads(msg.value(), DownloadTask)
        assert task.retry_count == 0
        assert task.retry_at is None
        assert task.last_error == ErrorInfo("transient", original.error_message)
        assert task.metadata["origin"] == "test"
        assert task.metadata["replayed_from"] == f"{env.topics.dlq}:{coordinate}"
        assert parse_ts(task.metadata["replayed_at"]) >= before - timedelta(seconds=1)
        assert (task.task_id, task.trace_id, task.attachment_url, task.blob_path) == (
            original.task.task_id,
            original.task.trace_id,
            original.task.attachment_url,
            original.task.blob_path,
        )
        assert format_ts(task.original_timestamp) == format_ts(original.task.original_timestamp)
        assert header_map(msg.headers()) == {
            "trace_id": original.task.trace_id,
            "task_id": original.task.task_id,
            "kafkapipe-schema": "download_task/1",
        }

    # The same command again sends nothing.
    code, out, err = tool(env, "replay", "--category", "transient", "--execute")
    assert code == 0, err
    assert "replayed=0" in out and "already_replayed=2" in out
    assert len(read_topic(env, env.topics.pending)) == 2

    # Everything: only c is new; the undecodable one is counted, not sent.
    code, out, err = tool(env, "replay", "--all-entries", "--execute")
    assert code == 0, err
    assert "replayed=1" in out and "already_replayed=2" in out and "undecodable=1" in out
    pending = read_topic(env, env.topics.pending)
    assert sorted(m.key().decode() for m in pending) == sorted(
        [a.task.task_id, b.task.task_id, c.task.task_id]
    )
    code, out, err = tool(env, "replay", "--all-entries", "--execute")
    assert code == 0, err
    assert "replayed=0" in out and "already_replayed=3" in out
    assert len(read_topic(env, env.topics.pending)) == 3

    # list shows when each was replayed.
    entries = {e["task_id"]: e for e in listed(env)}
    assert entries[a.task.task_id]["replayed_at"] is not None
    assert entries["bad"]["replayed_at"] is None

    audits = audit_records(caplog)
    assert [r.action for r in audits] == ["dlq.replay"] * 5
    dry, first = audits[0], audits[1]
    assert dry.dry_run is True and dry.counts["would_replay"] == 2
    assert first.dry_run is False
    assert first.counts["replayed"] == 2
    assert sorted(first.task_ids) == sorted([a.task.task_id, b.task.task_id])
    assert first.user and first.host and first.selection == "category" and first.category == "transient"
    assert audits[2].counts["replayed"] == 0 and audits[2].task_ids == []
    assert SECRET not in caplog.text
    assert review_offsets(env) == {0: OFFSET_INVALID, 1: OFFSET_INVALID}  # only ack commits


def test_replay_by_task_id_sends_each_task_once(env, caplog):
    caplog.set_level(logging.INFO, logger="kafkapipe.audit")
    earlier = failed("twice", "transient", failed_at=utcnow() - timedelta(hours=2), message="first failure")
    later = failed("twice", "transient", message="second failure")
    other = failed("other", "permanent")
    coords = produce(env, [(0, earlier, None), (0, later, None), (1, other, None)])

    code, out, err = tool(env, "replay", "--task-id", earlier.task.task_id, "missing-task", "--execute")
    assert code == 1  # one requested task has no dead letter
    assert "missing-task" in err
    assert "replayed=1" in out and "not_found=1" in out
    (msg,) = read_topic(env, env.topics.pending)
    task = loads(msg.value(), DownloadTask)
    assert task.last_error.message == "second failure"
    assert task.metadata["replayed_from"] == f"{env.topics.dlq}:{coords[1]}"

    code, out, err = tool(env, "replay", "--task-id", earlier.task.task_id, "--execute")
    assert code == 0, err
    assert "replayed=0" in out and "already_replayed=2" in out
    assert len(read_topic(env, env.topics.pending)) == 1

    (audit,) = [r for r in audit_records(caplog) if r.counts["replayed"] == 1]
    assert audit.task_ids == [earlier.task.task_id]
    assert audit.requested_task_ids == [earlier.task.task_id, "missing-task"]


# -------------------------------------------------------------------------------- ack
def test_ack_moves_the_review_group_forward_only(env, caplog):
    caplog.set_level(logging.INFO, logger="kafkapipe.audit")
    items = [failed(f"ack{i}", "transient") for i in range(4)]
    coords = produce(
        env, [(0, items[0], None), (0, items[1], None), (0, items[2], None), (1, items[3], None)]
    )
    offsets = [int(c.split(":")[1]) for c in coords]

    code, out, err = tool(env, "ack", "--partition", "0", "--offset", str(offsets[1]))
    assert code == 0, err
    assert review_offsets(env)[0] == offsets[1] + 1
    remaining = {e["task_id"] for e in listed(env)}
    assert remaining == {items[2].task.task_id, items[3].task.task_id}
    assert len(listed(env, "--all")) == 4
    assert tool(env, "show", items[0].task.task_id)[0] == 1  # hidden unless --all
    assert tool(env, "show", items[0].task.task_id, "--all")[0] == 0

    code, out, err = tool(env, "ack", "--partition", "0", "--offset", str(offsets[0]))
    assert code == 0, err
    assert "never moves backwards" in out
    assert review_offsets(env)[0] == offsets[1] + 1

    assert tool(env, "ack", "--partition", "0", "--offset", "99")[0] == 2
    assert tool(env, "ack", "--partition", "5", "--offset", "0")[0] == 2
    assert tool(env, "ack", "--partition", "0")[0] == 2
    assert tool(env, "ack", "--all", "--partition", "0")[0] == 2

    code, out, err = tool(env, "ack", "--all")
    assert code == 0, err
    assert review_offsets(env) == {0: offsets[2] + 1, 1: offsets[3] + 1}
    assert listed(env) == []

    audits = audit_records(caplog)
    assert [r.action for r in audits] == ["dlq.ack"] * 3
    assert (audits[0].partition, audits[0].offset) == (0, offsets[1])
    assert audits[0].committed == {"0": offsets[1] + 1}
    assert audits[1].counts == {"moved": 0, "unchanged": 1}
    assert audits[2].all_partitions is True and audits[2].committed == {
        "0": offsets[2] + 1,
        "1": offsets[3] + 1,
    }
    assert all(r.user and r.host for r in audits)


# -------------------------------------------------------------------------- subprocess
def write_config(env, path, audit_log) -> Path:
    """``env``'s broker and topics as a TOML file, for the command line in a subprocess."""
    topics = "\n".join(
        f'{name} = "{getattr(env.topics, name)}"'
        for name in ("events", "pending", "results", "dlq", "events_dlq", "retry_prefix")
    )
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{env.kafka.bootstrap_servers}"\n'
        f'group_prefix = "{env.kafka.group_prefix}"\n[topics]\n{topics}\n[logging]\nformat = "json"\n'
        f'[dlq]\naudit_log = "{audit_log}"\n'
    )
    return path


def test_command_line_subprocess(env, tmp_path):
    entry = failed("cli", "transient")
    (coordinate,) = produce(env, [(1, entry, None)])
    config_file = write_config(env, tmp_path / "pipeline.toml", env.dlq.audit_log)
    envvars = {k: v for k, v in os.environ.items() if not k.startswith("KAFKAPIPE_")}

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "kafkapipe.cli", "dlq", *argv, "--config", str(config_file)],
            cwd=ROOT,
            env=envvars,
            capture_output=True,
            text=True,
            timeout=120,
        )

    proc = cli("list", "--json")
    assert proc.returncode == 0, proc.stderr
    (doc,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert doc["task_id"] == entry.task.task_id and f"{doc['partition']}:{doc['offset']}" == coordinate

    proc = cli("replay", "--task-id", entry.task.task_id, "--execute")
    assert proc.returncode == 0, proc.stderr
    assert "replayed=1" in proc.stdout
    audit = [orjson.loads(line) for line in proc.stderr.splitlines() if '"kafkapipe.audit"' in line]
    assert len(audit) == 1
    assert audit[0]["action"] == "dlq.replay" and audit[0]["task_ids"] == [entry.task.task_id]
    assert audit[0]["user"] and audit[0]["host"]
    assert SECRET not in proc.stderr

    proc = cli("replay", "--task-id", entry.task.task_id, "--execute")
    assert proc.returncode == 0, proc.stderr
    assert "replayed=0" in proc.stdout
    assert len(read_topic(env, env.topics.pending)) == 1

    assert cli("ack", "--all").returncode == 0
    assert cli("list", "--json").stdout == ""
    assert cli("list", "--limit", "0").returncode == 2
