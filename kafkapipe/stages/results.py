"""results: DownloadResults → the inventory, a batch per transaction."""

from __future__ import annotations

import logging

from confluent_kafka import Message

from kafkapipe.config import Config
from kafkapipe.inventory import InventoryUnavailable, open_inventory
from kafkapipe.kafka.loop import Again, Complete, Done
from kafkapipe.messages import DownloadResult, InvalidMessage, loads

log = logging.getLogger(__name__)


class ResultsStage:
    name = "results"

    def __init__(self, config: Config) -> None:
        self.topics = [config.topics.results]
        self.max_batch = config.stages.results.batch_size
        self.batch_timeout = config.stages.results.batch_timeout
        self.inventory = open_inventory(config.inventory)

    def handle(self, messages: list[Message], complete: Complete) -> None:
        results = []
        for msg in messages:
            try:
                results.append(loads(msg.value() or b"", DownloadResult))
            except InvalidMessage as exc:
                # Not ours to fix and nothing downstream of it: recorded in the log, then passed.
                log.error("unreadable result skipped: %s", exc,
                          extra={"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()})
        try:
            self.inventory.upsert(results)
        except InventoryUnavailable as exc:  # locked, full, unreachable: the batch is retried as a whole
            for msg in messages:
                complete(msg, Again(f"inventory write failed: {exc}"))
            return
        for msg in messages:
            complete(msg, Done())

    def hold(self) -> float:
        return 0.0

    def close(self) -> None:
        self.inventory.close()
