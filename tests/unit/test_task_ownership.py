"""A task's id is derived from its trace and URL: a forged task cannot take over another task's row,
and an inventory row answers only for the task (trace and URL) it was written for."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
import pytest

from kafkapipe import paths
from kafkapipe.config import InventoryConfig
from kafkapipe.errors import ValidationError
from kafkapipe.inventory import open_inventory
from kafkapipe.messages import STATUS_SUCCESS, DownloadResult, DownloadTask, make_task_id
from kafkapipe.security.tasks import check_task
from kafkapipe.stages.donework import RecordedInInventory

WHEN = datetime(2026, 11, 25, 19, 9, 22, tzinfo=UTC)
VICTIM_URL = "https://files.example.com/claims/invoice.pdf?X-Amz-Signature=abc"
ATTACKER_URL = "https://attacker.example.net/harmless.pdf"


def task(trace_id: str, url: str, task_id: str | None = None) -> DownloadTask:
    task_id = task_id or make_task_id(trace_id, url)
    return DownloadTask(
        task_id=task_id, trace_id=trace_id, attachment_url=url,
        blob_path=paths.blob_path(task_id, trace_id, url, "xact", WHEN),
        event_type="t", event_subtype="s", source_system="xact", original_timestamp=WHEN, created_at=WHEN,
    )


def success(of: DownloadTask) -> DownloadResult:
    return DownloadResult(task_id=of.task_id, trace_id=of.trace_id, attachment_url=of.attachment_url,
                          blob_path=of.blob_path, status=STATUS_SUCCESS, attempt=1, completed_at=WHEN,
                          duration_ms=1, http_status=200, bytes=5, sha256="a" * 64)


def test_a_task_carrying_another_tasks_id_is_refused() -> None:
    victim = task("trace-victim", VICTIM_URL)
    forged = task("trace-attacker", ATTACKER_URL, task_id=victim.task_id)  # its blob_path is self-consistent
    with pytest.raises(ValidationError, match="task_id refused") as caught:
        check_task(forged)
    assert caught.value.category == "validation"


@pytest.mark.parametrize("changes", [{"trace_id": "trace-other"}, {"attachment_url": ATTACKER_URL}])
def test_a_task_id_not_derived_from_trace_and_url_is_refused(changes: dict) -> None:
    with pytest.raises(ValidationError, match="task_id refused"):
        check_task(attrs.evolve(task("trace-victim", VICTIM_URL), **changes))


def test_a_task_whose_id_is_derived_passes() -> None:
    check_task(task("trace-victim", VICTIM_URL))


@pytest.fixture
def inventory(tmp_path):
    made = open_inventory(InventoryConfig(backend="sqlite", path=str(tmp_path / "inventory.sqlite3")))
    yield made
    made.close()


def test_an_inventory_success_answers_for_its_own_task(inventory) -> None:
    victim = task("trace-victim", VICTIM_URL)
    inventory.upsert([success(victim)])
    found = RecordedInInventory(inventory).lookup(victim)
    assert found is not None and found.bytes == 5


@pytest.mark.parametrize(
    ("trace_id", "url"),
    [("trace-attacker", VICTIM_URL), ("trace-victim", ATTACKER_URL), ("trace-attacker", ATTACKER_URL)],
)
def test_a_row_written_for_another_trace_or_url_is_not_taken_as_done(inventory, trace_id: str, url: str) -> None:
    victim = task("trace-victim", VICTIM_URL)
    forged_row = attrs.evolve(success(victim), trace_id=trace_id, attachment_url=url)
    inventory.upsert([forged_row])
    assert RecordedInInventory(inventory).lookup(victim) is None
