"""The delay stage against a real broker: a real ``kafkapipe worker --stage delay`` process.

No download stage runs: DownloadTasks are put straight onto the retry topics, made by the same
code the download stage uses (``Outcomes.transient``) with a clock chosen so that ``retry_at``
is exactly the due time a test wants. What is forwarded is read back from the pending topic.

Time is only ever asserted as the contract's lower bound: nothing reaches pending before its
``retry_at`` (checked against the forwarded message's broker timestamp, which the worker's
producer sets from the same host clock, and against the time the test received it). Everything
else waits on conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import timedelta

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafkahelpers import wait_for
from pipelinehelpers import Pipeline

from kafkapipe.config import Config, from_mapping
from kafkapipe.kafka.clients import header_map
from kafkapipe.messages import SCHEMA_TASK, DownloadTask, ErrorInfo, loads, make_task_id, utcnow
from kafkapipe.stages.outcomes import Outcomes

TIMEOUT = 60.0
FILLER = b"{}"  # stands for fresh work on pending in the lag-gate test
ERROR = ErrorInfo("transient", "HTTP 503 from files.example.com")


# ----------------------------------------------------------------------------- helpers
class DelayPipeline:
    """A Pipeline used only for its config, topics and worker processes, plus retry-topic helpers."""

    def __init__(self, tmp_path, bootstrap: str, admin, name: str, stages: dict | None = None,
                 consumer: dict | None = None) -> None:
        overrides = {"stages": {"delay": stages or {}}, "kafka": {"consumer": consumer or {}}}
        self.pipe = Pipeline(tmp_path, bootstrap, name, 443, overrides)
        self.pipe.create_topics(admin)
        self.bootstrap = bootstrap
        self.config: Config = from_mapping(self.pipe.data, source="test")
        self.topics = self.config.topics
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self.workers: list = []

    # ------------------------------------------------------------------ retry messages
    def retry_output(self, name: str, index: int, due: float):
        """The Output the download stage would produce for a transient failure, due at ``due``."""
        url = f"https://files.example.com/claims/{name}.pdf"
        trace_id = f"trace-{name}"
        now = utcnow()
        task = DownloadTask(
            task_id=make_task_id(trace_id, url), trace_id=trace_id, attachment_url=url,
            blob_path=f"claims/{name}.pdf", event_type="xact.claims.documentsReceived",
            event_subtype="documentsReceived", source_system="xact",
            original_timestamp=now - timedelta(hours=1), created_at=now - timedelta(minutes=5),
            retry_count=index, metadata={"case": name},
        )
        delay = self.topics.retry_delay_seconds(index)
        outcomes = Outcomes(self.topics, "download", rand=lambda: 0.0, clock=lambda: due - delay)
        _result, routed = outcomes.transient(task, ERROR, started=time.monotonic())
        assert routed.topic == self.topics.retry_topic(index)
        assert header_map(routed.headers)["retry-at"] == str(int(due * 1000))
        return routed

    def put(self, name: str, index: int, due: float, partition: int) -> dict:
        """Produces one retry message to ``partition`` of retry topic ``index``; returns what was sent."""
        out = self.retry_output(name, index, due)
        self.producer.produce(out.topic, key=out.key, value=out.value, headers=out.headers, partition=partition)
        return {"name": name, "key": out.key.encode(), "value": out.value, "headers": header_map(out.headers),
                "due_ms": int(due * 1000), "topic": out.topic, "partition": partition}

    def flush(self) -> None:
        assert self.producer.flush(TIMEOUT) == 0, "retry messages not acknowledged"

    # ------------------------------------------------------------------ the worker
    def start(self):
        proc = self.pipe.start_worker("delay")
        self.workers.append(proc)
        return proc

    def log_lines(self) -> list[dict]:
        lines = []
        for text in self.pipe.logs().splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:
                continue
        return lines

    def wait_log(self, text: str, count: int = 1, timeout: float = TIMEOUT) -> None:
        def seen():
            return sum(text in str(line.get("msg", "")) for line in self.log_lines()) >= count

        try:
            wait_for(seen, timeout, f"{count}× log line {text!r}", interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- logs ---\n{self.pipe.logs()[-6000:]}") from None

    def wait_assigned(self, count: int = 1) -> None:
        """Until the workers logged ``count`` assignments of partitions, in total."""
        def seen():
            texts = [str(line.get("msg", "")) for line in self.log_lines()]
            return sum(t.startswith("assigned ") and t != "assigned nothing" for t in texts) >= count

        try:
            wait_for(seen, TIMEOUT, f"{count} assignments of partitions", interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- logs ---\n{self.pipe.logs()[-6000:]}") from None

    def stop(self) -> None:
        codes = self.pipe.stop()
        assert all(code in (0, -signal.SIGKILL) for code in codes), f"worker exit codes {codes}"

    # ------------------------------------------------------------------ reading topics
    def read_all(self, topic: str) -> list:
        """Everything in ``topic`` right now, read up to the high watermarks taken at the start."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                             "enable.auto.commit": False, "enable.partition.eof": False})
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            ends = {}
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    ends[p] = high
            if not ends:
                return []
            consumer.assign([TopicPartition(topic, p, 0) for p in ends])  # 0 < low: reset to earliest
            got = []
            done: set[int] = set()

            def caught_up() -> bool:
                for msg in consumer.consume(500, timeout=0.2):
                    if msg.error() is None:
                        got.append(msg)
                        if msg.offset() + 1 >= ends[msg.partition()]:
                            done.add(msg.partition())
                return done == set(ends)

            wait_for(caught_up, TIMEOUT, f"reading {topic} to its end")
            return got
        finally:
            consumer.close()

    def wait_pending(self, count: int, timeout: float = TIMEOUT) -> list:
        """Until pending holds at least ``count`` messages; returns them with their receipt time."""
        def enough():
            got = self.read_all(self.topics.pending)
            return got if len(got) >= count else None

        try:
            return wait_for(enough, timeout, f"{count} messages on pending", interval=0.2)
        except TimeoutError as exc:
            have = len(self.read_all(self.topics.pending))
            raise AssertionError(f"{exc}; have {have}\n--- logs ---\n{self.pipe.logs()[-6000:]}") from None

    def wait_names(self, names, timeout: float = TIMEOUT) -> dict[str, list]:
        """Until every named task is on pending; returns all of pending by task name."""
        wanted = set(names)

        def arrived():
            got = by_name(self.read_all(self.topics.pending))
            return got if wanted <= set(got) else None

        try:
            return wait_for(arrived, timeout, f"{len(wanted)} named tasks on pending", interval=0.2)
        except TimeoutError as exc:
            missing = sorted(wanted - set(by_name(self.read_all(self.topics.pending))))
            raise AssertionError(f"{exc}; missing {missing}\n--- logs ---\n{self.pipe.logs()[-6000:]}") from None

    def committed(self, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            parts = [TopicPartition(t, p) for t in topics for p in range(self.topics.partitions)]
            return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(parts, timeout=10)}
        finally:
            consumer.close()


