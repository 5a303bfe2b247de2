"""SASL/OAUTHBEARER against a real broker, through the project's oauth_cb.

The broker's SASL_PLAINTEXT listener uses Kafka's unsecured validator, so the test credential
(kind ``unsecured_jwt``) mints unsigned tokens with a short lifetime. For OAUTHBEARER the
broker ends an authenticated session when its token expires (the token's ``exp`` becomes the
session lifetime), so messages still flowing after every client's first token has expired
means the clients re-authenticated with tokens the callback refreshed.

librdkafka checks for due token refreshes once a second and asks at 80 % of the lifetime, so
lifetimes must leave it more than a second to act: six seconds here.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from kafkahelpers import create_topics, wait_for

from kafkapipe.auth.kafka_oauth import make_oauth_cb
from kafkapipe.config import CredentialConfig, OAuthConfig

LIFETIME = 6.0


class RecordingCallback:
    """The project's oauth_cb, with each call recorded (when, which thread, what came back)."""

    def __init__(self, principal: str) -> None:
        oauth = OAuthConfig(
            credential=CredentialConfig(
                kind="unsecured_jwt", principal=principal, token_lifetime=LIFETIME, refresh_margin=1.0
            )
        )
        self._cb = make_oauth_cb(oauth)
        self._lock = threading.Lock()
        self.calls: list[dict] = []

    def __call__(self, config_str: str):
        called = time.time()
        token, expiry, principal = self._cb(config_str)
        with self._lock:
            self.calls.append(
                {"at": called, "token": token, "expiry": expiry, "principal": principal,
                 "thread": threading.current_thread().name}
            )  # fmt: skip
        return token, expiry, principal

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.calls)


@pytest.fixture
def topic(kafka_admin, unique_name) -> str:
    name = unique_name("oauth")
    create_topics(kafka_admin, name, partitions=1)
    return name


def sasl_client(bootstrap: str, cb: RecordingCallback, errors: list, stats: dict, role: str) -> dict:
    def on_stats(raw: str) -> None:
        data = json.loads(raw)
        brokers = [b for b in data["brokers"].values() if b["nodeid"] >= 0]
        stats[role] = {k: sum(b[k] for b in brokers) for k in ("connects", "disconnects")}

    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "oauth_cb": cb,
        "error_cb": lambda err: errors.append((role, err)),
        "statistics.interval.ms": 500,
        "stats_cb": on_stats,
    }


def test_producer_and_consumer_authenticate_across_token_refreshes(kafka_sasl_bootstrap, topic):
    errors: list = []
    stats: dict = {}
    producer_cb, consumer_cb = RecordingCallback("kafkapipe-producer"), RecordingCallback("kafkapipe-consumer")
    producer = Producer(
        {
            **sasl_client(kafka_sasl_bootstrap, producer_cb, errors, stats, "producer"),
            # Closes idle connections, so the last send authenticates a brand-new connection.
            "connections.max.idle.ms": 1000,
        }
    )
    producer.poll(0)  # older clients run oauth_cb only from poll()
    consumer = Consumer(
        {
            **sasl_client(kafka_sasl_bootstrap, consumer_cb, errors, stats, "consumer"),
            "group.id": f"oauth-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    sent: list[bytes] = []
    delivered: list[bytes] = []
    received: list[bytes] = []

    def on_delivery(err, msg) -> None:
        assert err is None, err
        delivered.append(msg.value())

    def send() -> None:
        value = f"m{len(sent)}".encode()
        producer.produce(topic, value, on_delivery=on_delivery)
        sent.append(value)

    def pump(seconds: float = 0.2) -> None:
        producer.poll(0)
        msg = consumer.poll(seconds)
        if msg is not None:
            assert msg.error() is None, msg.error()
            received.append(msg.value())

    try:
        send()
        wait_for(lambda: pump() or received, 60, "the first message over SASL/OAUTHBEARER")

        def refreshed_and_expired() -> bool:
            pump()
            if len(sent) < 200 and len(sent) <= len(received):
                send()  # keep traffic going the whole time
            calls = [producer_cb.snapshot(), consumer_cb.snapshot()]
            return all(len(c) >= 2 and time.time() > c[0]["expiry"] + 0.5 for c in calls)

        wait_for(refreshed_and_expired, 60, "a token refresh in both clients and their first tokens' expiry")
        wait_for(lambda: pump() or set(received) >= set(sent), 60, "the messages sent so far")
        # Let the producer's connection go idle and close; the next send connects again.
        wait_for(lambda: pump() or stats.get("producer", {}).get("disconnects", 0) >= 1, 60, "an idle close")
        send()
        assert producer.flush(30) == 0
        wait_for(lambda: pump() or set(received) >= set(sent), 60, "every message to arrive")
    finally:
        consumer.close()

    assert sorted(delivered) == sorted(sent) and set(received) == set(sent)
    auth_errors = [(role, e) for role, e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth_errors == []

    def producer_reconnected() -> bool:
        producer.poll(0.1)  # stats_cb runs inside poll()
        return stats["producer"]["connects"] >= 2

    wait_for(producer_reconnected, 10, "the producer's second connection in its statistics")
    for cb, principal in ((producer_cb, "kafkapipe-producer"), (consumer_cb, "kafkapipe-consumer")):
        calls = cb.snapshot()
        assert len(calls) >= 2
        assert len({c["token"] for c in calls}) >= 2  # librdkafka's refresh got a new token
        for call in calls:
            assert call["principal"] == principal
            # An absolute expiry in epoch seconds, one lifetime after the token was minted.
            assert call["at"] < call["expiry"] <= call["at"] + LIFETIME + 0.5
    print(
        f"\noauth_cb calls: producer {len(producer_cb.calls)}, consumer {len(consumer_cb.calls)}; "
        f"threads {sorted({c['thread'] for c in producer_cb.calls + consumer_cb.calls})}; "
        f"connects {stats}; messages {len(sent)}"
    )
