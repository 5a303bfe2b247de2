"""How many dead letters wait for review: what `kafkapipe status`, `dlq stats` and the
``kafkapipe_dlq_entries`` gauge report.

Unacknowledged entries are those after the review group's committed mark (see
:mod:`kafkapipe.dlq.reading`); ``total`` is everything the topic still holds.
"""

from __future__ import annotations

from attrs import frozen

from kafkapipe.config import Config
from kafkapipe.dlq.reading import Reader


@frozen
class DlqSize:
    topic: str
    exists: bool
    unacknowledged: int = 0
    total: int = 0


def dlq_sizes(config: Config, timeout: float) -> list[DlqSize]:
    sizes = []
    with Reader(config, timeout) as reader:
        for topic in (config.topics.dlq, config.topics.events_dlq):
            parts = reader.partitions(topic)
            if parts is None:
                sizes.append(DlqSize(topic, exists=False))
                continue
            committed = reader.committed(topic, parts)
            unacked = total = 0
            for partition in parts:
                low, high = reader.watermarks(topic, partition)
                mark = committed.get(partition)
                total += high - low
                unacked += high - (low if mark is None else max(low, mark))
            sizes.append(DlqSize(topic, True, unacked, total))
    return sizes
