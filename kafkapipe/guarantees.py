"""The librdkafka settings at-least-once delivery depends on, which ``[kafka.consumer]`` /
``[kafka.producer]`` overrides may not change.

The consume loop stores an offset only after the message's work and outputs are acknowledged,
and librdkafka's auto-commit commits what was stored; producers are idempotent and wait for every
in-sync replica. An override that undoes one of these is refused when the configuration is
loaded (exit 2), with the reason, instead of silently losing or duplicating messages later.
Each rule lists the property's librdkafka aliases: an alias sets the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

_TRUE = frozenset({"true", "t", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "f", "0", "no", "n", "off"})


def _text(value: Any) -> str:
    return str(value).strip().lower()


def is_true(value: Any) -> bool:
    return _text(value) in _TRUE


def is_false(value: Any) -> bool:
    return _text(value) in _FALSE


@attrs.frozen
class Rule:
    """``names``: the property and its aliases; ``allowed(value)``; ``reason``: why anything else is refused."""

    names: tuple[str, ...]
    allowed: Callable[[Any], bool]
    reason: str


def _never(value: Any) -> bool:
    return False


def _at_most(limit: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        text = _text(value)
        # isascii: "¹" and other Unicode digits pass isdigit() but are no number to int().
        digits = text.lstrip("-")
        return digits.isascii() and digits.isdigit() and int(text) <= limit

    return check


CONSUMER_RULES = (
    Rule(("enable.auto.offset.store",), is_false,
         "offsets are stored by the consume loop only after a message's work and outputs are acknowledged; "
         "automatic storing would commit messages before they are processed and lose them on a crash"),
    Rule(("enable.auto.commit", "auto.commit.enable"), is_true,
         "the consume loop relies on librdkafka's auto-commit to commit the offsets it stores and has no "
         "other periodic commit; without it every kill or rebalance redoes all work since the last revoke"),
    Rule(("auto.commit.interval.ms",), lambda v: _text(v).isdigit() and int(_text(v)) > 0,
         "0 turns librdkafka's auto-commit off, and the consume loop has no other periodic commit"),
    Rule(("auto.offset.reset", "autooffset.reset"), lambda v: _text(v) in {"earliest", "smallest", "beginning"},
         "a group without committed offsets (new, or whose offsets expired) would skip every message "
         "already on its topics"),
    Rule(("isolation.level",), lambda v: _text(v) == "read_committed",
         "read_uncommitted would process events of aborted producer transactions"),
    Rule(("group.id",), _never,
         "each stage has its own consumer group '<group_prefix>.<stage>'; set kafka.group_prefix instead"),
    Rule(("group.instance.id",), _never,
         "a static member id shared by every worker process makes them fence each other out of the group"),
)

PRODUCER_RULES = (
    Rule(("enable.idempotence",), is_true,
         "without idempotence a retried send can write an output twice or out of order"),
    Rule(("acks", "request.required.acks"), lambda v: _text(v) in {"all", "-1"},
         "an output acknowledged by fewer than all in-sync replicas can be lost with a broker after its "
         "input's offset was committed"),
    Rule(("max.in.flight.requests.per.connection", "max.in.flight"), _at_most(5),
         "an idempotent producer keeps order only with at most 5 requests in flight"),
    Rule(("transactional.id",), _never,
         "kafkapipe's producers are not transactional; with a transactional.id every send outside a "
         "transaction fails"),
)


def violations(overrides: Mapping[str, Any], rules: tuple[Rule, ...]) -> list[str]:
    """One ``'name = value': reason`` per override a rule refuses; empty when all are acceptable."""
    found = []
    for key, value in overrides.items():
        for rule in rules:
            if key.strip().lower() in rule.names and not rule.allowed(value):
                found.append(f"{key!r} = {value!r} is refused: {rule.reason}")
    return found
