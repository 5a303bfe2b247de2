"""download: pending tasks → stored attachments, results, retries and dead letters.

The consume loop's thread hands each task to a bounded thread pool; a
worker thread validates the URL, consults the host's circuit, streams the
body into storage and reports the verdict. A task whose blob is already
stored complete is reported successful without a request. Storage
credentials refused (``auth``) or storage unavailable (``storage``: disk
full, read-only, service busy, container missing) hold the stage and the
same task is tried again; neither dead-letters the task nor counts against
the source host's circuit. Nothing else ever blocks the partition.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from confluent_kafka import Message

from kafkapipe import metrics
from kafkapipe.config import Config
from kafkapipe.download.fetch import Fetcher
from kafkapipe.errors import CircuitOpenError, ErrorCategory, PipelineError, ValidationError, category_of
from kafkapipe.kafka.clients import partition_of
from kafkapipe.kafka.loop import Again, Complete, Done, Output, Release, Verdict
from kafkapipe.log import context, redact_url
from kafkapipe.messages import DownloadTask, ErrorInfo, InvalidMessage, loads
from kafkapipe.paths import stored_path
from kafkapipe.resilience import CircuitBreakers, CircuitSettings
from kafkapipe.security.tasks import check_task
from kafkapipe.stages import circuitwaits
from kafkapipe.stages.donework import DoneWork, done_work_for, inventory_for_lookups
from kafkapipe.stages.outcomes import Outcomes, raw_dead_letter
from kafkapipe.stages.registry import SPECS
from kafkapipe.storage import open_storage
from kafkapipe.storage.base import BlobWriter

log = logging.getLogger(__name__)

# Failures that say something about the host's health, and so count toward its circuit
# (only when they come from the host, not from our storage).
CIRCUIT_FAILURES = {ErrorCategory.TRANSIENT}
# Failures of our side that hold the stage: the same task is tried again, nothing is dead-lettered.
HOLDS = {ErrorCategory.AUTH: "storage credentials refused", ErrorCategory.STORAGE: "storage unavailable"}


class DownloadStage:
    name = "download"
    batch_timeout = 0.5

    def __init__(self, config: Config) -> None:
        spec = SPECS[self.name]
        self.topics = spec.topics(config)
        self.max_in_flight = spec.max_in_flight(config)
        self.max_batch = self.max_in_flight
        self.storage = open_storage(config)
        # Twice the longest a download may take: no live writer can own what is older.
        swept = self.storage.sweep(2 * config.download.total_timeout)
        if swept:
            log.info("removed %d temp file(s) left by interrupted downloads", swept)
        self.fetcher = Fetcher(config.download)
        self.outcomes = Outcomes(config.topics, stage=self.name, max_retry_after=config.download.max_retry_after)
        self.dlq_topic = self.dead_letter_topic = config.topics.dlq
        self._revocations: dict[tuple[str, int], int] = {}  # partition → times revoked
        self.breakers = CircuitBreakers(circuit_settings(config))
        self.max_circuit_waits = config.download.max_circuit_waits
        self.max_circuit_wait = config.download.max_circuit_wait
        self.inventory = inventory_for_lookups(config)
        self.done_work: DoneWork = done_work_for(self.storage, self.inventory, config.download.allowed_file_types)
        self.pool = _Workers(config.stages.download.threads, self._run)

    def handle(self, messages: list[Message], complete: Complete) -> None:
        for msg in messages:
            self.pool.submit(msg, complete, self._revocations.get(partition_of(msg), 0))

    def revoked(self, keys: list[tuple[str, int]]) -> None:
        """Called by the loop when partitions go: their tasks still queued will not be downloaded."""
        for key in keys:
            self._revocations[key] = self._revocations.get(key, 0) + 1

    def _run(self, msg: Message, complete: Complete, revocations: int = 0) -> None:
        if self._revocations.get(partition_of(msg), 0) != revocations:
            complete(msg, Release())  # queued before its partition was revoked: the next owner does it
            return
        try:
            verdict = self.process(msg)
        except BaseException as exc:  # a bug: classified and dead-lettered, never lost silently
            log.exception("download handler failed unexpectedly")
            verdict = Done([self._poison(msg, f"internal error: {type(exc).__name__}: {exc}")])
        complete(msg, verdict)

    def process(self, msg: Message) -> Verdict:
        try:
            task = loads(msg.value() or b"", DownloadTask)
        except InvalidMessage as exc:
            return Done([self._poison(msg, str(exc))])
        with context(trace_id=task.trace_id, task_id=task.task_id, topic=msg.topic(),
                     partition=msg.partition(), offset=msg.offset()):
            return self.attempt(task)

    def attempt(self, task: DownloadTask) -> Verdict:
        started = time.monotonic()
        host = self._host(task.attachment_url)
        try:
            check_task(task)  # its blob_path came off a topic: re-derived, never trusted
        except ValidationError as exc:
            return self._failed(task, exc, host, started, from_storage=False)
        try:
            stored = self.done_work.lookup(task)
        except PipelineError as exc:
            if exc.category in HOLDS:
                return self._hold(exc)
            log.warning("could not check for an already stored blob (%s); downloading", exc.message)
            stored = None
        if stored is not None:
            metrics.ALREADY_STORED.inc()
            stored_as = stored.path or task.blob_path
            log.info("already stored %s (%d bytes); not downloaded again", stored_as, stored.bytes)
            return Done(self.outcomes.success(task, started, bytes=stored.bytes, sha256=stored.sha256,
                                              blob_path=stored_as))
        try:
            self.breakers.before(host)
        except CircuitOpenError as exc:
            return self._circuit_open(task, exc, started)
        writer: _Watched | None = None
        try:
            writer = _Watched(self.storage.open_writer(task.blob_path))
            with writer:
                outcome = self.fetcher.fetch(task.attachment_url, writer)
                writer.commit()
        except PipelineError as exc:
            from_storage = writer is None or writer.failed
            return self._failed(task, exc, host, started, from_storage=from_storage)
        except Exception as exc:
            category = category_of(exc)
            log.exception("unclassified failure downloading %s", redact_url(task.attachment_url))
            error = ErrorInfo(category, f"{type(exc).__name__}: {exc}")
            return Done(self.outcomes.permanent(task, error, started))
        self.breakers.record_success(host, _url_key(task.attachment_url))
        metrics.DOWNLOAD_BYTES.inc(outcome.bytes)
        stored_as = stored_path(task.blob_path, outcome.extension)
        log.info("stored %s (%d bytes)", stored_as, outcome.bytes)
        return Done(self.outcomes.success(
            task, started, http_status=outcome.http_status, bytes=outcome.bytes, sha256=outcome.sha256,
            content_type=outcome.content_type, file_type=outcome.file_type, blob_path=stored_as,
        ))

    def _host(self, url: str) -> str:
        """The circuit's key: the normalised host, so FILES.example.com. and files.example.com share one."""
        try:
            return self.fetcher.validator.check_static(url).host
        except ValidationError:
            try:
                return (urlsplit(url).hostname or "").lower()
            except ValueError:  # unparseable (``https://[::1/x``): the validation failure will say why
                return ""

    def _circuit_open(self, task: DownloadTask, exc: CircuitOpenError, started: float) -> Verdict:
        """Wait for the probe without using an attempt, a bounded number of times; then it is an attempt."""
        error = ErrorInfo(str(exc.category), exc.message)
        now = time.time()
        if circuitwaits.may_wait(task, now, self.max_circuit_waits, self.max_circuit_wait):
            log.info("circuit open; waiting %.1fs for the probe: %s", exc.retry_after or 0.0, exc.message)
            waited = circuitwaits.one_more(task, now)
            return Done(self.outcomes.circuit_open(waited, error, started, exc.retry_after))
        error = ErrorInfo(str(ErrorCategory.TRANSIENT), f"{exc.message} (waited for it long enough)")
        log.info("attempt %d failed (transient): %s", task.retry_count + 1, error.message)
        return Done(self.outcomes.transient(task, error, started, retry_after=exc.retry_after))

    def _failed(
        self, task: DownloadTask, exc: PipelineError, host: str, started: float, *, from_storage: bool
    ) -> Verdict:
        category = exc.category
        if category in HOLDS:
            return self._hold(exc)
        error = ErrorInfo(str(category), exc.message)
        log.info("attempt %d failed (%s): %s", task.retry_count + 1, category, exc.message)
        if category in CIRCUIT_FAILURES:
            if not from_storage:
                self.breakers.record_failure(host, _url_key(task.attachment_url))
            return Done(self.outcomes.transient(task, error, started, exc.http_status, exc.retry_after))
        if exc.http_status is not None and not from_storage:
            self.breakers.record_success(host, _url_key(task.attachment_url))  # the host answered
        return Done(self.outcomes.permanent(task, error, started, exc.http_status))

    def _hold(self, exc: PipelineError) -> Again:
        """Our side is failing, not the task: hold the stage and try the same task again."""
        reason = HOLDS[exc.category]
        if exc.category is ErrorCategory.STORAGE:
            metrics.STORAGE_HOLDS.labels(_hold_reason(exc)).inc()
        log.warning("%s; holding the task: %s", reason, exc.message)
        return Again(f"{reason}: {exc.message}", kind=str(exc.category))

    def _poison(self, msg: Message, reason: str) -> Output:
        """A pending message that is not a DownloadTask: kept verbatim on the DLQ with the reason."""
        log.warning("undecodable task dead-lettered: %s", reason)
        return raw_dead_letter(msg, self.dlq_topic, self.name, reason)

    def hold(self) -> float:
        return 0.0

    def close(self) -> None:
        self.pool.close()
        self.fetcher.close()
        self.storage.close()
        if self.inventory is not None:
            self.inventory.close()


