"""What a stage is: one :class:`StageSpec` per stage, and everything else iterates :data:`SPECS`.

The worker builds a stage from its spec (:mod:`kafkapipe.stages.building`), the supervisor
scales the stages whose spec says so, the preflight checks what each spec needs, and the delay
stage watches the consumer group its spec names. Importing this module imports no handler
module (handlers load in the worker, after the fork), so the supervisor may use it freely.
Adding a stage: docs/architecture.md, "Adding a stage".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import attrs

from kafkapipe.config import (
    STAGES,
    Config,
    DelaySettings,
    DownloadSettings,
    IngestSettings,
    ResultsSettings,
)

# Messages in flight per process for stages whose handlers hold little per message.
LIGHT_IN_FLIGHT = 10_000


def _light(config: Config) -> int:
    return LIGHT_IN_FLIGHT


@attrs.frozen
class StageSpec:
    """One stage: its name (its ``[stages.<name>]`` section and consumer group suffix) and wiring.

    ``handler`` is ``"module:attribute"``, a callable ``(config) -> handler`` loaded only when a
    worker builds the stage; the handler takes its ``topics`` from here. ``watches`` names the
    stages whose consumer group this stage reads (the delay stage holds while the download group
    lags). ``needs`` names the preflight checks of :mod:`kafkapipe.preflight` beyond Kafka.
    """

    name: str
    settings: type
    handler: str
    topics: Callable[[Config], list[str]]
    max_in_flight: Callable[[Config], int] = _light
    scales: bool = False  # TTIN/TTOU add or remove one of its workers
    watches: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def build_handler(self, config: Config) -> Any:
        module, _, attribute = self.handler.partition(":")
        return getattr(importlib.import_module(module), attribute)(config)


SPECS: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            "ingest", IngestSettings, "kafkapipe.stages.ingest:IngestStage",
            topics=lambda c: [c.topics.events],
        ),
        StageSpec(
            "download", DownloadSettings, "kafkapipe.stages.download:DownloadStage",
            topics=lambda c: [c.topics.pending],
            max_in_flight=lambda c: c.stages.download.in_flight_bound,
            scales=True, needs=("storage", "download"),
        ),
        StageSpec(
            "delay", DelaySettings, "kafkapipe.stages.delay:DelayStage",
            topics=lambda c: c.topics.retry_topics, watches=("download",),
        ),
        StageSpec(
            "results", ResultsSettings, "kafkapipe.stages.results:ResultsStage",
            topics=lambda c: [c.topics.results],
            max_in_flight=lambda c: c.stages.results.batch_size * 2,
            needs=("inventory",),
        ),
    )
}
assert tuple(SPECS) == STAGES, "every [stages.<name>] section has one StageSpec, in the same order"

SCALED: tuple[str, ...] = tuple(name for name, spec in SPECS.items() if spec.scales)
