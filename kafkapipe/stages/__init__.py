"""Stage handlers and how a worker process wires one to the consume loop."""

from __future__ import annotations

from kafkapipe import log as logmod
from kafkapipe.config import Config
from kafkapipe.kafka.clients import group_id, make_consumer, make_producer
from kafkapipe.kafka.errors import ClientErrors
from kafkapipe.kafka.limits import max_message_bytes
from kafkapipe.kafka.loop import ConsumeLoop
from kafkapipe.worker import WorkerControl

# Leave the supervisor a margin between our drain deadline and its KILL.
DRAIN_MARGIN = 2.0


def build_stage(config: Config, name: str, control: WorkerControl) -> ConsumeLoop:
    """Create the stage and its Kafka clients (in this process: clients must not cross a fork)."""
    logmod.bind(stage=name)
    errors = ClientErrors()
    producer = make_producer(config, error_cb=errors)
    if name == "ingest":
        from kafkapipe.stages.ingest import IngestStage

        stage, max_in_flight = IngestStage(config), 10_000
    elif name == "download":
        from kafkapipe.stages.download import DownloadStage

        stage = DownloadStage(config)
        max_in_flight = stage.max_in_flight
    elif name == "delay":
        from kafkapipe.stages.delay import DelayStage

        stage, max_in_flight = DelayStage(config), 10_000
    elif name == "results":
        from kafkapipe.stages.results import ResultsStage

        stage = ResultsStage(config)
        max_in_flight = config.stages.results.batch_size * 2
    else:
        raise ValueError(f"unknown stage {name!r}")
    consumer = make_consumer(config, group_id(config, name), error_cb=errors)
    return ConsumeLoop(
        stage,
        consumer,
        producer,
        control,
        max_in_flight=max_in_flight,
        drain_timeout=max(1.0, config.supervisor.shutdown_timeout - DRAIN_MARGIN),
        max_message_bytes=max_message_bytes(config, stage.dead_letter_topic),
        client_errors=errors,
    )
