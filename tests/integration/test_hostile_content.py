"""Hostile bodies and hostile tasks through real download workers, a real broker and a loopback server.

A task's blob_path is re-derived by the download stage (never trusted from the topic); a body's
type decides the stored name's extension; executables are dead-lettered as ``validation``.
"""

from __future__ import annotations

import struct

import attrs
import orjson
import pytest
from pipelinehelpers import Pipeline, event

from kafkapipe import paths
from kafkapipe.messages import DownloadTask, dumps, make_task_id, parse_ts, utcnow

PDF = b"%PDF-1.7\n" + b"claim estimate " * 100


def pe_with_pdf_at_64() -> bytes:
    stub = bytearray(b"MZ\x90\x00" + bytes(60))
    stub[60:64] = struct.pack("<I", 128)
    return bytes(stub) + b"%PDF-1.7\n" + bytes(55) + b"PE\x00\x00" + bytes(300)


@pytest.fixture
def pipe(tmp_path, kafka_bootstrap, kafka_admin, unique_name, fault_server):
    pipeline = Pipeline(tmp_path, kafka_bootstrap, unique_name("hostile"), fault_server.port)
    pipeline.create_topics(kafka_admin)
    yield pipeline
    pipeline.stop()


def dead_letters(pipe, count):
    return [orjson.loads(m.value()) for m in pipe.read_topic(pipe.topics["dlq"], count)]


def outside_files(pipe):
    """Files anywhere under the test's directory but outside the storage root, the logs and the config."""
    return sorted(
        p.relative_to(pipe.tmp).as_posix() for p in pipe.tmp.rglob("*")
        if p.is_file() and pipe.storage_root not in p.parents and p.suffix not in (".log", ".toml", ".sqlite3")
        and not p.name.startswith("inventory.sqlite3")
    )


def test_a_body_is_stored_under_its_detected_types_extension_and_executables_are_refused(pipe, fault_server):
    fault_server.add("/claims/download.php", PDF, content_type="application/octet-stream")
    fault_server.add("/claims/setup.pdf", pe_with_pdf_at_64(), content_type="application/pdf")
    fault_server.add("/claims/claim.hta", b'<html><hta:application/><script>close()</script></html>')
    urls = [fault_server.url(p) for p in ("/claims/download.php", "/claims/setup.pdf", "/claims/claim.hta")]
    pipe.start()
    pipe.produce([event("trace-hostile-1", urls)])
    rows = {r["attachment_url"]: r for r in pipe.wait_rows(3, timeout=120)}

    stored = rows[urls[0]]
    assert stored["status"] == "success" and stored["file_type"] == "pdf"
    assert stored["blob_path"].endswith("-download.pdf")
    assert (pipe.storage_root / stored["blob_path"]).read_bytes() == PDF
    for url, detected, claimed in ((urls[1], "exe", "extension says pdf"), (urls[2], "html", "extension says hta")):
        row = rows[url]
        assert (row["status"], row["error_category"]) == ("failed_permanent", "validation"), row
        assert f"content is {detected}" in row["error_message"] and claimed in row["error_message"]
    visible = [p.relative_to(pipe.storage_root).as_posix() for p in pipe.stored_files() if ".incoming" not in p.parts]
    assert visible == [stored["blob_path"]]
    folders = {p.relative_to(pipe.storage_root).as_posix() for p in pipe.storage_root.rglob("*") if p.is_dir()}
    assert folders == {".incoming", *(stored["blob_path"].rsplit("/", n)[0] for n in range(1, 6))}


def test_a_task_whose_blob_path_is_not_its_own_is_dead_lettered_and_writes_nothing(pipe, fault_server):
    fault_server.add("/claims/a.pdf", PDF, content_type="application/pdf")
    url = fault_server.url("/claims/a.pdf")
    when = parse_ts("2026-11-25T19:09:22.123+00:00")
    task_id = make_task_id("trace-2", url)
    good = DownloadTask(
        task_id=task_id, trace_id="trace-2", attachment_url=url,
        blob_path=paths.blob_path(task_id, "trace-2", url, "xact", when), event_type="t", event_subtype="s",
        source_system="xact", original_timestamp=when, created_at=utcnow(),
    )
    hostile = ["../../inventory.sqlite3", str(pipe.tmp / "planted.pdf"), "xact/2026/11/25/trace-2/other.pdf",
               "xact/%2e%2e/%2e%2e/x.pdf", "..\\..\\x.pdf", "xact/2026/x\x00.pdf"]
    pipe.start(("download",))
    pipe.produce([dumps(attrs.evolve(good, blob_path=h)) for h in hostile], topic=pipe.topics["pending"])
    letters = dead_letters(pipe, len(hostile))
    assert sorted(d["task"]["blob_path"] for d in letters) == sorted(hostile)
    for letter in letters:
        assert letter["error_category"] == "validation"
        assert "blob_path refused" in letter["error_message"]
    assert fault_server.requests_to("/claims/a.pdf") == 0, "nothing is fetched for a refused task"
    assert pipe.stored_files() == [] or all(".incoming" in p.parts for p in pipe.stored_files())
    assert outside_files(pipe) == []
