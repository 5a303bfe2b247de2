"""How a worker process wires the stage its spec describes to the consume loop."""

from __future__ import annotations

from typing import Any

from kafkapipe import log as logmod
from kafkapipe.config import Config
from kafkapipe.kafka.clients import group_id, make_consumer, make_producer
from kafkapipe.kafka.errors import ClientErrors
from kafkapipe.kafka.limits import max_message_bytes
from kafkapipe.kafka.loop import ConsumeLoop, LoopControl
from kafkapipe.stages.registry import SPECS, StageSpec

# Leave the supervisor a margin between our drain deadline and its KILL.
DRAIN_MARGIN = 2.0


def build_stage(config: Config, name: str, control: LoopControl) -> ConsumeLoop:
    """Create the stage and its Kafka clients (in this process: clients must not cross a fork)."""
    return build_from_spec(config, SPECS[name], control)


def build_from_spec(
    config: Config,
    spec: StageSpec,
    control: LoopControl,
    *,
    consumer: Any = None,
    producer: Any = None,
    message_limit: int | None = None,
) -> ConsumeLoop:
    """The consume loop of ``spec``'s handler, bounded as the spec says.

    Clients and the message size limit are made here unless given (tests give in-memory ones).
    """
    logmod.bind(stage=spec.name)
    errors = ClientErrors()
    producer = producer if producer is not None else make_producer(config, error_cb=errors)
    stage = spec.build_handler(config)
    if consumer is None:
        consumer = make_consumer(config, group_id(config, spec.name), error_cb=errors)
    if message_limit is None:
        message_limit = max_message_bytes(config, stage.dead_letter_topic)
    return ConsumeLoop(
        stage,
        consumer,
        producer,
        control,
        max_in_flight=spec.max_in_flight(config),
        drain_timeout=max(1.0, config.supervisor.shutdown_timeout - DRAIN_MARGIN),
        max_message_bytes=message_limit,
        client_errors=errors,
    )
