"""The stage registry: one StageSpec per stage, and a new stage needs only a module and an entry."""

from __future__ import annotations

import attrs
from fakekafka import FakeConsumer, FakeProducer

from kafkapipe.config import STAGES, Config, IngestSettings, StagesConfig
from kafkapipe.kafka.loop import Done, Output
from kafkapipe.stages.building import build_from_spec
from kafkapipe.stages.registry import SCALED, SPECS, StageSpec
from kafkapipe.worker import WorkerControl

IN, OUT, DLQ = "toy.in", "toy.out", "toy.dlq"


class ToyStage:
    """A stage as a new module would write it: upper-cases each message onto OUT, when told to."""

    name = "toy"
    max_batch = 100
    batch_timeout = 0.01
    dead_letter_topic = DLQ

    def __init__(self, config: Config) -> None:
        self.topics = TOY.topics(config)
        self.waiting: list = []
        self.closed = False

    def handle(self, messages, complete) -> None:
        self.waiting += [(msg, complete) for msg in messages]

    def finish_all(self) -> None:
        for msg, complete in self.waiting:
            complete(msg, Done([Output(OUT, None, msg.value().upper())]))
        self.waiting = []

    def hold(self) -> float:
        return 0.0

    def close(self) -> None:
        self.closed = True


TOY = StageSpec("toy", IngestSettings, f"{__name__}:ToyStage", topics=lambda c: [IN], max_in_flight=lambda c: 2)


def test_every_stage_section_has_one_spec_in_order():
    assert tuple(SPECS) == STAGES
    fields = {a.name: a.type for a in attrs.fields(StagesConfig)}
    for name, spec in SPECS.items():
        assert spec.name == name
        assert spec.settings.__name__ in str(fields[name]), (name, fields[name])
    assert SCALED == ("download",)
    assert SPECS["delay"].watches == ("download",)


def test_a_toy_stage_runs_through_the_registry_on_a_fake_consumer():
    consumer, producer, control = FakeConsumer(), FakeProducer(), WorkerControl()
    loop = build_from_spec(Config(), TOY, control, consumer=consumer, producer=producer, message_limit=1_000_000)
    stage = loop.stage
    assert isinstance(stage, ToyStage) and stage.topics == [IN]
    consumer.subscribe(stage.topics, loop._on_assign, loop._on_revoke, loop._on_lost)
    for value in (b"a", b"b", b"c"):
        consumer.add(IN, 0, value)
    consumer.assign((IN, 0))

    for _ in range(3):
        loop._iterate()
    assert [m.value() for m, _ in stage.waiting] == [b"a", b"b"]  # the spec's in-flight bound

    stage.finish_all()
    for _ in range(3):
        loop._iterate()
    stage.finish_all()
    control.stop.set()
    assert loop.run() == 0
    assert [p.value for p in producer.on(OUT)] == [b"A", b"B", b"C"]
    assert consumer.committed[(IN, 0)] == 3
    assert stage.closed
