"""The one consume loop every stage runs in.

A stage is a handler: it receives consumed messages and, now or later and
from any thread, reports a verdict for each through ``complete``. The loop
owns everything that makes that correct:

* an offset is stored only when its message's handler finished **and**
  every output it produced was acknowledged by the broker, and only as the
  highest contiguous offset per partition (:mod:`kafkapipe.kafka.offsets`);
* in-flight work is bounded: past the bound every partition is paused while
  ``consume()`` keeps the group membership alive;
* on revoke, in-flight work of those partitions is drained (bounded) and
  committed before they are let go; on loss it is dropped;
* :class:`Again` (credentials refused) holds the whole stage and processes
  the same message again after a growing pause, never committing past it;
* :class:`Defer` (the delay stage's "not due yet") rewinds the partition to
  the message, pauses it, and resumes it when due — no sleeping, no
  re-producing;
* on stop, nothing new is taken, in-flight work drains until the deadline,
  offsets are committed, and the clients are closed;
* one message can never stop the stage: whatever a handler raises for a
  message, or an output too large to produce, dead-letters that message
  (:mod:`kafkapipe.kafka.deadletter`) and the stage goes on. Only a
  :class:`ProcessFault` — the process itself is broken — ends the worker.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, cast

import attrs
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from kafkapipe import metrics, processmetrics
from kafkapipe.errors import ErrorCategory
from kafkapipe.exitcodes import EXIT_FAILURE, EXIT_OK
from kafkapipe.kafka.clients import offset_of, partition_of
from kafkapipe.kafka.deadletter import fit, minimal, output_size, raw_dead_letter, reason_of
from kafkapipe.kafka.errors import ClientErrors, classify
from kafkapipe.kafka.loopmetrics import LoopMetrics
from kafkapipe.kafka.offsets import OffsetTracker, TopicPartitionKey
from kafkapipe.kafka.records import Output

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 1.0
LAG_EVERY = 10.0
AGAIN_FIRST_PAUSE = 1.0
AGAIN_MAX_PAUSE = 60.0
# Delivery errors after which producing the same outputs again can succeed.
REDO_CODES = frozenset({KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                        KafkaError._ALL_BROKERS_DOWN})
TRANSIENT_LOG_EVERY = 30.0  # one log line per this long for errors librdkafka retries by itself
# librdkafka's default message.max.bytes: what the producer accepts unless configured otherwise.
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000

__all__ = ["Again", "ConsumeLoop", "Defer", "Done", "Output", "ProcessFault", "Release", "Stage", "Verdict"]


class ProcessFault(Exception):
    """Raised by a handler when the process itself is broken, not the message: ends the worker."""

@attrs.frozen
class Done:
    """Finished; store the offset once every output is acknowledged."""

    outputs: Sequence[Output] = ()


@attrs.frozen
class Again:
    """Not done and not failed (e.g. credentials refused): process it again later.

    ``kind`` names what is holding (``auth``, ``storage``, ``inventory``): the label of the
    ``kafkapipe_holding`` gauge that ``kafkapipe status`` and the alerts read.
    """

    reason: str
    kind: str = "hold"


@attrs.frozen
class Defer:
    """Not due until ``until`` (epoch seconds): rewind, pause the partition, resume then."""

    until: float


@attrs.frozen
class Release:
    """Not processed because its partition was revoked: left uncommitted for the next owner."""


Verdict = Done | Again | Defer | Release
Complete = Callable[[Message, Verdict], None]


class LoopControl(Protocol):
    """What the loop needs of its process: a stop request, a heartbeat, a ready signal.

    :class:`kafkapipe.worker.WorkerControl` is the process's; the loop knows nothing of processes.
    """

    stop: threading.Event

    def heartbeat(self) -> None: ...

    def ready(self) -> None: ...


class Stage(Protocol):
    name: str
    topics: list[str]
    max_batch: int
    batch_timeout: float
    dead_letter_topic: str  # where the loop dead-letters a message its handler failed on

    def handle(self, messages: list[Message], complete: Complete) -> None: ...

    # Optional: ``revoked(keys)`` is called first thing when partitions are revoked or lost,
    # so work queued for them can be given up (answered with :class:`Release`); a true
    # ``lag_is_waiting`` reports the backlog as messages waiting (kafkapipe_retry_waiting), not lag.

    def hold(self) -> float:
        """Seconds every partition should stay paused (0: none), e.g. downstream lag."""
        ...

    def close(self) -> None: ...


@attrs.define
class _Work:
    """One consumed copy of an offset. ``attempt`` tells its delivery reports from an abandoned copy's."""

    message: Message
    started: float
    attempt: int
    pending_acks: int = 0
    answered: bool = False  # a verdict was applied; later ones for the same copy are ignored


