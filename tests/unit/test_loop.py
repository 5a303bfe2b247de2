"""ConsumeLoop against an in-memory consumer and producer (tests/fakekafka.py).

Each test drives the loop one iteration at a time and chooses when completions and delivery
reports arrive, so out-of-order completion, revocation mid-flight, stale reports, rewinds and
shutdown are exercised deterministically, without a broker and without sleeping.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from loophelpers import DLQ, OUT, P0, P1, ScriptedStage, T, make, spin

from kafkapipe import metrics
from kafkapipe.kafka import loop as loopmod
from kafkapipe.kafka.deadletter import FRAMING
from kafkapipe.kafka.loop import Again, Defer, Done, Output, ProcessFault, Release
from kafkapipe.worker import EXIT_FAILURE, EXIT_OK


def no_sleeping(monkeypatch) -> list:
    """Records every sleep of the loop's drain instead of sleeping: a budget spent shows up here."""
    slept: list[float] = []
    monkeypatch.setattr(loopmod.time, "sleep", slept.append)
    return slept


# ----------------------------------------------------------------------------- containment
def test_a_handler_raising_on_one_message_dead_letters_only_that_one():
    def verdict(msg):
        if msg.value() == b"poison":
            raise OverflowError("date value out of range")
        return Done([Output(OUT, None, msg.value())])

    loop, consumer, producer, _ = make(ScriptedStage(verdict))
    for value in (b"a", b"poison", b"c"):
        consumer.add(T, 0, value)
    consumer.assign(P0)
    spin(loop)
    assert [p.value for p in producer.on(OUT)] == [b"a", b"c"]
    [letter] = producer.on(DLQ)
    assert letter.value == b"poison"
    assert letter.header("error-message") == b"OverflowError: date value out of range"
    assert (letter.header("source-topic"), letter.header("source-offset")) == (b"in", b"1")
    assert consumer.stored[P0] == 3  # the stage went on past it


def test_a_process_fault_ends_the_worker_after_committing_what_is_done():
    def verdict(msg):
        if msg.offset() == 1:
            raise ProcessFault("inventory unusable")
        return Done()

    stage = ScriptedStage(verdict)
    loop, consumer, producer, _control = make(stage)
    consumer.add(T, 0, b"a")
    consumer.assign(P0)
    spin(loop, 1)
    consumer.add(T, 0, b"b")
    assert loop.run() == EXIT_FAILURE
    assert consumer.committed[P0] == 1 and stage.closed and consumer.closed
    assert producer.on(DLQ) == []


def test_an_oversized_dead_letter_is_cut_to_fit_and_says_so():
    limit = 64 * 1024

    def verdict(msg):
        raise ValueError("constructed an invalid blob path")

    loop, consumer, producer, _ = make(ScriptedStage(verdict), max_bytes=limit)
    consumer.add(T, 0, b"x" * (limit - 10), headers=[("h", b"v")])
    consumer.assign(P0)
    spin(loop)
    [letter] = producer.on(DLQ)
    assert len(letter.value) + FRAMING <= limit and letter.value == b"x" * len(letter.value)
    assert letter.header("original-size") == str(limit - 10).encode()
    assert letter.header("truncated") == b"true"
    assert letter.header("source-offset") == b"0"
    assert consumer.stored[P0] == 1


def test_hostile_headers_are_dropped_from_a_dead_letter_that_would_not_fit():
    limit = 64 * 1024
    loop, consumer, producer, _ = make(ScriptedStage(lambda m: 1 / 0), max_bytes=limit)
    consumer.add(T, 0, b"v", headers=[("junk", b"j" * limit)])
    consumer.assign(P0)
    spin(loop)
    [letter] = producer.on(DLQ)
    assert letter.header("junk") is None and letter.header("original-headers-dropped") == b"1"
    assert letter.header("error-message") == b"ZeroDivisionError: division by zero"


