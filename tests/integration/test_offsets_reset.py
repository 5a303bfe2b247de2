"""``kafkapipe offsets reset`` on the real broker: plan only without --execute, refused while the group
has a live member, and after --execute the stage (a real ingest worker) reprocesses from the time."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer
from kafkahelpers import wait_for
from pipelinehelpers import Pipeline, event

from kafkapipe.config import load
from kafkapipe.kafka.offsets_reset import live_members

T_OLD = 1_764_000_000_000  # epoch ms, 2025-11-24
T_NEW = T_OLD + 3_600_000


@pytest.fixture
def pipeline(tmp_path, kafka_bootstrap, kafka_admin, unique_name, fault_server):
    pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("off"), fault_server.port)
    pipe.create_topics(kafka_admin)
    yield pipe
    pipe.stop()


def produce_at(pipe: Pipeline, server, timestamp_ms: int, traces: list[str]) -> None:
    producer = Producer({"bootstrap.servers": pipe.bootstrap})
    for trace in traces:
        value = json.dumps(event(trace, [server.url(f"/{trace}.pdf")])).encode()
        producer.produce(pipe.topics["events"], value=value, key=trace.encode(), timestamp=timestamp_ms)
    assert producer.flush(30) == 0


def test_reset_to_datetime_replays_from_there(pipeline, fault_server):
    produce_at(pipeline, fault_server, T_OLD, [f"old-{i}" for i in range(6)])
    produce_at(pipeline, fault_server, T_NEW, [f"new-{i}" for i in range(4)])
    worker = pipeline.start_worker("ingest")
    pipeline.wait_caught_up("ingest", pipeline.topics["events"], timeout=90)
    wait_for(lambda: pipeline.count(pipeline.topics["pending"]) == 10, 30, "10 tasks on pending")
    reset = ["offsets", "reset", "--config", str(pipeline.config_path), "--stage", "ingest",
             "--to-datetime", "2025-11-24T16:30:00+00:00"]  # between the two batches

    refused = pipeline.cli(*reset, "--execute", check=False)
    assert refused.returncode == 1 and "live member" in refused.stderr, refused.stdout + refused.stderr
    assert pipeline.lag("ingest", pipeline.topics["events"]) == 0

    pipeline.stop()
    assert worker.poll() is not None
    config = load(pipeline.config_path, environ={})
    wait_for(lambda: not live_members(config, f"{config.kafka.group_prefix}.ingest"), 60, "the group to empty")

    planned = pipeline.cli(*reset)
    assert "plan; --execute applies" in planned.stdout
    assert pipeline.lag("ingest", pipeline.topics["events"]) == 0  # a plan changes nothing
    moved = [line for line in planned.stdout.splitlines() if "→" in line and "[" in line]
    assert len(moved) == 3, planned.stdout

    applied = pipeline.cli(*reset, "--execute")
    assert "applied: 3 partition(s) moved" in applied.stdout
    assert pipeline.lag("ingest", pipeline.topics["events"]) == 4  # exactly the newer batch

    pipeline.start_worker("ingest")
    pipeline.wait_caught_up("ingest", pipeline.topics["events"], timeout=90)
    wait_for(lambda: pipeline.count(pipeline.topics["pending"]) == 14, 30, "the newer batch ingested again")
    tasks = pipeline.read_topic(pipeline.topics["pending"], 14)
    again = [json.loads(m.value())["trace_id"] for m in tasks]
    assert sorted(t for t in again if again.count(t) == 2) == sorted([f"new-{i}" for i in range(4)] * 2)
