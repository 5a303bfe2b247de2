"""Our storage failing holds the task and never dead-letters it; work already stored is not redone.

Real worker processes, the real broker and a real HTTP server on loopback.
"""

from __future__ import annotations

import hashlib

import orjson
import pytest
from kafkahelpers import wait_for
from pipelinehelpers import event

ALL_STAGES = ("ingest", "download", "delay", "results")
PDF = b"%PDF-1.7\n" + b"hold me " * 200
# A SigV4 presigned URL that expired in 2020: refused before any connection unless already stored.
EXPIRED_QUERY = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20200101T000000Z&X-Amz-Expires=60&X-Amz-Signature=ab"


@pytest.fixture
def make_pipeline(pipeline_factory):
    return pipeline_factory("hold")


def test_unwritable_local_storage_holds_the_task_until_fixed(make_pipeline, fault_server):
    fault_server.add("/held.pdf", PDF)
    pipe = make_pipeline(fault_server)
    pipe.storage_root.mkdir(parents=True)
    broken = pipe.storage_root / ".incoming"
    broken.write_text("a file where the temp directory must be")  # like a full or read-only disk
    pipe.start(ALL_STAGES)
    pipe.produce([event("t-held", [fault_server.url("/held.pdf")])])
    # Identical hold lines are rate-limited: the second one shows the hold lasted and repeated.
    wait_for(lambda: pipe.logs().count("storage unavailable; holding the task") >= 2, 90,
             "the task held again and again")
    assert pipe.rows() == [] or all(r["status"] != "failed_permanent" for r in pipe.rows())

    broken.unlink()  # storage fixed
    row = pipe.wait_rows(1, status="success", timeout=90)[0]
    assert row["attempt"] == 1, "holding used no attempt"
    assert pipe.count(pipe.topics["dlq"]) == 0
    assert pipe.count(f"{pipe.topics['retry_prefix']}.1s") == 0
    assert [p.read_bytes() for p in pipe.stored_files()] == [PDF]


def test_a_replayed_task_whose_blob_is_stored_succeeds_without_a_request(make_pipeline, fault_server):
    fault_server.add("/done.pdf", PDF)
    pipe = make_pipeline(fault_server)
    pipe.start(ALL_STAGES)
    url = fault_server.url("/done.pdf", query=EXPIRED_QUERY)
    pipe.produce([event("t-done", [url])])
    first = pipe.wait_rows(1, timeout=60)[0]
    assert (first["status"], first["error_category"]) == ("failed_permanent", "expired")
    assert fault_server.requests_to("/done.pdf") == 0

    # The same task once its blob is there (an earlier attempt stored it): replayed from the DLQ.
    dead = orjson.loads(pipe.read_topic(pipe.topics["dlq"], 1)[0].value())
    target = pipe.storage_root / dead["task"]["blob_path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(PDF)
    pipe.cli("dlq", "replay", "--config", str(pipe.config_path), "--all-entries", "--execute")
    row = pipe.wait_rows(1, status="success", timeout=60)[0]
    assert row["bytes"] == len(PDF) and row["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert fault_server.requests_to("/done.pdf") == 0, "no request for work already done"


def test_a_task_the_inventory_records_as_stored_is_not_downloaded_again(make_pipeline, fault_server):
    """A success in the inventory (ours, or imported from the legacy pipeline) is not fetched again."""
    fault_server.add("/imported.pdf", PDF)
    pipe = make_pipeline(fault_server)
    url = fault_server.url("/imported.pdf")
    pipe.start(["ingest", "results"])
    pipe.produce([event("t-imported", [url])])
    task = orjson.loads(pipe.read_topic(pipe.topics["pending"], 1)[0].value())
    pipe.stop()
    legacy = {"trace_id": "t-imported", "attachment_url": url, "status": "success",
              "sha256": hashlib.sha256(b"legacy bytes").hexdigest(), "bytes": 12,
              "blob_path": task["blob_path"], "created_at": "2026-01-01T00:00:00+00:00"}
    source = pipe.tmp / "legacy.jsonl"
    source.write_bytes(orjson.dumps(legacy) + b"\n")
    pipe.cli("inventory", "import", "--config", str(pipe.config_path), "--legacy", str(source))
    assert pipe.rows()[0]["status"] == "success"

    pipe.start(["download", "results"])
    pipe.wait_caught_up("download", pipe.topics["pending"])
    result = orjson.loads(pipe.read_topic(pipe.topics["results"], 1)[0].value())
    assert (result["status"], result["sha256"]) == ("success", legacy["sha256"])
    assert fault_server.requests_to("/imported.pdf") == 0, "no request for what the inventory records"