def test_copies_of_our_own_headers_cannot_make_a_dead_letter_too_large():
    limit = 1_000_000
    loop, consumer, producer, _ = make(ScriptedStage(lambda m: 1 / 0 if m.offset() == 0 else Done()),
                                       max_bytes=limit)
    sent = [("trace_id", b"A" * 900)] * 1130 + [("truncated", b"t" * 900)] * 10 + [("h", b"v")]
    consumer.add(T, 0, b"not json", headers=sent)
    consumer.add(T, 0, b"good")
    consumer.assign(P0)
    spin(loop)
    [letter] = producer.on(DLQ)
    assert [k for k, _ in letter.headers].count("trace_id") == 1 and letter.header("trace_id") == b"A" * 256
    assert letter.header("truncated") is None and letter.header("h") == b"v"
    assert letter.header("error-message") == b"ZeroDivisionError: division by zero"
    assert letter.value == b"not json" and consumer.stored[P0] == 2


def test_a_stages_dead_letter_full_of_our_header_names_is_cut_to_our_own_headers():
    limit = 64 * 1024
    flood = [("trace_id", b"T" * 1000), ("error-message", b"E" * 1000)] * 100

    loop, consumer, producer, _ = make(
        ScriptedStage(lambda m: Done([Output(DLQ, None, m.value(), [*flood, ("source-offset", b"0")])])),
        max_bytes=limit,
    )
    consumer.add(T, 0, b"v")
    consumer.assign(P0)
    spin(loop)
    [letter] = producer.on(DLQ)
    assert sorted(k for k, _ in letter.headers) == sorted(
        ["trace_id", "error-message", "source-offset", "original-headers-dropped", "original-size", "truncated"])
    assert letter.header("original-headers-dropped") == b"198" and consumer.stored[P0] == 1


def refusing(producer, refuse) -> None:
    """Make ``producer.produce`` raise what librdkafka raises for a message it will not take."""
    produce = producer.produce

    def checked(topic, value=None, key=None, headers=None, on_delivery=None):
        if refuse(topic, value):
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)

    producer.produce = checked


def test_a_refused_dead_letter_is_sent_again_with_our_headers_only():
    loop, consumer, producer, _ = make(ScriptedStage())
    refusing(producer, lambda topic, value: topic == OUT or (topic == DLQ and value))
    consumer.add(T, 0, b"a", headers=[("h", b"v")])
    consumer.assign(P0)
    spin(loop)
    [letter] = producer.on(DLQ)
    assert letter.value == b"" and letter.key is None and letter.header("h") is None
    assert letter.header("error-message").startswith(b"output to out refused: KafkaException")
    assert letter.header("original-headers-dropped") == b"1" and letter.header("source-offset") == b"0"
    assert consumer.stored[P0] == 1


def test_a_dead_letter_refused_even_minimal_is_a_process_fault_not_a_crash():
    loop, consumer, producer, _ = make(ScriptedStage())
    refusing(producer, lambda topic, value: topic in (OUT, DLQ))
    consumer.add(T, 0, b"a")
    consumer.assign(P0)
    assert loop.run() == EXIT_FAILURE
    assert "refuses even a minimal letter" in loop._fatal
    assert P0 not in consumer.committed and producer.on(DLQ) == []


class Unreadable(list):
    """Headers that cannot be read back."""

    def __iter__(self):
        raise RuntimeError("headers unreadable")


def test_a_message_whose_headers_cannot_be_read_is_dead_lettered_without_them():
    loop, consumer, producer, _ = make(ScriptedStage(lambda m: 1 / 0))
    consumer.add(T, 0, b"v", headers=Unreadable([("h", b"v")]))
    consumer.assign(P0)
    spin(loop)
    [letter] = producer.on(DLQ)
    assert letter.value == b"v" and letter.header("h") is None
    assert letter.header("original-headers-dropped") == b"unreadable"
    assert letter.header("error-message") == b"ZeroDivisionError: division by zero"
    assert consumer.stored[P0] == 1


def test_an_output_the_producer_refuses_dead_letters_the_input():
    loop, consumer, producer, _ = make(ScriptedStage(lambda m: Done([Output(OUT, None, m.value(), [("k", 7)])])))
    consumer.add(T, 0, b"a")
    consumer.assign(P0)
    spin(loop)
    assert producer.on(OUT) == []
    [letter] = producer.on(DLQ)
    assert letter.header("error-message").startswith(b"output to out refused: TypeError")
    assert consumer.stored[P0] == 1


