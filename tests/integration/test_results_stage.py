"""The results stage on both inventory backends: real broker, real worker processes.

Four results workers in separate processes consume one results topic whose messages for the
same task are spread over every partition, so overlapping task ids are written concurrently by
different processes. Whatever the interleaving: one row per task, no success downgraded, and
among failures the latest attempt kept.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from confluent_kafka import Producer
from inventoryhelpers import BACKENDS, T0, as_table, inventory_config, result
from kafkahelpers import wait_for
from pipelinehelpers import Pipeline

from kafkapipe.inventory import open_inventory
from kafkapipe.messages import dumps

WORKERS = 4
TASKS = 240
PARTITIONS = 8


@pytest.fixture(params=BACKENDS)
def inventory(request, tmp_path):
    return inventory_config(request.param, tmp_path, request)


@pytest.fixture
def pipeline(tmp_path, kafka_bootstrap, kafka_admin, unique_name, inventory):
    pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("results"), 443, overrides={
        "inventory": as_table(inventory),
        "topics": {"partitions": PARTITIONS},
        "stages": {"results": {"batch_size": 20, "batch_timeout": 0.1}},
    })
    pipe.create_topics(kafka_admin)
    yield pipe
    pipe.stop()


def task_history(rng: random.Random) -> tuple[dict, list]:
    """Every task's results (failures, for most a success, duplicates) and what must remain."""
    expected, messages = {}, []
    for i in range(TASKS):
        task = f"{i:032x}"  # a task id as make_task_id gives: 32 lowercase hex digits
        attempts = rng.randint(1, 4)
        succeeds = rng.random() < 0.7
        history = [result("failed_transient", T0 + timedelta(seconds=a), a, task) for a in range(1, attempts)]
        history.append(result("success" if succeeds else "failed_permanent", T0 + timedelta(seconds=attempts),
                              attempts, task))
        expected[task] = (history[-1].status, attempts)
        if succeeds and rng.random() < 0.5:  # a redelivered copy failing after the success: ignored
            history.append(result("failed_transient", T0 + timedelta(seconds=attempts + 5), attempts + 1, task))
        messages.extend(history * 2)  # every result delivered twice
    rng.shuffle(messages)
    return expected, messages


def members(admin, group: str) -> int:
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return len(described.members) if str(described.state).endswith("STABLE") else 0


def test_four_results_workers_write_overlapping_tasks_one_row_each_no_success_downgraded(
        pipeline, kafka_bootstrap, kafka_admin, inventory):
    for _ in range(WORKERS):
        pipeline.start_worker("results")
    group = f"{pipeline.data['kafka']['group_prefix']}.results"
    wait_for(lambda: members(kafka_admin, group) == WORKERS, 90, f"{WORKERS} results workers in the group")

    expected, messages = task_history(random.Random(15))
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    rng = random.Random(16)
    for msg in messages:  # a task's results land on random partitions: different workers
        producer.produce(pipeline.topics["results"], value=dumps(msg), partition=rng.randrange(PARTITIONS))
        producer.poll(0)
    assert producer.flush(30) == 0
    pipeline.wait_caught_up("results", pipeline.topics["results"], timeout=120)

    assert all(p.poll() is None for p in pipeline.procs), pipeline.logs()[-4000:]
    store = open_inventory(inventory)
    try:
        rows = {r.task_id: r for r in store.changed_since(None, limit=10 * TASKS)}
        assert store.count() == TASKS
    finally:
        store.close()
    assert set(rows) == set(expected)
    wrong = {t: (rows[t].status, rows[t].attempt, want) for t, want in expected.items()
             if (rows[t].status, rows[t].attempt) != want}
    assert not wrong, f"{len(wrong)} task(s) with the wrong final row, e.g. {list(wrong.items())[:5]}"


def test_a_worker_refuses_an_inventory_at_another_schema_version(pipeline, inventory):
    store = open_inventory(inventory)
    version = store.schema_version()
    store.close()
    _force_version(inventory, version + 1)
    pipeline.expected_exits = {2}
    proc = pipeline.start_worker("results")
    assert proc.wait(60) == 2, pipeline.logs()[-3000:]
    assert "newer than this kafkapipe" in pipeline.logs()


def test_inventory_cli_migrates_and_summarises(pipeline, inventory):
    _force_version(inventory, 0 if inventory.backend == "postgresql" else 1)
    refused = pipeline.cli("inventory", "summary", "--config", str(pipeline.config_path), check=False)
    assert refused.returncode == 2 and "inventory migrate" in refused.stderr
    migrated = pipeline.cli("inventory", "migrate", "--config", str(pipeline.config_path))
    assert "schema at version" in migrated.stdout
    again = pipeline.cli("inventory", "migrate", "--config", str(pipeline.config_path))
    assert "already at version" in again.stdout
    store = open_inventory(inventory)
    store.upsert([result("success", T0, task_id="a"), result("failed_permanent", T0, task_id="b")])
    store.close()
    summary = pipeline.cli("inventory", "summary", "--config", str(pipeline.config_path)).stdout.split()
    assert summary == ["failed_permanent", "1", "success", "1", "total", "2"]


def _force_version(config, version: int) -> None:
    """Rewrite the schema version table (0 on PostgreSQL: drop the schema entirely)."""
    store = open_inventory(config, check_schema=False)
    try:
        if config.backend == "sqlite":
            store._db.execute("DELETE FROM inventory_schema")
            if version == 1:
                store._db.execute("DROP TABLE inventory_schema")
                store._db.execute("DROP INDEX attachments_url")
                store._db.execute("DROP INDEX attachments_updated")
                store._db.execute("ALTER TABLE attachments DROP COLUMN url_sha256")
            else:
                store._db.execute("INSERT INTO inventory_schema VALUES (?, 'test')", (version,))
            return
        with store._pool.connection() as conn:
            if version == 0:
                conn.execute("DROP TABLE inventory_schema")
                conn.execute("DROP TABLE attachments")
            else:
                conn.execute("DELETE FROM inventory_schema")
                conn.execute("INSERT INTO inventory_schema (version) VALUES (%s)", (version,))
    finally:
        store.close()
