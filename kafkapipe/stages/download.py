"""download: pending tasks → stored attachments, results, retries and dead letters.

The consume loop's thread hands each task to a bounded thread pool; a
worker thread validates the URL, consults the host's circuit, streams the
body into storage and reports the verdict. Storage credentials refused
(``auth``) hold the stage and the same task is tried again; nothing else
ever blocks the partition.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from confluent_kafka import Message

from kafkapipe import metrics
from kafkapipe.config import Config
from kafkapipe.download.fetch import Fetcher
from kafkapipe.errors import ErrorCategory, PipelineError, ValidationError, category_of
from kafkapipe.kafka.loop import Again, Complete, Done, Output, Release, Verdict
from kafkapipe.log import context, redact_url
from kafkapipe.messages import DownloadTask, ErrorInfo, InvalidMessage, loads
from kafkapipe.paths import stored_path
from kafkapipe.resilience import CircuitBreakers
from kafkapipe.security.tasks import check_task
from kafkapipe.stages.outcomes import Outcomes, raw_dead_letter
from kafkapipe.storage import open_storage

log = logging.getLogger(__name__)

# Failures that say something about the host's health, and so count toward its circuit.
CIRCUIT_FAILURES = {ErrorCategory.TRANSIENT}


class DownloadStage:
    name = "download"
    batch_timeout = 0.5

    def __init__(self, config: Config) -> None:
        settings = config.stages.download
        self.topics = [config.topics.pending]
        self.max_in_flight = settings.max_in_flight or settings.threads * 64
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
        self.breakers = CircuitBreakers(
            config.download.circuit_failure_threshold, config.download.circuit_reset_timeout
        )
        self.pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="download")

    def handle(self, messages: list[Message], complete: Complete) -> None:
        for msg in messages:
            self.pool.submit(self._run, msg, complete, self._revocations.get((msg.topic(), msg.partition()), 0))

    def revoked(self, keys: list[tuple[str, int]]) -> None:
        """Called by the loop when partitions go: their tasks still queued will not be downloaded."""
        for key in keys:
            self._revocations[key] = self._revocations.get(key, 0) + 1

    def _run(self, msg: Message, complete: Complete, revocations: int = 0) -> None:
        if self._revocations.get((msg.topic(), msg.partition()), 0) != revocations:
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
            self.breakers.before(host)
            with self.storage.open_writer(task.blob_path) as writer:
                outcome = self.fetcher.fetch(task.attachment_url, writer)
                writer.commit()
        except PipelineError as exc:
            return self._failed(task, exc, host, started)
        except Exception as exc:
            category = category_of(exc)
            log.exception("unclassified failure downloading %s", redact_url(task.attachment_url))
            error = ErrorInfo(category, f"{type(exc).__name__}: {exc}")
            return Done(self.outcomes.permanent(task, error, started))
        self.breakers.record_success(host)
        metrics.DOWNLOAD_BYTES.inc(outcome.bytes)
        stored = stored_path(task.blob_path, outcome.extension)
        log.info("stored %s (%d bytes)", stored, outcome.bytes)
        return Done(self.outcomes.success(
            task, started, http_status=outcome.http_status, bytes=outcome.bytes, sha256=outcome.sha256,
            content_type=outcome.content_type, file_type=outcome.file_type, blob_path=stored,
        ))

    def _host(self, url: str) -> str:
        """The circuit's key: the normalised host, so FILES.example.com. and files.example.com share one."""
        try:
            return self.fetcher.validator.check_static(url).host
        except ValidationError:
            return (urlsplit(url).hostname or "").lower()

    def _failed(self, task: DownloadTask, exc: PipelineError, host: str, started: float) -> Verdict:
        category = exc.category
        error = ErrorInfo(str(category), exc.message)
        log.info("attempt %d failed (%s): %s", task.retry_count + 1, category, exc.message)
        if category is ErrorCategory.AUTH:
            return Again(f"storage credentials refused: {exc.message}")
        if category is ErrorCategory.CIRCUIT_OPEN:
            return Done(self.outcomes.circuit_open(task, error, started))
        if category in CIRCUIT_FAILURES:
            self.breakers.record_failure(host)
            return Done(self.outcomes.transient(task, error, started, exc.http_status, exc.retry_after))
        if exc.http_status is not None:
            self.breakers.record_success(host)  # the host answered; the URL is what's wrong
        return Done(self.outcomes.permanent(task, error, started, exc.http_status))

    def _poison(self, msg: Message, reason: str) -> Output:
        """A pending message that is not a DownloadTask: kept verbatim on the DLQ with the reason."""
        log.warning("undecodable task dead-lettered: %s", reason)
        return raw_dead_letter(msg, self.dlq_topic, self.name, reason)

    def hold(self) -> float:
        return 0.0

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.fetcher.close()
        self.storage.close()