def test_an_output_too_large_for_the_topic_dead_letters_the_input_on_its_delivery_report():
    loop, consumer, producer, _ = make(ScriptedStage())
    producer.refuse = lambda p: KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if p.topic == OUT else None
    consumer.add(T, 0, b"a" * 100_000)
    consumer.assign(P0)
    spin(loop)
    [letter] = producer.on(DLQ)
    assert letter.header("error-message") == b"output to out refused as too large"
    assert loop._fatal is None and consumer.stored[P0] == 1


# ----------------------------------------------------------------------------- offsets
def test_out_of_order_completions_store_only_the_contiguous_prefix():
    stage = ScriptedStage(hold_back=True)
    loop, consumer, _producer, _ = make(stage)
    for _ in range(4):
        consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    stage.answer(2)
    stage.answer(1)
    spin(loop, 1)
    assert P0 not in consumer.stored
    stage.answer(0)
    spin(loop, 1)
    assert consumer.stored[P0] == 3
    stage.answer(3)
    spin(loop, 1)
    assert consumer.stored[P0] == 4


def test_an_offset_is_stored_only_once_every_output_is_acknowledged():
    loop, consumer, producer, _ = make(ScriptedStage(), auto_ack=False)
    consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop)
    assert P0 not in consumer.stored
    producer.ack_all()
    spin(loop, 1)
    assert consumer.stored[P0] == 1


def test_a_stale_delivery_report_cannot_finish_a_reconsumed_copy():
    loop, consumer, producer, _ = make(ScriptedStage(), auto_ack=False, revoke_timeout=0.0)
    consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    [first] = producer.unacked
    consumer.revoke(P0)  # abandoned with its output unacknowledged
    producer.unacked.clear()
    consumer.assign(P0)  # back to us; offset 0 is consumed again
    spin(loop, 1)
    assert len(producer.produced) == 2
    first.on_delivery(None, None)  # the first copy's ack arrives late
    spin(loop, 1)
    assert P0 not in consumer.stored and loop._in_flight([P0]) == 1
    producer.ack_all()
    spin(loop, 1)
    assert consumer.stored[P0] == 1


def test_a_stale_completion_cannot_answer_a_reconsumed_copy():
    stage = ScriptedStage(hold_back=True)
    loop, consumer, producer, _ = make(stage, revoke_timeout=0.0)
    consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    old_msg, old_complete = stage.waiting.pop()
    consumer.revoke(P0)
    consumer.assign(P0)
    spin(loop, 1)
    old_complete(old_msg, Done())  # the abandoned copy finishes late
    spin(loop, 1)
    assert P0 not in consumer.stored
    stage.answer(0)
    spin(loop, 1)
    assert consumer.stored[P0] == 1 and len(producer.on(OUT)) == 1


def test_a_second_verdict_for_the_same_copy_is_ignored():
    loop, consumer, producer, _ = make(ScriptedStage(hold_back=True))
    stage = loop.stage
    consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    msg, complete = stage.waiting[0]
    complete(msg, Done([Output(OUT, None, b"1")]))
    complete(msg, Done([Output(OUT, None, b"2")]))
    spin(loop, 1)
    assert [p.value for p in producer.on(OUT)] == [b"1"]


# ----------------------------------------------------------------------------- rebalance
def test_revoke_mid_flight_drains_finished_work_commits_it_and_tells_the_stage(monkeypatch):
    no_sleeping(monkeypatch)
    stage = ScriptedStage(hold_back=True)
    loop, consumer, producer, _ = make(stage, auto_ack=False, revoke_timeout=0.0)
    for _ in range(3):
        consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    stage.answer(0)
    stage.answer(2)
    loop._settle()
    producer.ack_all()  # 0 and 2 acknowledged, 1 still running
    consumer.revoke(P0)
    assert stage.revoked_keys == [[P0]]
    assert consumer.committed[P0] == 1  # only the contiguous prefix
    assert loop._work == {} and not loop.tracker.owns(P0)


