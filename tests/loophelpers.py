"""A scripted stage and a consume loop over the in-memory clients of fakekafka.py, for the loop's unit tests.

``make`` builds a ConsumeLoop on a FakeConsumer and FakeProducer subscribed to topic ``T``;
``spin`` drives it a few iterations; ``ScriptedStage`` answers each message as the test says.
"""

from __future__ import annotations

from fakekafka import FakeConsumer, FakeProducer

from kafkapipe.kafka.errors import ClientErrors
from kafkapipe.kafka.loop import ConsumeLoop, Done, Output
from kafkapipe.worker import WorkerControl

T = "in"
DLQ = "in.dlq"
OUT = "out"
P0, P1 = (T, 0), (T, 1)


class ScriptedStage:
    """A stage whose verdict per message a test decides: a function, or held until the test answers."""

    name = "scripted"
    max_batch = 100
    batch_timeout = 0.01
    dead_letter_topic = DLQ

    def __init__(self, verdict=None, hold_back: bool = False) -> None:
        self.topics = [T]
        self.verdict = verdict or (lambda msg: Done([Output(OUT, None, msg.value())]))
        self.hold_back = hold_back
        self.waiting: list = []  # (message, complete) not yet answered
        self.handled: list = []
        self.revoked_keys: list = []
        self.closed = False

    def handle(self, messages, complete) -> None:
        self.handled.append([m.offset() for m in messages])
        for msg in messages:
            if self.hold_back:
                self.waiting.append((msg, complete))
            else:
                complete(msg, self.verdict(msg))

    def answer(self, offset: int, verdict=None, partition: int = 0) -> None:
        for i, (msg, complete) in enumerate(self.waiting):
            if msg.offset() == offset and msg.partition() == partition:
                del self.waiting[i]
                complete(msg, verdict if verdict is not None else self.verdict(msg))
                return
        raise AssertionError(f"offset {offset} is not waiting")

    def revoked(self, keys) -> None:
        self.revoked_keys.append(sorted(keys))

    def hold(self) -> float:
        return 0.0

    def close(self) -> None:
        self.closed = True


def make(stage, *, auto_ack=True, max_bytes=1_000_000, revoke_timeout=5.0, drain_timeout=5.0):
    consumer, producer = FakeConsumer(), FakeProducer(auto_ack=auto_ack, max_bytes=max_bytes)
    control = WorkerControl()
    loop = ConsumeLoop(stage, consumer, producer, control, max_in_flight=100, drain_timeout=drain_timeout,
                       revoke_timeout=revoke_timeout, max_message_bytes=max_bytes, client_errors=ClientErrors())
    consumer.subscribe([T], loop._on_assign, loop._on_revoke, loop._on_lost)
    return loop, consumer, producer, control


def spin(loop, times: int = 3) -> None:
    for _ in range(times):
        loop._iterate()
