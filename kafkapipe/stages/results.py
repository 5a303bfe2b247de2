"""results: DownloadResults → the inventory, a batch per transaction.

The inventory is written from the consume loop's thread, so a write may
block only briefly: SQLite's busy wait is kept well under the supervisor's
heartbeat timeout, and a database locked by another process (a backup, an
operator's shell) holds the stage with :class:`Again` — the loop keeps
heartbeating and tries the same batch again — instead of going silent.
"""

from __future__ import annotations

import logging
import sqlite3

from confluent_kafka import Message

from kafkapipe.config import Config
from kafkapipe.inventory import InventoryUnavailable, open_inventory
from kafkapipe.kafka.deadletter import raw_dead_letter
from kafkapipe.kafka.loop import Again, Complete, Done, ProcessFault
from kafkapipe.messages import DownloadResult, InvalidMessage, loads
from kafkapipe.stages.registry import SPECS

log = logging.getLogger(__name__)

# The longest one write waits for another process's lock before the batch is held instead.
MAX_BUSY_WAIT = 5.0


def busy_wait(heartbeat_timeout: float) -> float:
    return min(MAX_BUSY_WAIT, heartbeat_timeout / 4)


class ResultsStage:
    name = "results"

    def __init__(self, config: Config) -> None:
        self.topics = SPECS[self.name].topics(config)
        self.dead_letter_topic = config.topics.dlq
        self.max_batch = config.stages.results.batch_size
        self.batch_timeout = config.stages.results.batch_timeout
        self.inventory = open_inventory(config.inventory, busy_wait=busy_wait(config.supervisor.heartbeat_timeout))

    def handle(self, messages: list[Message], complete: Complete) -> None:
        results, readable = [], []
        for msg in messages:
            try:
                results.append(loads(msg.value() or b"", DownloadResult))
                readable.append(msg)
            except InvalidMessage as exc:
                log.error("unreadable result dead-lettered: %s", exc,
                          extra={"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()})
                complete(msg, Done([raw_dead_letter(msg, self.dead_letter_topic, self.name, str(exc))]))
        try:
            self.inventory.upsert(results)
        except InventoryUnavailable as exc:  # locked, full, unreachable: the batch is retried as a whole
            for msg in readable:
                complete(msg, Again(f"inventory write failed: {exc}", kind="inventory"))
            return
        except (sqlite3.InterfaceError, sqlite3.IntegrityError, OverflowError):
            raise  # about what a result holds: the loop retries one by one and dead-letters the culprit
        except sqlite3.Error as exc:  # a corrupt file, a misused connection: not any message's fault
            raise ProcessFault(f"inventory unusable: {exc}") from exc
        for msg in readable:
            complete(msg, Done())

    def hold(self) -> float:
        return 0.0

    def close(self) -> None:
        self.inventory.close()
