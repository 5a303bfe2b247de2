"""Fields that come off a topic are bounded: task ids are what make_task_id gives, trace ids are as
short as events require, a result's numbers are ones a download can produce; and one row whose
number Arrow cannot hold does not stop the export."""

from __future__ import annotations

import sqlite3

import orjson
import pyarrow.parquet as pq
import pytest
from fakekafka import FakeMessage

from kafkapipe.config import InventoryConfig, from_mapping
from kafkapipe.inventory import open_inventory
from kafkapipe.inventory.export import ParquetTarget, export
from kafkapipe.kafka.loop import Done
from kafkapipe.messages import (
    MAX_RETRY_COUNT,
    DownloadResult,
    DownloadTask,
    InvalidMessage,
    dumps,
    loads,
    make_task_id,
    utcnow,
)
from kafkapipe.stages.results import ResultsStage

URL = "https://files.example.com/a.pdf"
TASK_ID = make_task_id("tr", URL)


def result_json(**changes) -> bytes:
    base = DownloadResult(task_id=TASK_ID, trace_id="tr", attachment_url=URL, blob_path="p/a.pdf",
                          status="success", attempt=1, completed_at=utcnow(), duration_ms=5, http_status=200,
                          bytes=5)
    return orjson.dumps({**orjson.loads(dumps(base)), **changes})


def task_json(**changes) -> bytes:
    now = utcnow()
    base = DownloadTask(task_id=TASK_ID, trace_id="tr", attachment_url=URL, blob_path="p/a.pdf", event_type="e",
                        event_subtype="e", source_system="s", original_timestamp=now, created_at=now)
    return orjson.dumps({**orjson.loads(dumps(base)), **changes})


BAD_IDS = ["t" * 32, TASK_ID.upper(), TASK_ID[:31], TASK_ID + "0", "../../etc", ""]


@pytest.mark.parametrize("task_id", BAD_IDS)
def test_a_task_id_that_is_not_32_lowercase_hex_is_invalid(task_id: str) -> None:
    for make, cls in ((task_json, DownloadTask), (result_json, DownloadResult)):
        with pytest.raises(InvalidMessage, match="task_id"):
            loads(make(task_id=task_id), cls)


@pytest.mark.parametrize("trace_id", ["", "x" * 257, "漢" * 1500])
def test_a_trace_id_longer_than_events_allow_is_invalid(trace_id: str) -> None:
    for make, cls in ((task_json, DownloadTask), (result_json, DownloadResult)):
        with pytest.raises(InvalidMessage, match="trace_id"):
            loads(make(trace_id=trace_id), cls)


@pytest.mark.parametrize(("field", "value"), [
    ("http_status", 99), ("http_status", 600), ("http_status", 2**40), ("http_status", -200),
    ("attempt", 0), ("attempt", -1), ("attempt", MAX_RETRY_COUNT + 1),
    ("bytes", -1), ("bytes", 2**63),
])
def test_a_result_number_out_of_range_is_invalid(field: str, value: int) -> None:
    with pytest.raises(InvalidMessage, match=field):
        loads(result_json(**{field: value}), DownloadResult)


@pytest.mark.parametrize("changes", [
    {}, {"trace_id": "x" * 256}, {"http_status": None}, {"http_status": 100}, {"http_status": 599},
    {"attempt": MAX_RETRY_COUNT}, {"bytes": None}, {"bytes": 0}, {"bytes": 2**63 - 1},
])
def test_values_at_the_bounds_are_valid(changes: dict) -> None:
    loads(result_json(**changes), DownloadResult)


def test_the_results_stage_dead_letters_an_out_of_range_result(tmp_path) -> None:
    config = from_mapping({"inventory": {"path": str(tmp_path / "inventory.sqlite3")},
                           "storage": {"root": str(tmp_path / "blobs")}}, "test.toml")
    stage = ResultsStage(config)
    try:
        verdicts: list = []
        stage.handle([FakeMessage(config.topics.results, 0, 0, result_json(http_status=2**40))],
                     lambda m, v: verdicts.append(v))
        assert len(verdicts) == 1 and isinstance(verdicts[0], Done)
        assert [o.topic for o in verdicts[0].outputs] == [config.topics.dlq]
        assert stage.inventory.lookup(TASK_ID) is None
    finally:
        stage.close()


def test_a_row_arrow_cannot_hold_does_not_stop_the_export(tmp_path) -> None:
    path = tmp_path / "inventory.sqlite3"
    config = from_mapping({"inventory": {"path": str(path)}, "storage": {"root": str(tmp_path / "blobs")}},
                          "test.toml")
    inventory = open_inventory(InventoryConfig(backend="sqlite", path=str(path)))
    try:
        other = make_task_id("tr", URL + "?2")
        inventory.upsert([loads(result_json(), DownloadResult),
                          loads(result_json(task_id=other, attachment_url=URL + "?2"), DownloadResult)])
        with sqlite3.connect(path) as db:  # as something other than the results stage could have
            db.execute("UPDATE attachments SET http_status = ? WHERE task_id = ?", (2**40, TASK_ID))
        target = tmp_path / "out.parquet"
        report = export(inventory, str(target), "parquet", config)
        assert report.rows == 2
        table = pq.read_table(target).to_pydict()
        exported = dict(zip(table["task_id"], table["http_status"], strict=True))
        assert exported == {TASK_ID: None, other: 200}
        assert ParquetTarget(str(target)).watermark() is not None
    finally:
        inventory.close()
