"""Helpers for tests that talk to a real Kafka broker (see tests/conftest.py for where it comes from)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns something truthy (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def create_topics(
    admin: AdminClient,
    names: str | Iterable[str],
    partitions: int = 3,
    timeout: float = 30.0,
    config: dict[str, str] | None = None,
) -> list[str]:
    """Creates the topics (replication factor 1) and waits until every partition has a leader.

    A topic that already exists is accepted as it is. Returns the names.
    """
    names = [names] if isinstance(names, str) else list(names)
    deadline = time.monotonic() + timeout
    new = [
        NewTopic(n, num_partitions=partitions, replication_factor=1, config=dict(config or {})) for n in names
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    created = set()
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.1, deadline - time.monotonic()))
            created.add(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise

    def ready() -> bool:
        md = admin.list_topics(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        for name in names:
            topic = md.topics.get(name)
            if topic is None or topic.error is not None or not topic.partitions:
                return False
            if name in created and len(topic.partitions) != partitions:
                return False
            if any(p.leader < 0 for p in topic.partitions.values()):
                return False
        return True

    wait_for(ready, max(0.1, deadline - time.monotonic()), f"topics {names} to have leaders")
    return names


def _b64url(obj: dict) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unsecured_jws(claims: dict) -> str:
    """An unsigned JWS (header {"alg":"none"}, empty signature) as Kafka's unsecured validator wants."""
    return f"{_b64url({'alg': 'none'})}.{_b64url(claims)}."


def unsecured_oauth_cb(sub: str = "kafkapipe", lifetime: float = 3600.0, calls: list | None = None):
    """An `oauth_cb` for confluent-kafka returning (unsigned token, absolute expiry in epoch seconds).

    If `calls` is given, each call appends the config string it was called with.
    """

    def oauth_cb(config_str: str):
        if calls is not None:
            calls.append(config_str)
        now = time.time()
        expiry = now + lifetime
        return unsecured_jws({"sub": sub, "iat": int(now), "exp": int(expiry)}), expiry

    return oauth_cb


def sasl_oauth_config(bootstrap: str, oauth_cb=None) -> dict:
    """Client settings for the test broker's SASL_PLAINTEXT/OAUTHBEARER listener."""
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "oauth_cb": oauth_cb or unsecured_oauth_cb(),
    }
