"""ingest: events → download tasks; malformed events → the events DLQ, untouched.

URLs are checked statically here (scheme, host, port, userinfo — no DNS):
an attachment that can never be fetched is reported as a permanent
validation failure at once instead of travelling through the pipeline.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

import orjson
from confluent_kafka import Message

from kafkapipe.config import Config
from kafkapipe.errors import ValidationError
from kafkapipe.kafka.clients import headers
from kafkapipe.kafka.loop import Complete, Done, Output
from kafkapipe.messages import (
    SCHEMA_TASK,
    DownloadTask,
    ErrorInfo,
    EventMessage,
    InvalidMessage,
    dumps,
    make_task_id,
    parse_event,
    utcnow,
)
from kafkapipe.paths import blob_path
from kafkapipe.security.urls import UrlValidator
from kafkapipe.stages.outcomes import Outcomes, raw_dead_letter
from kafkapipe.stages.registry import SPECS

log = logging.getLogger(__name__)


class IngestStage:
    name = "ingest"
    max_batch = 500
    batch_timeout = 0.5

    def __init__(self, config: Config) -> None:
        self.topics_config = config.topics
        self.topics = SPECS[self.name].topics(config)
        self.dead_letter_topic = config.topics.events_dlq
        self.validator = UrlValidator(config.download)
        self.outcomes = Outcomes(config.topics, stage=self.name)

    def handle(self, messages: list[Message], complete: Complete) -> None:
        # One creation time for the batch: its tasks are made within milliseconds of each other,
        # and one datetime object is formatted once for all of them.
        created = utcnow()
        for msg in messages:
            complete(msg, Done(self.outputs(msg, created)))

    def outputs(self, msg: Message, created: datetime | None = None) -> list[Output]:
        try:
            event = parse_event(msg.value())
        except InvalidMessage as exc:
            return [self._dead_letter(msg, str(exc))]
        if created is None:
            created = utcnow()
        outputs: list[Output] = []
        for url in event.attachments:
            task = self._task(event, url, created)
            try:
                self.validator.validate_static(url)
            except ValidationError as exc:
                outputs.extend(self.outcomes.permanent(task, ErrorInfo(exc.category, exc.message), time.monotonic()))
                continue
            outputs.append(
                Output(self.topics_config.pending, task.task_id, dumps(task),
                       headers(SCHEMA_TASK, task.trace_id, task.task_id))
            )
        return outputs

    @staticmethod
    def _task(event: EventMessage, url: str, created: datetime) -> DownloadTask:
        task_id = make_task_id(event.trace_id, url)
        return DownloadTask(
            task_id=task_id,
            trace_id=event.trace_id,
            attachment_url=url,
            blob_path=blob_path(task_id, event.trace_id, url, event.source_system, event.timestamp),
            event_type=event.event_type,
            event_subtype=event.event_subtype,
            source_system=event.source_system,
            assignment_id=event.assignment_id,
            estimate_version=event.estimate_version,
            original_timestamp=event.timestamp,
            created_at=created,
        )

    def _dead_letter(self, msg: Message, reason: str) -> Output:
        log.warning(
            "event dead-lettered: %s", reason,
            extra={"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
        )
        return raw_dead_letter(
            msg, self.topics_config.events_dlq, self.name, reason, _trace_id_of(msg.value())
        )

    def hold(self) -> float:
        return 0.0

    def close(self) -> None:
        return None


def _trace_id_of(value: bytes | None) -> str | None:
    """Best effort, so a dead letter can still be found by its trace id."""
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    trace_id = obj.get("trace_id") if isinstance(obj, dict) else None
    return trace_id[:256] if isinstance(trace_id, str) and trace_id else None
