"""The ``kafkapipe_dlq_entries`` gauge: how many dead letters wait for review, for the alerts.

No worker consumes the DLQs, so their size is a broker read (the one `kafkapipe status` does),
made from a thread of the delay worker once a minute. The first read waits a full period, so a
stage built and closed at once (tests, a failed boot) never touches the broker for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kafkapipe import metrics
from kafkapipe.config import Config
from kafkapipe.dlq.sizes import DlqSize, dlq_sizes

log = logging.getLogger(__name__)

EVERY = 60.0
READ_TIMEOUT = 10.0


class DlqGauge:
    def __init__(
        self, config: Config, every: float = EVERY, read: Callable[[Config, float], list[DlqSize]] = dlq_sizes
    ) -> None:
        self.config = config
        self.every = every
        self._read = read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dlq-gauge", daemon=True)

    def start(self) -> DlqGauge:
        self._thread.start()
        return self

    def refresh(self) -> None:
        try:
            sizes = self._read(self.config, READ_TIMEOUT)
        except Exception as exc:  # the broker is away: the gauge keeps its last value
            log.warning("could not read the DLQ sizes: %s", exc)
            return
        for size in sizes:
            if size.exists:
                metrics.DLQ_ENTRIES.labels(size.topic, "unacknowledged").set(size.unacknowledged)
                metrics.DLQ_ENTRIES.labels(size.topic, "total").set(size.total)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(READ_TIMEOUT + 1)
