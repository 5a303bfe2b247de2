"""Refused broker credentials hold the stage visibly, and it goes on once they are accepted again.

The consume loop runs with real clients on the local broker's SASL/OAUTHBEARER listener. Its
``oauth_cb`` first hands out a token the broker's validator refuses (already expired), so
every connection attempt fails authentication: the loop must classify that as ``auth``, hold
the stage with a metric and a log line and neither exit nor spin. Then the callback hands out
good tokens; at librdkafka's next refresh the clients authenticate and a message produced
meanwhile is handled.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Producer
from kafkahelpers import create_topics, unsecured_jws, wait_for

from kafkapipe import metrics
from kafkapipe.config import from_mapping
from kafkapipe.kafka.clients import make_consumer, make_producer
from kafkapipe.kafka.errors import ClientErrors
from kafkapipe.kafka.loop import ConsumeLoop, Done
from kafkapipe.worker import WorkerControl

LIFETIME = 4.0  # librdkafka asks for a new token at 80 % of this


class SwitchableToken:
    """An oauth_cb handing out refused (expired) tokens until ``accept`` is set."""

    def __init__(self) -> None:
        self.accept = threading.Event()

    def __call__(self, _config: str):
        now = time.time()
        exp = now + LIFETIME if self.accept.is_set() else now - 3600
        return unsecured_jws({"sub": "kafkapipe", "iat": int(now) - 7200, "exp": int(exp)}), now + LIFETIME


class RecordingStage:
    name = "authhold"
    max_batch = 10
    batch_timeout = 0.2

    def __init__(self, topic: str) -> None:
        self.topics = [topic]
        self.dead_letter_topic = f"{topic}.dlq"
        self.values: list[bytes] = []

    def handle(self, messages, complete) -> None:
        for msg in messages:
            self.values.append(msg.value())
            complete(msg, Done())

    def hold(self) -> float:
        return 0.0

    def close(self) -> None:
        return None


def test_refused_oauth_token_holds_the_stage_until_a_good_one_is_accepted(
        kafka_bootstrap, kafka_sasl_bootstrap, kafka_admin, unique_name, caplog):
    topic = unique_name("authhold")
    create_topics(kafka_admin, topic, partitions=1)
    config = from_mapping({"kafka": {
        "bootstrap_servers": kafka_sasl_bootstrap, "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "OAUTHBEARER", "oauth": {"credential": {"kind": "unsecured_jwt"}},
    }})
    token, errors, stage = SwitchableToken(), ClientErrors(), RecordingStage(topic)
    consumer = make_consumer(config, unique_name("authhold-group"), oauth_cb=token, error_cb=errors)
    producer = make_producer(config, oauth_cb=token, error_cb=errors)
    control = WorkerControl()
    loop = ConsumeLoop(stage, consumer, producer, control, max_in_flight=10, drain_timeout=5.0,
                       client_errors=errors)
    holds = metrics.AUTH_PAUSES.labels(stage.name)
    refused = metrics.KAFKA_ERRORS.labels(stage.name, "auth")
    before = holds._value.get()
    caplog.set_level(logging.WARNING, logger="kafkapipe.kafka.loop")
    runner = threading.Thread(target=lambda: setattr(loop, "exit_code", loop.run()), name="authhold-loop")
    runner.start()
    try:
        wait_for(lambda: holds._value.get() - before >= 2, 60, "two holds on refused credentials")
        assert runner.is_alive() and loop._fatal is None
        assert refused._value.get() >= 2
        assert any("refused our credentials" in r.getMessage() for r in caplog.records)
        assert stage.values == []

        token.accept.set()
        plain = Producer({"bootstrap.servers": kafka_bootstrap})
        plain.produce(topic, b"after the hold")
        assert plain.flush(30) == 0
        wait_for(lambda: stage.values == [b"after the hold"], 90, "the message once the token is accepted")
    finally:
        control.stop.set()
        runner.join(30)
    assert not runner.is_alive() and loop.exit_code == 0
