"""The broker's view of each stage: consumer group state, real backlog, retry waits, DLQ sizes.

Backlog per topic is the sum over partitions of the high watermark minus the stage group's
committed offset (the low watermark when it has none): messages not yet done. The retry topics
are not backlog: their messages wait on purpose, so they are shown as waiting, with the due
time of the first message after each partition's committed offset (due times rise along a
retry partition, docs/contract.md §3), the oldest over the topic. The rate is what arrived in the last
minute: the high watermark minus the first offset written since (``offsets_for_times``). DLQ sizes are unacknowledged
entries (after the review group's mark, see :mod:`kafkapipe.dlq.reading`) and all entries.
"""

from __future__ import annotations

import concurrent.futures
import time
from datetime import UTC, datetime

from attrs import frozen
from confluent_kafka import KafkaException

from kafkapipe.config import Config
from kafkapipe.dlq.reading import Reader
from kafkapipe.dlq.sizes import DlqSize, dlq_sizes  # noqa: F401 - part of what status reads
from kafkapipe.kafka.clients import group_id, make_admin
from kafkapipe.stages.delay import due_time


@frozen
class TopicBacklog:
    topic: str
    exists: bool
    backlog: int = 0
    waiting: bool = False  # a retry topic: the backlog waits for its due time
    oldest_due: datetime | None = None
    arrived_last_minute: int = 0  # written to the topic in the last 60 s (offsets_for_times)


@frozen
class StageView:
    stage: str
    group: str
    group_state: str
    members: int
    topics: tuple[TopicBacklog, ...]


def stage_topics(config: Config) -> dict[str, list[str]]:
    t = config.topics
    return {"ingest": [t.events], "download": [t.pending], "delay": list(t.retry_topics), "results": [t.results]}


def stages(config: Config, timeout: float) -> list[StageView]:
    groups = {stage: group_id(config, stage) for stage in stage_topics(config)}
    states = group_states(config, list(groups.values()), timeout)
    views = []
    for stage, topics in stage_topics(config).items():
        with Reader(config, timeout, group=groups[stage]) as reader:
            found = tuple(_topic(reader, topic, waiting=stage == "delay") for topic in topics)
        state, members = states.get(groups[stage], ("UNKNOWN", 0))
        views.append(StageView(stage, groups[stage], state, members, found))
    return views


def group_states(config: Config, groups: list[str], timeout: float) -> dict[str, tuple[str, int]]:
    """Group → (state name, number of members), from the group coordinator."""
    admin = make_admin(config)
    admin.list_topics(timeout=timeout)  # an unreachable broker fails here, as one KafkaException
    futures = admin.describe_consumer_groups(groups, request_timeout=timeout)
    out = {}
    for group, future in futures.items():
        try:
            description = future.result(timeout)
        except KafkaException as exc:
            out[group] = (f"UNKNOWN ({exc.args[0].str()})", 0)
            continue
        except concurrent.futures.TimeoutError:
            out[group] = ("UNKNOWN (no answer)", 0)
            continue
        out[group] = (description.state.name, len(description.members or []))
    return out


def _topic(reader: Reader, topic: str, waiting: bool) -> TopicBacklog:
    parts = reader.partitions(topic)
    if parts is None:
        return TopicBacklog(topic, exists=False, waiting=waiting)
    committed = reader.committed(topic, parts)
    minute_ago = reader.offsets_at(topic, parts, int((time.time() - 60) * 1000))
    backlog, arrived, dues = 0, 0, []
    for partition in parts:
        low, high = reader.watermarks(topic, partition)
        since = minute_ago.get(partition, -1)
        arrived += high - since if 0 <= since <= high else 0
        mark = committed.get(partition)
        start = low if mark is None else max(low, mark)
        backlog += max(0, high - start)
        if waiting and start < high:
            for msg in reader.scan(topic, partition, start, start + 1):
                dues.append(_due(msg))
    oldest = min((d for d in dues if d is not None), default=None)
    return TopicBacklog(topic, True, backlog, waiting, oldest, arrived)


def _due(msg) -> datetime | None:
    try:
        return datetime.fromtimestamp(due_time(msg), UTC)
    except (ValueError, OverflowError, OSError):
        return None
