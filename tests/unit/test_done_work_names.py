"""An already stored body is found under the name it was published with (the detected type's
extension), and the success result names where it is stored."""

from __future__ import annotations

import orjson
import pytest

from kafkapipe import config as cfg
from kafkapipe.config import InventoryConfig
from kafkapipe.inventory import open_inventory
from kafkapipe.kafka.loop import Done
from kafkapipe.messages import STATUS_SUCCESS, DownloadResult, DownloadTask, make_task_id, utcnow
from kafkapipe.paths import blob_path, stored_path
from kafkapipe.stages.donework import RecordedInInventory, StoredInStorage
from kafkapipe.stages.download import DownloadStage
from kafkapipe.storage.local import LocalStorage

BODY = b"%PDF-1.4\n%stored earlier\n"


class NoFetch:
    calls = 0

    def fetch(self, url, writer):
        self.calls += 1
        raise AssertionError("an already stored body must not be downloaded again")

    def close(self) -> None:
        pass


def task(url: str) -> DownloadTask:
    now = utcnow()
    task_id = make_task_id("trace-1", url)
    return DownloadTask(task_id=task_id, trace_id="trace-1", attachment_url=url,
                        blob_path=blob_path(task_id, "trace-1", url, "xact", now), event_type="e",
                        event_subtype="e", source_system="xact", original_timestamp=now, created_at=now)


def publish(storage: LocalStorage, path: str, extension: str) -> str:
    writer = storage.open_writer(path)
    writer.use_extension(extension)
    writer.write(BODY)
    writer.commit()
    return stored_path(path, extension)


@pytest.mark.parametrize(
    ("url", "extension", "suffix"),
    [
        ("https://files.example.com/claims/42/download", "pdf", "-download.pdf"),
        ("https://files.example.com/claims/photo.jpeg", "jpg", "-photo.jpg"),
        ("https://files.example.com/claims/invoice.pdf", "pdf", "-invoice.pdf"),
    ],
)
def test_a_body_stored_under_its_detected_extension_is_found(tmp_path, url, extension, suffix) -> None:
    storage = LocalStorage(tmp_path / "blobs")
    the_task = task(url)
    stored_as = publish(storage, the_task.blob_path, extension)
    assert stored_as.endswith(suffix)
    found = StoredInStorage(storage, cfg.DownloadConfig().allowed_file_types).lookup(the_task)
    assert found is not None
    assert (found.path, found.bytes) == (stored_as, len(BODY))


def test_nothing_stored_is_not_found(tmp_path) -> None:
    (tmp_path / "blobs").mkdir()
    storage = LocalStorage(tmp_path / "blobs")
    the_task = task("https://files.example.com/claims/42/download")
    assert StoredInStorage(storage, cfg.DownloadConfig().allowed_file_types).lookup(the_task) is None


@pytest.fixture
def stage(tmp_path):
    config = cfg.from_mapping({"storage": {"root": str(tmp_path / "blobs")}}, "test.toml")
    made = DownloadStage(config)
    made.fetcher.close()
    made.fetcher = NoFetch()  # type: ignore[assignment]
    made._host = lambda url: "files.example.com"  # type: ignore[method-assign]
    yield made
    made.close()


def test_the_stage_reports_the_stored_name_without_downloading(stage) -> None:
    the_task = task("https://files.example.com/claims/42/download")
    stored_as = publish(stage.storage, the_task.blob_path, "pdf")
    verdict = stage.attempt(the_task)
    assert isinstance(verdict, Done) and stage.fetcher.calls == 0
    result = orjson.loads(verdict.outputs[0].value)
    assert result["status"] == STATUS_SUCCESS
    assert result["blob_path"] == stored_as != the_task.blob_path
    assert result["bytes"] == len(BODY)


def test_an_inventory_hit_reports_the_rows_blob_path(tmp_path) -> None:
    the_task = task("https://files.example.com/claims/42/download")
    stored_as = stored_path(the_task.blob_path, "pdf")
    inventory = open_inventory(InventoryConfig(backend="sqlite", path=str(tmp_path / "inventory.sqlite3")))
    try:
        inventory.upsert([DownloadResult(
            task_id=the_task.task_id, trace_id=the_task.trace_id, attachment_url=the_task.attachment_url,
            blob_path=stored_as, status=STATUS_SUCCESS, attempt=1, completed_at=utcnow(), duration_ms=1,
            http_status=200, bytes=len(BODY), sha256="b" * 64,
        )])
        found = RecordedInInventory(inventory).lookup(the_task)
    finally:
        inventory.close()
    assert found is not None and found.path == stored_as