def _key(msg: Message) -> TopicPartitionKey:
    return partition_of(msg)


Ident = tuple[str, int, int]


def _ident(msg: Message) -> Ident:
    """(topic, partition, offset) of a consumed message (one without an error): all three are set."""
    ident = (msg.topic(), msg.partition(), msg.offset())
    assert ident[2] is not None, "a consumed message without an error has an offset"
    return cast(Ident, ident)


class ConsumeLoop:
    def __init__(
        self,
        stage: Stage,
        consumer: Consumer,
        producer: Producer | None,
        control: LoopControl,
        *,
        max_in_flight: int,
        drain_timeout: float,
        revoke_timeout: float = 30.0,
        commit_timeout: float = 10.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        client_errors: ClientErrors | None = None,
    ) -> None:
        self.stage = stage
        self.consumer = consumer
        self.producer = producer
        self.control = control
        self.high_water = max(1, max_in_flight)
        self.low_water = max(1, max_in_flight // 2)
        self.drain_timeout = drain_timeout
        self.revoke_timeout = revoke_timeout
        self.commit_timeout = commit_timeout
        self.max_message_bytes = max_message_bytes
        self.client_errors = client_errors
        self._transient_logged = 0.0
        self.tracker = OffsetTracker()
        self._work: dict[tuple[str, int, int], _Work] = {}
        self._completions: queue.SimpleQueue[tuple[Message, Verdict]] = queue.SimpleQueue()
        self._assigned: set[TopicPartitionKey] = set()
        self._paused: set[TopicPartitionKey] = set()
        self._deferred: dict[TopicPartitionKey, float] = {}
        self._again: list[tuple[float, int, Message]] = []  # heap: (due, seq, message)
        self._again_pause = 0.0
        self._holding: set[str] = set()  # kinds of hold in force (the kafkapipe_holding gauge)
        self._hold_until = 0.0
        self._capacity_paused = False
        self._fatal: str | None = None
        self._seq = 0
        self._attempts = 0
        self._last_beat = 0.0
        self._last_lag = 0.0
        self._metrics = LoopMetrics(stage.name)

    # ---------------------------------------------------------------- public

    def run(self) -> int:
        self.consumer.subscribe(
            self.stage.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("consuming", extra={"topics": self.stage.topics})
        try:
            while not self.control.stop.is_set() and self._fatal is None:
                try:
                    self._iterate()
                except ProcessFault as exc:
                    self._fatal = f"process fault: {exc}"
            return self._shutdown()
        finally:
            self.stage.close()

    def complete(self, message: Message, verdict: Verdict) -> None:
        """Thread-safe: handlers report here, from any thread."""
        self._completions.put((message, verdict))

    # ------------------------------------------------------------ main loop

    def _iterate(self) -> None:
        now = time.monotonic()
        self._beat(now)
        for err in self.client_errors.take() if self.client_errors is not None else ():
            self._kafka_error(err)
        self._release_due(now)
        self._reconcile_pauses(now)
        capacity = self.high_water - len(self._work)
        batch = min(self.stage.max_batch, max(capacity, 1))
        timeout = 0.05 if self._work else self._idle_timeout(now)
        holding = self._holding_all(now)
        messages = self.consumer.consume(num_messages=batch, timeout=timeout)
        if messages and holding:
            messages = self._rewind_unpaused(messages)
        good = self._take(messages) if messages else messages
        if good:
            self._dispatch(good)
        self._settle()
        self._maybe_report_lag(now)

    def _idle_timeout(self, now: float) -> float:
        """Wait for messages, but wake up in time for the next deferred partition or retry."""
        wakeups = [*self._deferred.values(), *(due for due, _, _ in self._again[:1])]
        if not wakeups:
            return self.stage.batch_timeout
        return min(self.stage.batch_timeout, max(0.01, min(wakeups) - now))

    def _take(self, messages: list[Message]) -> list[Message]:
        """The messages to hand to the stage, each in flight from now; counted per topic."""
        started = time.monotonic()
        good: list[Message] = []
        counts: dict[str, int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._kafka_error(err)
                continue
            ident = _ident(msg)
            topic = ident[0]
            if not self.tracker.start_owned((topic, ident[1]), ident[2]):  # fetched just before a revoke
                continue
            self._attempts += 1
            self._work[ident] = _Work(msg, started, self._attempts)
            good.append(msg)
            counts[topic] = counts.get(topic, 0) + 1
        for topic, count in counts.items():
            self._metrics.consumed(topic, count)
        return good

    # ------------------------------------------------------- containment

    def _dispatch(self, messages: list[Message]) -> None:
        """Hand messages to the stage; a message its handler raises on is dead-lettered, nothing else.

        A batch that raises is handed over again one message at a time, so only the message
        that really fails is dead-lettered and the rest are handled normally.
        """
        try:
            self.stage.handle(messages, self.complete)
            return
        except ProcessFault:
            raise
        except Exception as exc:
            if len(messages) == 1:
                self._contain(messages[0], exc)
                return
            log.warning("batch of %d failed (%s); handling them one by one", len(messages), reason_of(exc))
        self._apply_completions()
        for msg in messages:
            work = self._current(msg)
            if work is None or work.answered:
                continue
            try:
                self.stage.handle([msg], self.complete)
            except ProcessFault:
                raise
            except Exception as exc:
                self._contain(msg, exc)

    def _contain(self, msg: Message, exc: Exception) -> None:
        reason = reason_of(exc)
        log.error(
            "handler failed on a message; dead-lettering it: %s", reason, exc_info=exc,
            extra={"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
        )
        self.complete(msg, Done([self._raw_letter(msg, reason)]))

    def _current(self, msg: Message) -> _Work | None:
        """The work entry of this very copy of the message, if it is still being worked on."""
        work = self._work.get(_ident(msg))
        return work if work is not None and work.message is msg else None

    def _settle(self) -> None:
        """Apply completions, serve delivery reports, store what became contiguous."""
        self._apply_completions()
        if self.producer is not None:
            self.producer.poll(0)
        self._store()
        self._metrics.flush()
        self._metrics.in_flight(len(self._work))

    def _apply_completions(self) -> None:
        while True:
            try:
                message, verdict = self._completions.get_nowait()
            except queue.Empty:
                return
            self._apply(message, verdict)

    def _apply(self, msg: Message, verdict: Verdict) -> None:
        ident = _ident(msg)
        work = self._work.get(ident)
        # Revoked, rewound, re-consumed meanwhile (another copy), or answered twice.
        if work is None or work.message is not msg or work.answered:
            return
        work.answered = True
        if isinstance(verdict, Done):
            self._again_pause = 0.0
            if self._holding:
                self._end_holds()
            self._produce_outputs(ident, work, verdict.outputs)
        elif isinstance(verdict, Again):
            self._schedule_again(msg, verdict.reason, verdict.kind)
        elif isinstance(verdict, Release):
            del self._work[ident]  # its offset stays pending in the tracker: never committed past
        else:
            self._defer(msg, verdict.until)

    def _produce_outputs(self, ident: tuple[str, int, int], work: _Work, outputs: Sequence[Output]) -> None:
        if not outputs:
            self._finish(ident)
            return
        assert self.producer is not None, "a stage without a producer produced outputs"
        try:
            outputs = self._sized(work.message, outputs)
        except Exception as exc:  # not even measurable (a header name that is not text): unsendable
            work.pending_acks = 1
            self._produce_letter(ident, work, self._dead_letter(work.message, f"output refused: {reason_of(exc)}"))
            return
        work.pending_acks = len(outputs)
        for index, out in enumerate(outputs):
            try:
                self._produce(out, self._on_delivery(ident, work.attempt, out))
            except (KafkaException, TypeError, ValueError) as exc:  # the output itself is unsendable
                work.pending_acks -= len(outputs) - index - 1
                letter = self._dead_letter(work.message, f"output to {out.topic} refused: {reason_of(exc)}")
                self._produce_letter(ident, work, letter)
                return

    def _sized(self, msg: Message, outputs: Sequence[Output]) -> Sequence[Output]:
        """Outputs that fit: a dead letter is cut to fit; any other output too large dead-letters the input."""
        limit = self.max_message_bytes
        for out in outputs:
            if output_size(out) > limit:
                break
        else:
            return outputs
        if len(outputs) == 1 and outputs[0].topic == self.stage.dead_letter_topic:
            return [fit(outputs[0], limit)]
        big = next(out for out in outputs if output_size(out) > limit)
        return [self._dead_letter(msg, f"output to {big.topic} is {output_size(big)} bytes, over {limit}")]

    def _dead_letter(self, msg: Message, reason: str) -> Output:
        log.error("message dead-lettered: %s", reason,
                  extra={"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()})
        return fit(self._raw_letter(msg, reason), self.max_message_bytes)

    def _raw_letter(self, msg: Message, reason: str) -> Output:
        """A raw dead letter of ``msg``; without its original headers if those cannot be read."""
        topic, name = self.stage.dead_letter_topic, self.stage.name
        try:
            return raw_dead_letter(msg, topic, name, reason)
        except Exception as exc:
            log.error("dead letter built without the original headers: %s", reason_of(exc),
                      extra={"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()})
            return raw_dead_letter(msg, topic, name, reason, original_headers=False)

    def _produce_letter(self, ident: tuple[str, int, int], work: _Work, letter: Output) -> None:
        """Produce a dead letter, else its minimal form; if even that is refused the process is at fault."""
        smallest = minimal(letter)
        try:
            self._produce(letter, self._on_delivery(ident, work.attempt, letter))
            return
        except (KafkaException, TypeError, ValueError) as exc:
            log.error("dead letter to %s refused (%s); sending it with our headers only", letter.topic,
                      reason_of(exc))
        try:
            self._produce(smallest, self._on_delivery(ident, work.attempt, smallest))
        except (KafkaException, TypeError, ValueError) as exc:
            raise ProcessFault(
                f"dead-letter topic {letter.topic} refuses even a minimal letter: {reason_of(exc)}"
            ) from exc

    def _produce(self, out: Output, callback: Callable) -> None:
        producer = self.producer
        assert producer is not None, "a stage without a producer produced outputs"
        while True:
            try:
                producer.produce(
                    # The stub types headers as a list of (str, str | bytes | None): invariant, so our
                    # list of (str, bytes) is refused although produce() only reads it.
                    out.topic, value=out.value, key=out.key, headers=out.headers,  # type: ignore[arg-type]
                    on_delivery=callback,
                )
                return
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)

    def _on_delivery(self, ident: tuple[str, int, int], attempt: int, out: Output) -> Callable:
        topic = out.topic

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            work = self._work.get(ident)
            if work is not None and work.attempt != attempt:
                work = None  # an abandoned copy's report: it must not finish the copy now in flight
            if err is not None:
                self._undelivered(ident, work, out, err)
                return
            self._metrics.produced(topic)
            if work is None:
                return
            work.pending_acks -= 1
            if work.pending_acks == 0:
                self._finish(ident)

        return delivered

    def _undelivered(self, ident: tuple[str, int, int], work: _Work | None, out: Output, err: KafkaError) -> None:
        """An output the idempotent producer gave up on, by what its error says."""
        category = classify(err)
        metrics.KAFKA_ERRORS.labels(self.stage.name, str(category)).inc()
        reason = f"delivery to {out.topic} failed: {err.str()}"
        if category is ErrorCategory.PERMANENT:
            self._fatal = reason
        elif work is None:
            return  # an abandoned copy's output: whoever owns the offset now does the work again
        elif err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            self._refused_too_large(ident, work, out)
        elif category is ErrorCategory.AUTH or err.retriable() or err.code() in REDO_CODES:
            self._redo(work, reason, "auth" if category is ErrorCategory.AUTH else "broker")
        else:  # nothing known to help: the input stays uncommitted and a fresh worker starts over
            self._fatal = reason

    def _redo(self, work: _Work, reason: str, kind: str) -> None:
        """Hold, then handle the message again as a new attempt: reports still due for this one are ignored."""
        self._attempts += 1
        work.attempt = self._attempts
        work.pending_acks = 0
        self._schedule_again(work.message, reason, kind)

    def _refused_too_large(self, ident: tuple[str, int, int], work: _Work, out: Output) -> None:
        """The topic's own limit is below ours: dead-letter the input in place of the output, cut to half."""
        limit = min(self.max_message_bytes, output_size(out)) // 2
        if out.topic == self.stage.dead_letter_topic and limit < 16 * 1024:
            self._fatal = f"dead-letter topic {out.topic} refuses even a {limit}-byte message"
            return
        letter = fit(self._raw_letter(work.message, f"output to {out.topic} refused as too large"), limit)
        self._produce_letter(ident, work, letter)

    def _finish(self, ident: tuple[str, int, int]) -> None:
        work = self._work.pop(ident, None)
        if work is None:
            return
        self.tracker.finish((ident[0], ident[1]), ident[2])
        self._metrics.processing(time.monotonic() - work.started)

    def _store(self, keys: list[TopicPartitionKey] | None = None) -> None:
        pending = self.tracker.to_store(keys)
        if not pending:
            return
        for topic, partition, offset in pending:
            try:
                self.consumer.store_offsets(offsets=[TopicPartition(topic, partition, offset)])
                self.tracker.mark_stored((topic, partition), offset)
            except KafkaException as exc:
                # _STATE: the partition was just revoked; its new owner re-reads from the commit.
                log.info("offset not stored for %s[%d]@%d: %s", topic, partition, offset, exc)
                self.tracker.forget([(topic, partition)])

    # ------------------------------------------------------- Kafka errors

    def _kafka_error(self, err: KafkaError) -> None:
        """Act on a librdkafka error by its category (:mod:`kafkapipe.kafka.errors`)."""
        category = classify(err)
        if category is None:
            return
        metrics.KAFKA_ERRORS.labels(self.stage.name, str(category)).inc()
        if category is ErrorCategory.PERMANENT:
            self._fatal = f"fatal Kafka error: {err.str()}"
        elif category is ErrorCategory.AUTH:
            self._hold(f"the broker refused our credentials: {err.str()}", "auth")
        else:
            now = time.monotonic()
            if now - self._transient_logged >= TRANSIENT_LOG_EVERY:
                self._transient_logged = now
                log.warning("Kafka error, waited out while librdkafka retries: %s", err.str())

    def _hold(self, reason: str, kind: str) -> None:
        """Pause every partition for a growing while; logged and counted once per hold, not per message."""
        now = time.monotonic()
        if kind not in self._holding:
            self._holding.add(kind)
            metrics.HOLDING.labels(self.stage.name, kind).set(1)
        if now < self._hold_until:
            return
        self._again_pause = min(AGAIN_MAX_PAUSE, max(AGAIN_FIRST_PAUSE, self._again_pause * 2))
        self._hold_until = now + self._again_pause
        metrics.AUTH_PAUSES.labels(self.stage.name).inc()
        log.warning("holding the stage for %.1fs: %s", self._again_pause, reason)

    def _end_holds(self) -> None:
        """Work got done again: whatever held the stage is over."""
        for kind in self._holding:
            metrics.HOLDING.labels(self.stage.name, kind).set(0)
        self._holding.clear()

    # ------------------------------------------------------- holding back

    def _schedule_again(self, msg: Message, reason: str, kind: str) -> None:
        """Hold the stage (a new hold lasts longer than the last one that did not help); retry then."""
        self._hold(reason, kind)
        self._seq += 1
        heapq.heappush(self._again, (self._hold_until, self._seq, msg))

    def _defer(self, msg: Message, until: float) -> None:
        key = _key(msg)
        offset = offset_of(msg)
        self.tracker.rewind(key, offset)
        for ident in [i for i in self._work if (i[0], i[1]) == key and i[2] >= offset]:
            del self._work[ident]
        self._pause([key])
        self.consumer.seek(TopicPartition(key[0], key[1], offset))
        delay = max(0.0, until - time.time())
        self._deferred[key] = time.monotonic() + delay

    def _release_due(self, now: float) -> None:
        for key, resume_at in list(self._deferred.items()):
            if resume_at <= now:
                del self._deferred[key]
        due: list[Message] = []
        while self._again and self._again[0][0] <= now:
            _, _, msg = heapq.heappop(self._again)
            work = self._current(msg)
            if work is not None:
                work.answered = False
                due.append(msg)
        if due:  # as one batch again: one blocking attempt per hold, not one per message
            self._dispatch(due)
        hold = self.stage.hold()
        if hold > 0:
            self._hold_until = max(self._hold_until, now + hold)

    def _reconcile_pauses(self, now: float) -> None:
        in_flight = len(self._work)
        if in_flight >= self.high_water:
            self._capacity_paused = True
        elif in_flight <= self.low_water:
            self._capacity_paused = False
        wanted = set(self._assigned) if self._holding_all(now) else set(self._deferred) & self._assigned
        if wanted - self._paused:
            self._pause(list(wanted - self._paused))
        if self._paused - wanted:
            self._resume(list(self._paused - wanted))

    def _holding_all(self, now: float) -> bool:
        return self._capacity_paused or now < self._hold_until or self.control.stop.is_set()

    def _rewind_unpaused(self, messages: list[Message]) -> list[Message]:
        """Partitions assigned during ``consume()`` were not paused with the rest: rewind and pause them."""
        first: dict[TopicPartitionKey, int] = {}
        kept = []
        for msg in messages:
            key = _key(msg)
            if msg.error() is None and key in self._assigned and key not in self._paused:
                first.setdefault(key, offset_of(msg))
            else:
                kept.append(msg)
        if first:
            self._pause(list(first))
            for (topic, partition), offset in first.items():
                self.consumer.seek(TopicPartition(topic, partition, offset))
        return kept

    def _pause(self, keys: list[TopicPartitionKey]) -> None:
        self.consumer.pause([TopicPartition(t, p) for t, p in keys])
        self._paused.update(keys)

    def _resume(self, keys: list[TopicPartitionKey]) -> None:
        self.consumer.resume([TopicPartition(t, p) for t, p in keys])
        self._paused.difference_update(keys)

    # ----------------------------------------------------------- rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.tracker.assign(keys)
        self._assigned.update(keys)
        metrics.ASSIGNED_PARTITIONS.labels(self.stage.name).set(len(self._assigned))
        log.info("assigned %s", _fmt(keys))
        self.control.ready()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._tell_revoked(keys)
        self._drop_again(keys)
        # In close() at shutdown the drain has had its time already: do not wait a second time.
        deadline = time.monotonic() + (0.0 if self.control.stop.is_set() else self.revoke_timeout)
        while self._in_flight(keys) and time.monotonic() < deadline and self._fatal is None:
            self._settle()
            time.sleep(0.01)
        self._settle()
        abandoned = self._in_flight(keys)
        self._store(keys)
        self._commit()
        self._release(keys)
        log.info("revoked %s (%d unfinished abandoned)", _fmt(keys), abandoned)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._tell_revoked(keys)
        self._drop_again(keys)
        self._release(keys)
        log.warning("lost %s; their unfinished work will be redone by the new owner", _fmt(keys))

    def _tell_revoked(self, keys: list[TopicPartitionKey]) -> None:
        revoked = getattr(self.stage, "revoked", None)
        if revoked is not None:
            revoked(keys)

    def _drop_again(self, keys: list[TopicPartitionKey] | None = None) -> None:
        """Let go of messages held by :class:`Again` at once: they are not in flight, nothing to wait for."""
        gone = None if keys is None else set(keys)
        dropped = [e for e in self._again if gone is None or _key(e[2]) in gone]
        self._again = [e for e in self._again if gone is not None and _key(e[2]) not in gone]
        heapq.heapify(self._again)
        for _, _, msg in dropped:
            if self._current(msg) is not None:
                del self._work[_ident(msg)]
        metrics.IN_FLIGHT.labels(self.stage.name).set(len(self._work))

    def _release(self, keys: list[TopicPartitionKey]) -> None:
        gone = set(keys)
        if gone & self._paused:  # librdkafka keeps a pause through revocation: one assigned back would stay paused
            try:
                self.consumer.resume([TopicPartition(t, p) for t, p in gone & self._paused])
            except KafkaException as exc:
                log.warning("could not resume released partitions: %s", exc)
        for ident in [i for i in self._work if (i[0], i[1]) in gone]:
            del self._work[ident]
        self.tracker.forget(keys)
        self._assigned.difference_update(gone)
        self._paused.difference_update(gone)
        for key in gone:
            self._deferred.pop(key, None)
            metrics.CONSUMER_LAG.labels(self.stage.name, key[0], str(key[1])).set(0)
        metrics.ASSIGNED_PARTITIONS.labels(self.stage.name).set(len(self._assigned))
        metrics.IN_FLIGHT.labels(self.stage.name).set(len(self._work))

    def _in_flight(self, keys: list[TopicPartitionKey]) -> int:
        wanted = set(keys)
        return sum(1 for ident in self._work if (ident[0], ident[1]) in wanted)

    def _commit(self) -> None:
        """Synchronously commit every stored offset (``_NO_OFFSET`` means nothing to do)."""
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc)

    # ------------------------------------------------------------ shutdown

    def _shutdown(self) -> int:
        deadline = time.monotonic() + self.drain_timeout
        self._reconcile_pauses(time.monotonic())
        self._drop_again()
        while self._work and time.monotonic() < deadline and self._fatal is None:
            self.consumer.consume(num_messages=1, timeout=0.05)  # keeps membership; all paused
            self._settle()
        unfinished = len(self._work)
        if self.producer is not None:
            self.producer.flush(max(1.0, deadline - time.monotonic()))
            self._settle()
        self._store()
        # A synchronous commit or close() can block while a rebalance (a sibling leaving at the
        # same time) waits for this consumer; bound both by what is left of the drain budget.
        remaining = max(1.0, min(self.commit_timeout, deadline + 1.0 - time.monotonic()))
        _close_bounded(self.consumer, remaining, before=self._commit)
        if self._fatal is not None:
            log.error("stopping on error: %s", self._fatal)
            return EXIT_FAILURE
        log.info("stopped; %d unfinished message(s) left for redelivery", unfinished)
        return EXIT_OK

    # --------------------------------------------------------------- misc

    def _beat(self, now: float) -> None:
        if now - self._last_beat >= HEARTBEAT_EVERY:
            self._last_beat = now
            self.control.heartbeat()

    def _maybe_report_lag(self, now: float) -> None:
        if now - self._last_lag < LAG_EVERY:
            return
        self._last_lag = now
        processmetrics.sample(self.stage.name)
        if not self._assigned:
            return
        tps = [TopicPartition(t, p) for t, p in self._assigned]
        try:
            positions = self.consumer.position(tps)
        except KafkaException:
            return
        for tp in positions:
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if tp.offset >= 0 and high >= 0:
                lag = max(0, high - tp.offset)
                if getattr(self.stage, "lag_is_waiting", False):  # retries before their due time
                    metrics.RETRY_WAITING.labels(tp.topic, str(tp.partition)).set(lag)
                else:
                    metrics.CONSUMER_LAG.labels(self.stage.name, tp.topic, str(tp.partition)).set(lag)


def _fmt(keys: list[TopicPartitionKey]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(keys)) or "nothing"


def _close_bounded(consumer: Consumer, timeout: float, before: Callable[[], None] | None = None) -> None:
    """``close()`` can hang while the cluster is unstable; never let it block exit."""

    def close() -> None:
        if before is not None:
            before()
        consumer.close()

    closer = threading.Thread(target=close, name="consumer-close", daemon=True)
    closer.start()
    closer.join(timeout)
    if closer.is_alive():
        log.warning("consumer close did not finish within %.0fs; exiting anyway", timeout)