def test_release_leaves_the_offset_uncommitted():
    stage = ScriptedStage(hold_back=True)
    loop, consumer, _producer, _ = make(stage)
    for _ in range(2):
        consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    stage.answer(0, Release())
    stage.answer(1)
    spin(loop, 2)
    assert P0 not in consumer.stored and loop._work == {}


def test_lost_partitions_drop_their_work_without_committing():
    stage = ScriptedStage(hold_back=True)
    loop, consumer, _producer, _ = make(stage)
    consumer.add(T, 0)
    consumer.add(T, 1)
    consumer.assign(P0, P1)
    spin(loop, 1)
    consumer.lose(P0)
    stage.answer(0, partition=0)  # finishes after the loss: dropped
    stage.answer(0, partition=1)
    spin(loop, 1)
    assert P0 not in consumer.committed and P0 not in consumer.stored
    assert consumer.stored[P1] == 1 and stage.revoked_keys == [[P0]]


# ----------------------------------------------------------------------------- Again / Defer
def test_again_holds_the_message_and_handles_it_again_when_due(monkeypatch):
    answers = iter([Again("credentials refused"), Done()])
    stage = ScriptedStage(lambda msg: next(answers))
    loop, consumer, _producer, _ = make(stage)
    consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 2)
    assert P0 in consumer.paused and loop._again
    now = loopmod.time.monotonic()
    monkeypatch.setattr(loopmod.time, "monotonic", lambda: now + loopmod.AGAIN_MAX_PAUSE + 1)
    spin(loop, 2)
    assert stage.handled == [[0], [0]] and consumer.stored[P0] == 1


def test_a_hold_shows_on_the_holding_gauge_by_kind_until_work_is_done_again(monkeypatch):
    answers = iter([Again("storage unavailable: ENOSPC", kind="storage"), Done()])
    loop, consumer, _producer, _ = make(ScriptedStage(lambda msg: next(answers)))
    holding = metrics.HOLDING.labels("scripted", "storage")
    consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 2)
    assert holding._value.get() == 1
    now = loopmod.time.monotonic()
    monkeypatch.setattr(loopmod.time, "monotonic", lambda: now + loopmod.AGAIN_MAX_PAUSE + 1)
    spin(loop, 2)
    assert consumer.stored[P0] == 1 and holding._value.get() == 0


def test_messages_held_by_again_are_released_at_once_on_revoke(monkeypatch):
    slept = no_sleeping(monkeypatch)
    loop, consumer, _producer, _ = make(ScriptedStage(lambda m: Again("refused")), revoke_timeout=30.0)
    consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    assert loop._in_flight([P0]) == 1
    consumer.revoke(P0)
    assert slept == []  # nothing waited for: a held message is not in flight
    assert loop._again == [] and loop._work == {}


def test_messages_held_by_again_are_released_at_once_on_stop():
    loop, consumer, _producer, control = make(ScriptedStage(lambda m: Again("refused")), drain_timeout=30.0)
    consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    control.stop.set()
    calls = consumer.consume_calls
    assert loop.run() == EXIT_OK
    assert consumer.consume_calls == calls  # the drain had nothing to wait for
    assert P0 not in consumer.committed


def test_defer_rewinds_and_pauses_the_partition_until_due(monkeypatch):
    stage = ScriptedStage(lambda m: Defer(until=loopmod.time.time() + 60) if m.offset() == 1 else Done())
    loop, consumer, _producer, _ = make(stage)
    for _ in range(3):
        consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    assert consumer.position_of[P0] == 1 and P0 in consumer.paused
    assert consumer.stored[P0] == 1  # offset 0 done; 1 and 2 will be consumed again
    assert loop._in_flight([P0]) == 0


# ----------------------------------------------------------------------------- shutdown
def test_shutdown_drains_in_flight_work_and_commits_it():
    stage = ScriptedStage(hold_back=True)
    loop, consumer, _producer, control = make(stage)
    consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    control.stop.set()
    stage.answer(0)  # answered, outputs not yet produced when the stop comes
    assert loop.run() == EXIT_OK
    assert consumer.committed[P0] == 1 and consumer.closed


