from datetime import UTC, datetime, timedelta

from kafkapipe.inventory.sqlite import SqliteInventory
from kafkapipe.messages import DownloadResult

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def result(status, at, attempt=1, task_id="t1"):
    return DownloadResult(task_id=task_id, trace_id="tr", attachment_url="u", blob_path="p", status=status,
                          attempt=attempt, completed_at=at, duration_ms=5)


def test_success_is_never_replaced_by_a_failure(tmp_path):
    inv = SqliteInventory(tmp_path / "i.sqlite3")
    inv.upsert([result("failed_transient", T0), result("success", T0 + timedelta(seconds=5), 2)])
    inv.upsert([result("failed_transient", T0 + timedelta(seconds=9), 3)])
    row = inv.get("t1")
    assert row["status"] == "success" and row["attempt"] == 2
    assert inv.count() == 1


def test_failures_keep_the_latest_and_duplicates_add_no_rows(tmp_path):
    inv = SqliteInventory(tmp_path / "i.sqlite3")
    later = result("failed_transient", T0 + timedelta(seconds=5), 2)
    inv.upsert([later])
    inv.upsert([result("failed_transient", T0, 1)])  # an old duplicate arriving late
    assert inv.get("t1")["attempt"] == 2
    inv.upsert([later, later])
    assert inv.summary() == {"failed_transient": 1}


def test_replayed_task_can_succeed_after_permanent_failure(tmp_path):
    inv = SqliteInventory(tmp_path / "i.sqlite3")
    inv.upsert([result("failed_permanent", T0, 3)])
    inv.upsert([result("success", T0 + timedelta(minutes=1), 1)])
    assert inv.get("t1")["status"] == "success"
