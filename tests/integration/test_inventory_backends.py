"""The inventory's rules on every backend: SQLite and a real PostgreSQL server, one suite."""

from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inventoryhelpers import BACKENDS, T0, inventory_config, result

from kafkapipe.inventory import SchemaMismatch, open_inventory
from kafkapipe.messages import DownloadResult

SIGNATURE = "d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKENcanary"
PRESIGNED = (
    "https://claims-bucket.s3.eu-west-1.amazonaws.com/claims/42/estimate.pdf"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261125%2Feu-west-1%2Fs3%2Faws4_request"
    f"&X-Amz-Date=20261125T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    f"&X-Amz-Security-Token={TOKEN}&X-Amz-Signature={SIGNATURE}"
)


@pytest.fixture(params=BACKENDS)
def config(request, tmp_path):
    return inventory_config(request.param, tmp_path, request)


@pytest.fixture
def inv(config):
    inventory = open_inventory(config)
    yield inventory
    inventory.close()


def test_success_is_never_replaced_by_a_failure(inv):
    inv.upsert([result("failed_transient", T0), result("success", T0 + timedelta(seconds=5), 2)])
    inv.upsert([result("failed_transient", T0 + timedelta(seconds=9), 3)])
    row = inv.lookup("t1")
    assert row.status == "success" and row.attempt == 2
    assert inv.count() == 1


def test_failures_keep_the_latest_and_duplicates_add_no_rows(inv):
    later = result("failed_transient", T0 + timedelta(seconds=5), 2)
    inv.upsert([later])
    inv.upsert([result("failed_transient", T0, 1)])  # an old duplicate arriving late
    assert inv.lookup("t1").attempt == 2
    inv.upsert([later, later])
    assert inv.summary() == {"failed_transient": 1}


def test_replayed_task_can_succeed_after_permanent_failure(inv):
    inv.upsert([result("failed_permanent", T0, 3)])
    inv.upsert([result("success", T0 + timedelta(minutes=1), 1)])
    assert inv.lookup("t1").status == "success"


def test_a_batch_is_one_transaction(inv):
    broken = DownloadResult(task_id="t2", trace_id=None, attachment_url="u", blob_path="p", status="success",
                            attempt=1, completed_at=T0, duration_ms=1)
    with pytest.raises(Exception, match="(?i)null"):
        inv.upsert([result("success", T0, task_id="t1"), broken])
    assert inv.count() == 0, "the good row of a failed batch must not be written either"


def test_lookup_finds_the_row_or_nothing(inv):
    inv.upsert([result("success", T0, task_id="stored"), result("failed_permanent", T0, task_id="lost")])
    assert inv.lookup("stored").status == "success"
    assert inv.lookup("lost").status == "failed_permanent"
    assert inv.lookup("never-seen") is None
    assert inv.lookup("' OR 1=1 --") is None


def test_presigned_url_credentials_are_not_stored(inv, config):
    inv.upsert([DownloadResult(task_id="p1", trace_id="tr", attachment_url=PRESIGNED, blob_path="p",
                               status="failed_transient", attempt=1, completed_at=T0, duration_ms=5,
                               error_message=f"HTTP 503 from {PRESIGNED}")])
    row = inv.lookup("p1")
    assert row.attachment_url == "https://claims-bucket.s3.eu-west-1.amazonaws.com/claims/42/estimate.pdf"
    assert row.url_sha256 == hashlib.sha256(PRESIGNED.encode()).hexdigest()
    assert SIGNATURE not in (row.error_message or "") and TOKEN not in (row.error_message or "")
    for secret in (SIGNATURE, TOKEN, "X-Amz-Credential"):
        assert secret.encode() not in _stored_bytes(config, inv), secret


def test_changed_since_pages_through_rows_written_in_one_batch(inv):
    inv.upsert([result("success", T0, task_id=f"t{i:03}") for i in range(25)])
    seen, since, after = [], None, ""
    while page := inv.changed_since(since, after, limit=10):
        seen.extend(r.task_id for r in page)
        since, after = page[-1].updated_at, page[-1].task_id
    assert seen == [f"t{i:03}" for i in range(25)]