def circuit_settings(config: Config) -> CircuitSettings:
    download = config.download
    return CircuitSettings(
        failure_rate=download.circuit_failure_rate,
        minimum_calls=download.circuit_minimum_calls,
        window_size=download.circuit_window_size,
        reset_timeout=download.circuit_reset_timeout,
    )


def _url_key(url: str) -> str:
    """A URL as the circuit's window counts it: without its query, so re-signed copies are one URL."""
    return redact_url(url)


def _hold_reason(exc: PipelineError) -> str:
    """A short, bounded label for the holds metric: the storage error code or errno name if known."""
    code = getattr(exc, "error_code", "") or getattr(exc, "reason", "")
    return code[:64] if isinstance(code, str) and code else "unavailable"


class _Workers:
    """A fixed set of threads taking tasks from one queue.

    What a ThreadPoolExecutor does for this stage, without its per-task Future (a lock and a
    condition allocated, notified and dropped per download): ``run`` reports its verdict
    through ``complete`` and never raises, so nobody waits on a result.
    """

    def __init__(self, threads: int, run: Callable[..., None]) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._run = run
        self._threads = [
            threading.Thread(target=self._work, name=f"download_{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, *args: Any) -> None:
        self._queue.put(args)

    def _work(self) -> None:
        while (task := self._queue.get()) is not None:
            try:
                self._run(*task)
            except Exception:  # a failing report must not take a thread with it
                log.exception("download thread: reporting a verdict failed")

    def close(self) -> None:
        """Drop the tasks not started (their offsets stay uncommitted); running ones finish."""
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        for _ in self._threads:
            self._queue.put(None)


class _Watched(BlobWriter):
    """A writer that remembers whether storage itself failed, so a storage error never counts
    against the source host."""

    def __init__(self, inner: BlobWriter) -> None:
        self.inner = inner
        self.failed = False

    def write(self, chunk: bytes) -> None:
        try:
            self.inner.write(chunk)
        except BaseException:
            self.failed = True
            raise

    def commit(self) -> None:
        try:
            self.inner.commit()
        except BaseException:
            self.failed = True
            raise

    def use_extension(self, extension: str) -> None:
        self.inner.use_extension(extension)

    def abort(self) -> None:
        self.inner.abort()
