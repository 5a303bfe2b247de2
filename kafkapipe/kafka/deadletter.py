"""Raw dead letters: a consumed message kept as it came, with why and where from in headers.

A dead letter must always be producible, whatever the message holds: one
that would exceed the largest message the dead-letter topic accepts has its
value cut to fit, and its headers say so (``original-size``,
``truncated``) next to the source topic, partition and offset, so the
original can still be found and nothing is retried for ever.
"""

from __future__ import annotations

from typing import Any, cast

from confluent_kafka import Message

from kafkapipe import metrics
from kafkapipe.errors import ErrorCategory
from kafkapipe.kafka.clients import headers
from kafkapipe.kafka.records import Output

VALIDATION = str(ErrorCategory.VALIDATION)
MAX_REASON = 1024
# Record and batch framing the broker counts on top of key, value and headers.
FRAMING = 4096
MAX_KEY = 256
# Headers we write ourselves; everything else came with the original message.
OWN_HEADERS = frozenset({
    "error-category", "error-message", "source-topic", "source-partition", "source-offset",
    "original-size", "truncated", "original-headers-dropped", "trace_id",
})


def reason_of(exc: BaseException) -> str:
    """What a dead letter says about the exception that made it: class and message."""
    return f"{type(exc).__name__}: {exc}"


def raw_dead_letter(msg: Message, topic: str, stage: str, reason: str, trace_id: str | None = None) -> Output:
    """``msg`` dead-lettered on ``topic`` for ``reason``, byte for byte."""
    metrics.DEAD_LETTERS.labels(stage, VALIDATION).inc()
    extra = {
        "error-category": VALIDATION,
        "error-message": reason[:MAX_REASON],
        "source-topic": str(msg.topic()),
        "source-partition": str(msg.partition()),
        "source-offset": str(msg.offset()),
    }
    raw = cast(list[tuple[str, Any]], msg.headers() or [])  # a consumed message's headers are a list
    kept = [(k, v) for k, v in raw if k not in extra]
    if trace_id is not None and all(k != "trace_id" for k, _ in kept):
        kept.extend(headers(None, trace_id))
    return Output(topic, msg.key(), msg.value() or b"", [*kept, *headers(None, None, **extra)])


def size_of(key: str | bytes | None, value: bytes, hdrs: list) -> int:
    """Bytes the broker counts for a record, without framing."""
    return _len(key) + len(value) + sum(len(k.encode()) + _len(v) for k, v in hdrs)


def output_size(out: Output) -> int:
    return size_of(out.key, out.value, out.headers) + FRAMING


def fit(out: Output, limit: int) -> Output:
    """``out`` with key, value and headers cut to fit in ``limit`` bytes; unchanged if it fits."""
    if output_size(out) <= limit:
        return out
    key, value, hdrs = out.key, out.value, list(out.headers)
    original = len(value)
    if _len(key) > MAX_KEY:
        key = _bytes(key)[:MAX_KEY]
    notes = [("original-size", str(original).encode()), ("truncated", b"true")]
    own = [(k, v) for k, v in hdrs if k in OWN_HEADERS]
    if size_of(key, b"", [*hdrs, *notes]) + FRAMING > limit // 2:  # hostile headers: keep only ours
        dropped = len(hdrs) - len(own)
        hdrs = [*own, ("original-headers-dropped", str(dropped).encode())]
    hdrs = [*hdrs, *notes]
    room = max(0, limit - FRAMING - size_of(key, b"", hdrs))
    return Output(out.topic, key, value[:room], hdrs)


def _len(value: object) -> int:
    return len(_bytes(value))


def _bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")  # not sendable as is; producing it will say so
