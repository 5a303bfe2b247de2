"""One readable line for a Kafka client error, for the command line (no ``KafkaError{…}`` dump)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

UNREACHABLE = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
}


def describe(exc: KafkaException, bootstrap: str) -> str:
    error = exc.args[0] if exc.args else None
    if not isinstance(error, KafkaError):
        return (str(exc).splitlines() or ["Kafka error"])[0]
    text = (error.str().splitlines() or [error.name()])[0]
    if error.code() in UNREACHABLE:
        return f"cannot reach the Kafka broker at {bootstrap}: {text}"
    return text