def by_name(messages: list) -> dict[str, list]:
    """Retry tasks by their test name (messages that are not such tasks are left out)."""
    out: dict[str, list] = {}
    for msg in messages:
        if msg.value() == FILLER:
            continue
        out.setdefault(loads(msg.value(), DownloadTask).metadata["case"], []).append(msg)
    return out


def assert_forwarded_as_sent(msg, sent: dict) -> None:
    """Byte for byte, same key, the contract's headers; and not before its retry_at."""
    assert msg.value() == sent["value"]
    assert msg.key() == sent["key"]
    hdrs = header_map(msg.headers())
    assert hdrs["trace_id"] == sent["headers"]["trace_id"] == f"trace-{sent['name']}"
    assert hdrs["task_id"] == sent["headers"]["task_id"] == sent["key"].decode()
    assert hdrs["kafkapipe-schema"] == SCHEMA_TASK
    kind, ts = msg.timestamp()
    assert kind != 0 and ts >= sent["due_ms"], f"{sent['name']} forwarded at {ts} ms, due at {sent['due_ms']} ms"


@pytest.fixture
def delay_env(tmp_path, kafka_bootstrap, kafka_admin, unique_name):
    made: list[DelayPipeline] = []

    def make(**kwargs) -> DelayPipeline:
        directory = tmp_path / f"p{len(made)}"
        directory.mkdir()
        env = DelayPipeline(directory, kafka_bootstrap, kafka_admin, unique_name("delay"), **kwargs)
        made.append(env)
        return env

    yield make
    for env in made:
        env.pipe.stop(timeout=30)


