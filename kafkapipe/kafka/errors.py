"""librdkafka's errors in the pipeline's categories, and where a worker's clients report them.

* ``auth`` — the broker refused our credentials or permissions (SASL/OAUTHBEARER failure, an
  expired or invalid token, an ACL): the stage holds, with a metric and a log line, and
  librdkafka keeps trying; nothing is restarted and nothing is dead-lettered.
* ``transient`` — anything librdkafka retries by itself (brokers down, timeouts, transport):
  waited out.
* ``permanent`` — a fatal error (e.g. the idempotent producer fenced): the worker ends after
  committing what is done, and the supervisor starts a fresh one.

librdkafka reports errors that are not about one message (authentication above all) only to
an ``error_cb``: without one a consumer whose credentials are refused just consumes nothing.
"""

from __future__ import annotations

import queue

from confluent_kafka import KafkaError

from kafkapipe.errors import ErrorCategory

AUTH_CODES = frozenset({
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.ILLEGAL_SASL_STATE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
})
IGNORED_CODES = frozenset({KafkaError._PARTITION_EOF})


def classify(err: KafkaError) -> ErrorCategory | None:
    """The category of a librdkafka error; None for what is not an error to act on."""
    code = err.code()
    if code in IGNORED_CODES:
        return None
    if err.fatal():
        return ErrorCategory.PERMANENT
    if code in AUTH_CODES:
        return ErrorCategory.AUTH
    return ErrorCategory.TRANSIENT


class ClientErrors:
    """An ``error_cb`` for a worker's clients: errors queue here and the consume loop takes them.

    librdkafka calls it from ``poll()``/``consume()`` on the loop's own thread; the queue keeps
    it correct should a client ever call it from another.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[KafkaError] = queue.SimpleQueue()

    def __call__(self, err: KafkaError) -> None:
        self._queue.put(err)

    def take(self) -> list[KafkaError]:
        taken = []
        while True:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                return taken
