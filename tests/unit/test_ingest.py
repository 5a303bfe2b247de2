"""The ingest stage's outputs: a task per attachment that passes the static URL check, a permanent
failure (result and DLQ entry) per one that does not, the same bytes for the same event."""

from __future__ import annotations

import orjson
import pytest
from fakekafka import FakeMessage

from kafkapipe.config import from_mapping
from kafkapipe.kafka.loop import Done
from kafkapipe.messages import SCHEMA_TASK, DownloadTask, loads, make_task_id
from kafkapipe.paths import blob_path
from kafkapipe.security.tasks import check_task
from kafkapipe.stages.ingest import IngestStage

REFUSED = ["http://127.1/a.pdf", "http://0x7f000001/a.pdf", "http://[::ffff:127.0.0.1]/a.pdf",
           "http://169.254.169.254/latest", "http://localhost/a.pdf", "ftp://files.example.com/a.pdf",
           "https://user@files.example.com/a.pdf", "https://files.example.com:8443/a.pdf",
           "https://files.example.com\\@127.0.0.1/a.pdf", "https://evil.com/a.pdf"]
GOOD = ["https://files.example.com/claims/a.pdf?sig=1", "https://FILES.example.com/b%20c.pdf"]


@pytest.fixture
def stage(tmp_path):
    return IngestStage(from_mapping({
        "inventory": {"path": str(tmp_path / "inventory.sqlite3")},
        "download": {"allowed_host_suffixes": ["example.com"]},
    }))


def event(trace_id: str, attachments: list[str]) -> bytes:
    return orjson.dumps({"trace_id": trace_id, "event_type": "xact.claims.documentsReceived",
                         "timestamp": "2026-11-25T19:09:22.123Z", "source_system": "xact",
                         "attachments": attachments})


def handled(stage: IngestStage, values: list[bytes]) -> list[Done]:
    verdicts: list = []
    messages = [FakeMessage(stage.topics[0], 0, i, value) for i, value in enumerate(values)]
    stage.handle(messages, lambda _msg, verdict: verdicts.append(verdict))
    return verdicts


def test_every_refused_url_fails_permanently_and_only_good_ones_become_tasks(stage) -> None:
    for _ in range(2):  # the second time with the validator's remembered authorities
        [verdict] = handled(stage, [event("T-1", GOOD + REFUSED + GOOD)])
        pending = [o for o in verdict.outputs if o.topic == stage.topics_config.pending]
        dead = [o for o in verdict.outputs if o.topic == stage.topics_config.dlq]
        assert [loads(o.value, DownloadTask).attachment_url for o in pending] == GOOD
        assert sorted(orjson.loads(o.value)["task"]["attachment_url"] for o in dead) == sorted(REFUSED)
        assert {orjson.loads(o.value)["error_category"] for o in dead} == {"validation"}


def test_tasks_are_what_their_fields_derive_and_a_batch_shares_its_creation_time(stage) -> None:
    verdicts = handled(stage, [event(f"T-{i}", GOOD) for i in range(5)])
    tasks = [loads(o.value, DownloadTask) for v in verdicts for o in v.outputs]
    assert len(tasks) == 10
    for task, out in zip(tasks, [o for v in verdicts for o in v.outputs], strict=True):
        check_task(task)
        assert task.task_id == make_task_id(task.trace_id, task.attachment_url)
        assert task.blob_path == blob_path(task.task_id, task.trace_id, task.attachment_url, "xact",
                                           task.original_timestamp)
        assert out.headers == [("trace_id", task.trace_id.encode()), ("task_id", task.task_id.encode()),
                               ("kafkapipe-schema", SCHEMA_TASK.encode())]
    assert len({task.created_at for task in tasks}) == 1
    again = handled(stage, [event(f"T-{i}", GOOD) for i in range(5)])
    assert [_without_created(o.value) for v in again for o in v.outputs] == [
        _without_created(o.value) for v in verdicts for o in v.outputs]


def _without_created(data: bytes) -> dict:
    return {k: v for k, v in orjson.loads(data).items() if k != "created_at"}
