"""Raw dead letters: a consumed message kept as it came, with why and where from in headers.

A dead letter must always be producible, whatever the message holds: one
that would exceed the largest message the dead-letter topic accepts has its
value cut to fit, and its headers say so (``original-size``,
``truncated``) next to the source topic, partition and offset, so the
original can still be found and nothing is retried for ever.

Headers named like ours (:data:`OWN_HEADERS`) that came with the original
message are never kept: a sender could otherwise repeat them until the
headers alone are over the limit. Only the original ``trace_id`` survives,
once and cut short, so the letter can still be found by it.
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
MAX_TRACE_ID = 256
# Headers we write ourselves; everything else came with the original message.
OWN_HEADERS = frozenset({
    "error-category", "error-message", "source-topic", "source-partition", "source-offset",
    "original-size", "truncated", "original-headers-dropped", "trace_id",
})


def reason_of(exc: BaseException) -> str:
    """What a dead letter says about the exception that made it: class and message."""
    return f"{type(exc).__name__}: {exc}"


def raw_dead_letter(
    msg: Message, topic: str, stage: str, reason: str, trace_id: str | None = None, *,
    original_headers: bool = True,
) -> Output:
    """``msg`` dead-lettered on ``topic`` for ``reason``, byte for byte.

    The original headers are kept, but for those named like ours; the trace id is the one
    given, else the original's first, cut to :data:`MAX_TRACE_ID`. Without ``original_headers``
    the message's headers are not even read (for a message whose headers cannot be).
    """
    metrics.DEAD_LETTERS.labels(stage, VALIDATION).inc()
    extra = {
        "error-category": VALIDATION,
        "error-message": reason[:MAX_REASON],
        "source-topic": str(msg.topic()),
        "source-partition": str(msg.partition()),
        "source-offset": str(msg.offset()),
    }
    # a consumed message's headers are a list
    raw = cast(list[tuple[str, Any]], msg.headers() or []) if original_headers else []
    kept = [(k, v) for k, v in raw if k not in OWN_HEADERS]
    trace = _bytes(trace_id) if trace_id is not None else next((_bytes(v) for k, v in raw if k == "trace_id"), None)
    if trace:
        kept.append(("trace_id", trace[:MAX_TRACE_ID]))
    if not original_headers:
        extra["original-headers-dropped"] = "unreadable"
    return Output(topic, msg.key(), msg.value() or b"", [*kept, *headers(None, None, **extra)])


def size_of(key: str | bytes | None, value: bytes, hdrs: list) -> int:
    """Bytes the broker counts for a record, without framing."""
    return _len(key) + len(value) + sum(len(k.encode()) + _len(v) for k, v in hdrs)


def output_size(out: Output) -> int:
    """:func:`size_of` plus :data:`FRAMING`; every output produced is sized, so the usual one is told fast."""
    size = _plain_size(out.key, out.value, out.headers)
    if size < 0:
        size = size_of(out.key, out.value, out.headers)
    return size + FRAMING


def _plain_size(key: object, value: bytes, hdrs: list) -> int:
    """:func:`size_of` where key and headers are bytes or ASCII text (their length is their size), else -1.

    No encoding and no generator: what a stage produces is sized for the price of a few ``len``.
    Anything else (non-ASCII text, None or other types) is left to :func:`size_of`, which alone
    decides what such a value counts for.
    """
    size = len(value)
    if key is not None:
        if type(key) is bytes or (type(key) is str and key.isascii()):
            size += len(key)
        else:
            return -1
    for k, v in hdrs:
        if type(v) is not bytes or type(k) is not str or not k.isascii():
            return -1
        size += len(k) + len(v)
    return size


def fit(out: Output, limit: int) -> Output:
    """``out`` with key, value and headers cut to fit in ``limit`` bytes; unchanged if it fits."""
    if output_size(out) <= limit:
        return out
    key, value = out.key, out.value
    original = len(value)
    if _len(key) > MAX_KEY:
        key = _bytes(key)[:MAX_KEY]
    notes = [("original-size", str(original).encode()), ("truncated", b"true")]
    hdrs = [(k, v) for k, v in out.headers if k not in ("original-size", "truncated")]
    if size_of(key, b"", [*hdrs, *notes]) + FRAMING > limit // 2:  # hostile headers: keep only ours
        own = ours([(k, v) for k, v in hdrs if k not in NOTES])
        hdrs = [*own, ("original-headers-dropped", str(len(out.headers) - len(own)).encode())]
    hdrs = [*hdrs, *notes]
    room = max(0, limit - FRAMING - size_of(key, b"", hdrs))
    return Output(out.topic, key, value[:room], hdrs)


def minimal(out: Output) -> Output:
    """The least a dead letter can say: no key, no value, only our own headers, each once and short."""
    own = ours([(k, v) for k, v in out.headers if k not in NOTES])
    size = next((_bytes(v)[:32] for k, v in out.headers if k == "original-size"), str(len(out.value)).encode())
    notes = [("original-size", size), ("truncated", b"true"),
             ("original-headers-dropped", str(len(out.headers) - len(own)).encode())]
    return Output(out.topic, None, b"", [*own, *notes])


# Headers fit() and minimal() write themselves.
NOTES = frozenset({"original-size", "truncated", "original-headers-dropped"})


def ours(hdrs: list) -> list[tuple[str, bytes]]:
    """The last of each of our headers, cut short: however many copies came, a few kilobytes at most."""
    last: dict[str, bytes] = {}
    for k, v in hdrs:
        if k in OWN_HEADERS:
            last.pop(k, None)
            last[k] = _bytes(v)[:MAX_TRACE_ID if k == "trace_id" else MAX_REASON]
    return list(last.items())


def _len(value: object) -> int:
    return len(_bytes(value))


def _bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")  # not sendable as is; producing it will say so
