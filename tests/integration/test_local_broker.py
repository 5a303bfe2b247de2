"""The test broker answers on both listeners: PLAINTEXT, and SASL_PLAINTEXT with OAUTHBEARER
accepting unsecured (unsigned JWS) tokens -- and that listener really checks the token."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from kafkahelpers import create_topics, sasl_oauth_config, unsecured_jws, unsecured_oauth_cb

TIMEOUT = 30.0


def _roundtrip(conf: dict, topic: str, group: str) -> None:
    """Creates `topic`, produces one message and consumes it back, all with client settings `conf`."""
    admin = AdminClient(dict(conf))
    admin.poll(0)  # serves oauth_cb on clients older than confluent-kafka 2.13
    create_topics(admin, [topic], partitions=1, timeout=TIMEOUT)

    deliveries = []
    producer = Producer(dict(conf))
    producer.poll(0)
    producer.produce(
        topic,
        key=b"k",
        value=topic.encode(),
        headers=[("h", b"1")],
        on_delivery=lambda err, msg: deliveries.append((err, msg.offset())),
    )
    assert producer.flush(TIMEOUT) == 0, "message not delivered in time"
    assert [err for err, _ in deliveries] == [None]

    consumer = Consumer(
        dict(conf, **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    )
    consumer.poll(0)
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error():
                raise KafkaException(msg.error())
        assert msg is not None, f"no message consumed from {topic} within {TIMEOUT}s"
        assert (msg.key(), msg.value(), msg.headers()) == (b"k", topic.encode(), [("h", b"1")])
        assert msg.offset() == deliveries[0][1]
    finally:
        consumer.close()


def test_plaintext_listener_produces_and_consumes(kafka_bootstrap, unique_name):
    _roundtrip({"bootstrap.servers": kafka_bootstrap}, unique_name("plain"), unique_name("plain-g"))


def test_oauthbearer_listener_accepts_unsecured_token(kafka_sasl_bootstrap, unique_name):
    calls: list[str] = []
    conf = sasl_oauth_config(kafka_sasl_bootstrap, unsecured_oauth_cb(sub="kafkapipe", calls=calls))
    _roundtrip(conf, unique_name("sasl"), unique_name("sasl-g"))
    assert calls, "oauth_cb was never called: the client did not authenticate with OAUTHBEARER"


def test_oauthbearer_listener_rejects_token_without_subject(kafka_sasl_bootstrap):
    def no_sub_cb(_config):
        expiry = time.time() + 600
        return unsecured_jws({"iat": int(time.time()), "exp": int(expiry)}), expiry

    errors: list[KafkaError] = []
    conf = dict(sasl_oauth_config(kafka_sasl_bootstrap, no_sub_cb), error_cb=errors.append, log_level=0)
    admin = AdminClient(conf)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
        try:
            admin.list_topics(timeout=1.0)
        except KafkaException:
            pass
        else:
            raise AssertionError("the SASL listener served metadata to a token without a subject")
        admin.poll(0.1)  # serves error_cb
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), (
        f"expected an authentication error, got {errors}"
    )