# ----------------------------------------------------------------------------- tests
def test_due_task_is_forwarded_byte_for_byte(delay_env):
    env = delay_env()
    now = time.time()
    sent = [env.put("past-a", 0, now - 60, 0), env.put("past-b", 1, now - 1, 2)]
    env.flush()
    env.start()

    got = by_name(env.wait_pending(len(sent)))
    for item in sent:
        assert len(got[item["name"]]) == 1
        assert_forwarded_as_sent(got[item["name"]][0], item)
    assert sum(len(v) for v in got.values()) == len(sent)


def test_task_is_not_forwarded_before_retry_at(delay_env):
    env = delay_env()
    env.start()
    env.wait_assigned()
    sent = []
    for i in range(6):
        due = time.time() + 3.0  # rises along each partition, as on a real retry topic
        sent.append(env.put(f"soon-{i}", i % 2, due, i % 3))
    env.flush()

    messages = env.wait_pending(len(sent))
    received = time.time()
    got = by_name(messages)
    assert sorted(got) == sorted(item["name"] for item in sent)
    for item in sent:
        (msg,) = got[item["name"]]
        assert_forwarded_as_sent(msg, item)
        assert received * 1000 >= item["due_ms"]


def test_waiting_head_holds_its_partition_only(delay_env):
    env = delay_env()
    now = time.time()
    # retry topic 0, partition 0: a head due in an hour, then messages that would be due already
    # (on a real retry topic they could not be: due times only rise along a partition).
    blocked = [env.put("blocked-head", 0, now + 3600, 0)]
    blocked += [env.put(f"blocked-{i}", 0, now - 10, 0) for i in range(3)]
    # retry topic 0, partition 1: a head due in 4 s, then already-due messages behind it.
    short = [env.put("short-head", 0, now + 4, 1)]
    short += [env.put(f"short-{i}", 0, now - 10, 1) for i in range(3)]
    # due now: the other partition of the same topic, and the other topic.
    flowing = [env.put(f"flow-a{i}", 0, now - 5, 2) for i in range(3)]
    flowing += [env.put(f"flow-b{i}", 1, now - 5, i % 3) for i in range(6)]
    env.flush()
    env.start()

    got = env.wait_names(item["name"] for item in flowing)
    for item in flowing:
        assert_forwarded_as_sent(got[item["name"]][0], item)
    # They keep flowing after the heads were deferred: a second wave on the same partitions.
    wave = [env.put(f"wave-a{i}", 0, time.time() - 1, 2) for i in range(3)]
    wave += [env.put(f"wave-b{i}", 1, time.time() - 1, i % 3) for i in range(3)]
    env.flush()
    env.wait_names(item["name"] for item in wave)

    # The 4 s head is released at its time, and what waited behind it only with or after it.
    got = env.wait_names(item["name"] for item in short)
    head_ms = short[0]["due_ms"]
    for item in short:
        (msg,) = got[item["name"]]
        assert msg.value() == item["value"]
        assert msg.timestamp()[1] >= head_ms, f"{item['name']} overtook the waiting head of its partition"

    # The hour-long head still holds everything behind it; nothing was forwarded twice.
    assert not {item["name"] for item in blocked} & set(got)
    assert sorted(got) == sorted(item["name"] for item in flowing + wave + short)
    assert all(len(v) == 1 for v in got.values())