# ----------------------------------------------------------------------------- Kafka errors
def test_a_fatal_kafka_error_ends_the_loop_after_committing_what_is_done():
    loop, consumer, _producer, _control = make(ScriptedStage())
    consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 2)
    loop.client_errors(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    assert loop.run() == EXIT_FAILURE
    assert consumer.committed[P0] == 1


@pytest.mark.parametrize("code", [KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
                                  KafkaError.TOPIC_AUTHORIZATION_FAILED])
def test_refused_credentials_hold_the_stage_with_a_metric_and_a_log_line(code, caplog):
    loop, consumer, _producer, _control = make(ScriptedStage())
    consumer.assign(P0)
    pauses = metrics.AUTH_PAUSES.labels("scripted")
    before = pauses._value.get()
    for _ in range(5):  # librdkafka reports each failed attempt: one hold, one line
        loop.client_errors(KafkaError(code, "SASL authentication error: invalid_token"))
    consumer.add(T, 0)
    spin(loop, 2)
    assert pauses._value.get() - before == 1
    assert [r for r in caplog.records if "refused our credentials" in r.getMessage()]
    assert P0 in consumer.paused and loop._fatal is None
    assert loop.stage.handled == []  # nothing taken while held


@pytest.mark.parametrize("code", [KafkaError._AUTHENTICATION, KafkaError._MSG_TIMED_OUT])
def test_an_output_not_delivered_for_a_passing_reason_is_produced_again_after_a_hold(code, monkeypatch):
    loop, consumer, producer, _control = make(ScriptedStage(), auto_ack=False)
    consumer.add(T, 0, b"a")
    consumer.assign(P0)
    spin(loop, 1)
    [first] = producer.unacked
    producer.unacked.clear()
    first.on_delivery(KafkaError(code, "refused"), None)
    assert loop._fatal is None and loop._again
    first.on_delivery(None, None)  # a late success report of the given-up attempt: ignored
    spin(loop, 1)
    assert P0 not in consumer.stored
    now = loopmod.time.monotonic()
    monkeypatch.setattr(loopmod.time, "monotonic", lambda: now + loopmod.AGAIN_MAX_PAUSE + 1)
    spin(loop, 2)
    assert [p.value for p in producer.on(OUT)] == [b"a", b"a"]
    producer.ack_all()
    spin(loop, 1)
    assert consumer.stored[P0] == 1 and loop._fatal is None


def test_an_output_not_delivered_for_an_unknown_reason_ends_the_worker_without_committing_it():
    loop, consumer, producer, _control = make(ScriptedStage())
    producer.refuse = lambda p: KafkaError(KafkaError.INVALID_RECORD, "no")
    consumer.add(T, 0, b"a")
    consumer.assign(P0)
    spin(loop, 1)
    assert loop._fatal and P0 not in consumer.stored


def test_a_transient_kafka_error_is_waited_out():
    loop, consumer, _producer, _control = make(ScriptedStage())
    consumer.assign(P0)
    loop.client_errors(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    consumer.add(T, 0)
    spin(loop, 2)
    assert loop._fatal is None and consumer.stored[P0] == 1


# ----------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("waiting", [False, True])
def test_a_waiting_stages_backlog_is_reported_as_retry_waiting_not_lag(waiting, monkeypatch):
    stage = ScriptedStage(hold_back=True)
    stage.lag_is_waiting = waiting
    loop, consumer, _producer, _ = make(stage)
    for _ in range(3):
        consumer.add(T, 0)
    consumer.assign(P0)
    spin(loop, 1)
    now = loopmod.time.monotonic()
    monkeypatch.setattr(loopmod.time, "monotonic", lambda: now + loopmod.LAG_EVERY + 1)
    lag = metrics.CONSUMER_LAG.labels("scripted", T, "0")
    waiting_gauge = metrics.RETRY_WAITING.labels(T, "0")
    lag.set(-1)
    waiting_gauge.set(-1)
    spin(loop, 1)
    reported, untouched = (waiting_gauge, lag) if waiting else (lag, waiting_gauge)
    assert reported._value.get() == 3 - consumer.position_of.get(P0, 0)
    assert untouched._value.get() == -1
    assert metrics.PROCESS_RSS.labels("scripted")._value.get() > 0
    assert metrics.PROCESS_CPU.labels("scripted")._value.get() > 0
