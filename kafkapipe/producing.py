"""Sending events from a JSON-lines file (``kafkapipe produce``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

from confluent_kafka import KafkaError

from kafkapipe.config import Config
from kafkapipe.kafka.clients import make_producer
from kafkapipe.messages import InvalidMessage, parse_event


class EventFileError(Exception):
    """The file cannot be sent as it is; the message names the line and the rule."""


def read_lines(path: str) -> Iterator[tuple[int, bytes]]:
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed below
    try:
        for number, line in enumerate(stream, 1):
            line = line.strip()
            if line:
                yield number, line
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def check_lines(path: str, lines: list[tuple[int, bytes]]) -> list[tuple[bytes | None, bytes]]:
    """Validate every line first: nothing is sent from a file with a bad line."""
    problems: list[str] = []
    ready: list[tuple[bytes | None, bytes]] = []
    for number, line in lines:
        try:
            event = parse_event(line)
        except InvalidMessage as exc:
            problems.append(f"{path}:{number}: {exc}")
            continue
        ready.append((event.trace_id.encode(), line))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise EventFileError(f"{len(problems)} invalid event(s), nothing sent:\n  {shown}{more}")
    return ready


def send_events(config: Config, path: str, allow_invalid: bool = False, timeout: float = 60.0) -> int:
    try:
        lines = list(read_lines(path))
    except OSError as exc:
        raise EventFileError(f"{path}: {exc.strerror}") from None
    ready = [(None, line) for _, line in lines] if allow_invalid else check_lines(path, lines)
    producer = make_producer(config)
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err)

    for key, value in ready:
        while True:
            try:
                producer.produce(config.topics.events, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or failures:
        reason = failures[0] if failures else f"{remaining} not acknowledged within {timeout:.0f}s"
        raise EventFileError(f"sending to {config.topics.events} failed: {reason}")
    return len(ready)