def test_migrate_is_idempotent_and_a_schema_of_another_version_is_refused(config):
    inventory = open_inventory(config)
    try:
        assert inventory.migrate() == []
        version = inventory.schema_version()
        _set_version(config, inventory, version + 1)
        with pytest.raises(SchemaMismatch, match="newer"):
            inventory.check_schema()
        _set_version(config, inventory, version - 1)
        with pytest.raises(SchemaMismatch, match="inventory migrate"):
            inventory.check_schema()
    finally:
        inventory.close()
    with pytest.raises(SchemaMismatch):
        open_inventory(config)


# ----------------------------------------------------------------------------------- helpers
def _stored_bytes(config, inv) -> bytes:
    """Everything the database holds for the table, as bytes: the files, or a dump of the rows."""
    if config.backend == "sqlite":
        inv._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return b"".join(p.read_bytes() for p in Path(config.path).parent.glob("inventory.sqlite3*"))
    with inv._pool.connection() as conn:
        return "\n".join(str(r) for r in conn.execute("SELECT a::text FROM attachments a")).encode()


def _set_version(config, inv, version: int) -> None:
    if config.backend == "sqlite":
        inv._db.execute("DELETE FROM inventory_schema")
        inv._db.execute("INSERT INTO inventory_schema VALUES (?, 'test')", (version,))
        return
    with inv._pool.connection() as conn:
        conn.execute("DELETE FROM inventory_schema")
        conn.execute("INSERT INTO inventory_schema (version) VALUES (%s)", (version,))


def test_lookups_from_many_threads_while_batches_are_written(inv):
    """The download stage's pre-download check asks from its thread pool while results are written."""
    written = [f"t{i:04}" for i in range(400)]
    errors: list[BaseException] = []

    def writer():
        try:
            for start in range(0, len(written), 40):
                inv.upsert([result("success", T0, task_id=t) for t in written[start:start + 40]])
        except BaseException as exc:
            errors.append(exc)

    def reader():
        try:
            for task in written:
                row = inv.lookup(task)
                assert row is None or row.task_id == task
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:3]
    assert all(inv.lookup(t).status == "success" for t in written)


_delivery = st.tuples(
    st.sampled_from(["success", "failed_transient", "failed_permanent"]),
    st.integers(min_value=0, max_value=5),  # completed_at, seconds after T0 (ties included)
    st.integers(min_value=1, max_value=4),  # attempt
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deliveries=st.lists(_delivery, min_size=1, max_size=8), cut=st.integers(min_value=1, max_value=8))
def test_any_delivery_order_ends_in_the_rule_s_row(inv, deliveries, cut):
    """Redeliveries in any order and any batching: a success stays; else the latest failure."""
    task = f"prop-{uuid.uuid4().hex}"
    results = [result(s, T0 + timedelta(seconds=at), attempt, task) for s, at, attempt in deliveries]
    for start in range(0, len(results), cut):
        inv.upsert(results[start:start + cut])
    row = inv.lookup(task)
    successes = [(r.completed_at, r.attempt) for r in results if r.status == "success"]
    if successes:
        assert row.status == "success" and (row.completed_at, row.attempt) in successes
        first = next(r for r in results if r.status == "success")
        assert (row.completed_at, row.attempt) == (first.completed_at, first.attempt), "the first success stays"
    else:
        latest = max(r.completed_at for r in results)
        last_latest = [r for r in results if r.completed_at == latest][-1]
        assert (row.status, row.completed_at, row.attempt) == (
            last_latest.status, last_latest.completed_at, last_latest.attempt)


def test_by_trace_gives_every_row_of_one_claim_and_no_other(inv):
    import attrs

    inv.upsert([
        attrs.evolve(result("success", T0 + timedelta(seconds=2), task_id="b"), trace_id="CLM-1"),
        attrs.evolve(result("failed_permanent", T0, 3, task_id="a"), trace_id="CLM-1"),
        attrs.evolve(result("success", T0, task_id="c"), trace_id="CLM-10"),  # a prefix is not a match
        attrs.evolve(result("success", T0, task_id="d"), trace_id="clm-1"),  # nor another case
    ])
    rows = inv.by_trace("CLM-1")
    assert [(r.task_id, r.status, r.attempt) for r in rows] == [("a", "failed_permanent", 3), ("b", "success", 1)]
    assert inv.by_trace("CLM-%") == [] and inv.by_trace("") == []
