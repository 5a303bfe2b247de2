"""The download stage's decisions with fakes for the network and storage: what holds, what counts
against the host's circuit, what is not downloaded again."""

from __future__ import annotations

import pytest

from kafkapipe import config as cfg
from kafkapipe.download.fetch import FetchOutcome
from kafkapipe.errors import StorageUnavailableError, TransientError
from kafkapipe.kafka.loop import Again, Done
from kafkapipe.messages import DownloadTask, make_task_id, utcnow
from kafkapipe.paths import blob_path
from kafkapipe.resilience import CircuitState
from kafkapipe.stages.download import DownloadStage
from kafkapipe.storage.base import BlobWriter, Storage, StoredBlob


class FakeWriter(BlobWriter):
    def __init__(self, fail_commit: Exception | None) -> None:
        self.fail_commit = fail_commit

    def write(self, chunk: bytes) -> None:
        pass

    def commit(self) -> None:
        if self.fail_commit is not None:
            raise self.fail_commit

    def abort(self) -> None:
        pass


class FakeStorage(Storage):
    def __init__(self, fail_commit: Exception | None = None, stored: StoredBlob | None = None) -> None:
        self.fail_commit = fail_commit
        self.stored = stored

    def open_writer(self, blob_path: str) -> BlobWriter:
        return FakeWriter(self.fail_commit)

    def exists(self, blob_path: str) -> bool:
        return self.stored is not None

    def stat(self, blob_path: str) -> StoredBlob | None:
        return self.stored

    def describe(self, blob_path: str) -> str:
        return blob_path


class FakeFetcher:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0

    def fetch(self, url: str, writer: BlobWriter) -> FetchOutcome:
        self.calls += 1
        if self.error is not None:
            raise self.error
        writer.write(b"%PDF-")
        return FetchOutcome(200, 5, "0" * 64, "application/pdf", "pdf", url)

    def close(self) -> None:
        pass


def task(n: int, url: str | None = None) -> DownloadTask:
    now = utcnow()
    url = url or f"https://files.example/{n}.pdf"
    task_id = make_task_id("tr", url)
    # The path the task's own fields derive: the stage refuses any other (security.tasks.check_task).
    return DownloadTask(task_id=task_id, trace_id="tr", attachment_url=url,
                        blob_path=blob_path(task_id, "tr", url, "s", now), event_type="e", event_subtype="e",
                        source_system="s", original_timestamp=now, created_at=now)


@pytest.fixture
def stage(tmp_path):
    config = cfg.from_mapping({
        "storage": {"root": str(tmp_path)},
        "download": {"circuit_minimum_calls": 2, "circuit_window_size": 10},
    }, "test.toml")
    made = DownloadStage(config)
    made.fetcher.close()
    yield made
    made.close()


def use(stage: DownloadStage, storage: Storage, fetcher: FakeFetcher) -> None:
    stage.storage = storage
    stage.fetcher = fetcher  # type: ignore[assignment]
    from kafkapipe.stages.donework import StoredInStorage

    stage.done_work = StoredInStorage(storage)
    stage._host = lambda url: "files.example"  # type: ignore[method-assign]


def test_storage_failures_hold_and_never_count_against_the_host(stage):
    busy = StorageUnavailableError("azure blob Put Block List: HTTP 503 ServerBusy")
    use(stage, FakeStorage(fail_commit=busy), FakeFetcher())
    verdicts = [stage.attempt(task(i)) for i in range(20)]
    assert all(isinstance(v, Again) for v in verdicts)
    assert stage.breakers.state("files.example") is CircuitState.CLOSED


def test_a_transient_storage_error_uses_an_attempt_but_does_not_count_against_the_host(stage):
    use(stage, FakeStorage(fail_commit=TransientError("azure blob Put Block List: HTTP 400 Md5Mismatch")),
        FakeFetcher())
    verdicts = [stage.attempt(task(i)) for i in range(20)]
    assert all(isinstance(v, Done) for v in verdicts)
    assert stage.breakers.state("files.example") is CircuitState.CLOSED


def test_host_failures_across_urls_open_the_circuit(stage):
    use(stage, FakeStorage(), FakeFetcher(error=TransientError("HTTP 503", http_status=503)))
    for i in range(2):
        stage.attempt(task(i))
    assert stage.breakers.state("files.example") is CircuitState.OPEN


def test_a_stored_blob_is_a_success_without_a_request(stage):
    fetcher = FakeFetcher(error=AssertionError("must not be called"))
    use(stage, FakeStorage(stored=StoredBlob(bytes=5, sha256="a" * 64)), fetcher)
    verdict = stage.attempt(task(1))
    assert isinstance(verdict, Done) and fetcher.calls == 0
    assert b'"status":"success"' in verdict.outputs[0].value and b'"sha256":"' + b"a" * 64 in verdict.outputs[0].value



def test_a_url_with_an_unclosed_bracket_is_a_validation_failure_with_a_result(tmp_path):
    # The real fetcher: the URL is refused by its static check, before any connection.
    made = DownloadStage(cfg.from_mapping({"storage": {"root": str(tmp_path)}}, "test.toml"))
    try:
        verdict = made.attempt(task(1, "https://[::1/x"))
    finally:
        made.close()
    assert isinstance(verdict, Done)
    [result] = [o for o in verdict.outputs if o.topic == "attachments.downloads.results"]
    assert b'"status":"failed_permanent"' in result.value and b'"error_category":"validation"' in result.value
    assert b"blob_path refused" not in result.value and b"IPv6" in result.value