def test_killed_worker_loses_nothing(delay_env):
    """kill -9 while messages wait, then a new worker: nothing is lost.

    Asserted: every task reaches pending, byte for byte and not before its retry_at; each exactly
    once, except tasks the killed worker had forwarded at or beyond the offset its group had
    committed (read from the broker after the kill): those exactly twice. Here the due tasks are
    committed before the kill and the others are not due until well after it, so normally none
    is forwarded twice; the accounting keeps the assertion exact either way.
    """
    # A short session, so the new worker is not kept waiting for the dead member's 45 s timeout.
    env = delay_env(consumer={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    retry_topics = env.topics.retry_topics
    group = f"{env.config.kafka.group_prefix}.delay"
    now = time.time()
    # Every partition: two due tasks, then three that wait (the worker defers the first of them).
    first = [env.put(f"due-{t}-{p}-{i}", t, now - 30 + i, p) for t in (0, 1) for p in range(3) for i in range(2)]
    later = [env.put(f"later-{t}-{p}-{i}", t, now + 15, p) for t in (0, 1) for p in range(3) for i in range(3)]
    env.flush()
    first_worker = env.start()
    env.wait_names(item["name"] for item in first)

    def first_ones_committed() -> bool:
        committed = env.committed(group, retry_topics)
        return all(committed[(t, p)] == 2 for t in retry_topics for p in range(3))

    wait_for(first_ones_committed, TIMEOUT, "the delay group to commit the forwarded tasks", interval=0.2)
    os.kill(first_worker.pid, signal.SIGKILL)
    assert first_worker.wait(TIMEOUT) == -signal.SIGKILL

    forwarded_before = set(by_name(env.read_all(env.topics.pending)))
    committed = env.committed(group, retry_topics)
    uncommitted = {
        loads(m.value(), DownloadTask).metadata["case"]
        for topic in retry_topics
        for m in env.read_all(topic)
        if m.offset() >= committed[(m.topic(), m.partition())]
    }
    twice = forwarded_before & uncommitted

    env.start()
    everything = first + later
    env.wait_names(item["name"] for item in everything)
    got = by_name(env.wait_pending(len(everything) + len(twice)))
    assert sorted(got) == sorted(item["name"] for item in everything), "a task was lost or invented"
    for item in everything:
        assert len(got[item["name"]]) == (2 if item["name"] in twice else 1), item["name"]
        for msg in got[item["name"]]:
            assert_forwarded_as_sent(msg, item)
    env.stop()


def test_lag_gate_holds_retries_until_downloads_catch_up(delay_env, kafka_bootstrap):
    env = delay_env(stages={"max_pending_lag": 5})
    pending = env.topics.pending
    backlog = 12  # > max_pending_lag, and the download group has committed nothing
    for i in range(backlog):
        env.producer.produce(pending, key=f"fresh-{i}".encode(), value=FILLER, partition=i % 3)
    now = time.time()
    held = [env.put(f"held-{i}", i % 2, now - 5, i % 3) for i in range(6)]
    env.flush()
    env.start()

    # A lag check made after the partitions were assigned, which said "hold".
    env.wait_assigned()

    def held_after_assignment() -> bool:
        messages = [str(line.get("msg", "")) for line in env.log_lines()]
        assigned = next(i for i, text in enumerate(messages) if text.startswith("assigned "))
        return any("holding retries" in text for text in messages[assigned + 1:])

    wait_for(held_after_assignment, TIMEOUT, "a 'holding retries' log line after the assignment", interval=0.1)
    assert len(env.read_all(pending)) == backlog, "due retries were forwarded while the pending lag was too high"
    assert not by_name(env.read_all(pending))

    # The downloaders catch up: the download group commits the end of pending.
    catch_up = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{env.config.kafka.group_prefix}.download",
                         "enable.auto.commit": False})
    try:
        ends = []
        for p in range(env.topics.partitions):
            _low, high = catch_up.get_watermark_offsets(TopicPartition(pending, p), timeout=10)
            ends.append(TopicPartition(pending, p, high))
        catch_up.commit(offsets=ends, asynchronous=False)
    finally:
        catch_up.close()

    got = env.wait_names(item["name"] for item in held)
    assert sorted(got) == sorted(item["name"] for item in held)
    for item in held:
        (msg,) = got[item["name"]]
        assert_forwarded_as_sent(msg, item)
    assert len(env.read_all(pending)) == backlog + len(held)


def test_partitions_taken_away_while_waiting_come_back_working(delay_env, kafka_bootstrap):
    """A worker whose waiting partitions are revoked and later assigned back forwards them as due.

    Another member joins the delay group while every partition waits on its head, takes some of
    them, and leaves without forwarding anything (a bare consumer that never commits).
    """
    env = delay_env(consumer={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    group = f"{env.config.kafka.group_prefix}.delay"
    due = time.time() + 15
    sent = []
    for t in (0, 1):
        for p in range(3):
            sent.append(env.put(f"head-{t}-{p}", t, due, p))
            sent += [env.put(f"behind-{t}-{p}-{i}", t, due + 0.001 * (i + 1), p) for i in range(2)]
    env.flush()
    env.start()
    env.wait_assigned()

    other = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "partition.assignment.strategy": "cooperative-sticky",
                      "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    try:
        other.subscribe(env.topics.retry_topics)

        def took_some() -> bool:
            other.poll(0.1)
            return bool(other.assignment())

        wait_for(took_some, TIMEOUT, "the other member to be given partitions", interval=0)
        env.wait_log("revoked ")
    finally:
        other.close()
    env.wait_assigned(2)  # the revoked partitions are assigned back

    got = env.wait_names(item["name"] for item in sent)
    assert sorted(got) == sorted(item["name"] for item in sent)
    for item in sent:
        (msg,) = got[item["name"]]
        assert_forwarded_as_sent(msg, item)
