"""Kafka client overrides that would break at-least-once delivery are refused at load."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkapipe import config as cfg
from kafkapipe.errors import ConfigError
from kafkapipe.guarantees import CONSUMER_RULES, PRODUCER_RULES

REFUSED = [
    ("consumer", "enable.auto.offset.store", True),
    ("consumer", "enable.auto.offset.store", "true"),
    ("consumer", "enable.auto.offset.store", 1),
    ("consumer", "enable.auto.commit", False),
    ("consumer", "auto.commit.enable", "false"),
    ("consumer", "auto.commit.interval.ms", 0),
    ("consumer", "auto.commit.interval.ms", "0"),
    ("consumer", "auto.offset.reset", "latest"),
    ("consumer", "auto.offset.reset", "error"),
    ("consumer", "isolation.level", "read_uncommitted"),
    ("consumer", "group.id", "shared"),
    ("consumer", "group.instance.id", "worker-1"),
    ("producer", "enable.idempotence", False),
    ("producer", "enable.idempotence", "0"),
    ("producer", "acks", 1),
    ("producer", "acks", "0"),
    ("producer", "request.required.acks", 1),
    ("producer", "max.in.flight.requests.per.connection", 6),
    ("producer", "transactional.id", "tx"),
]

ACCEPTED = [
    ("consumer", "enable.auto.offset.store", False),
    ("consumer", "enable.auto.commit", True),
    ("consumer", "auto.commit.interval.ms", 5000),
    ("consumer", "auto.offset.reset", "earliest"),
    ("consumer", "isolation.level", "read_committed"),
    ("consumer", "enable.partition.eof", True),  # the consume loop skips partition-EOF events
    ("consumer", "session.timeout.ms", 6000),
    ("producer", "enable.idempotence", True),
    ("producer", "acks", "all"),
    ("producer", "acks", -1),
    ("producer", "request.required.acks", "-1"),
    ("producer", "max.in.flight.requests.per.connection", 5),
    ("producer", "linger.ms", 20),
]


def _load(client: str, key: str, value) -> cfg.Config:
    return cfg.from_mapping({"kafka": {client: {key: value}}}, "pipeline.toml")


@pytest.mark.parametrize(("client", "key", "value"), REFUSED)
def test_an_override_breaking_at_least_once_is_refused_with_its_reason(client, key, value):
    with pytest.raises(ConfigError) as info:
        _load(client, key, value)
    message = str(info.value)
    assert message.startswith("pipeline.toml: invalid configuration")
    assert f"[kafka.{client}]" in message and repr(key) in message and "is refused: " in message


@pytest.mark.parametrize(("client", "key", "value"), ACCEPTED)
def test_overrides_that_keep_the_guarantees_are_accepted(client, key, value):
    assert getattr(_load(client, key, value).kafka, client) == {key: value}


def test_the_environment_cannot_bypass_the_check():
    with pytest.raises(ConfigError, match="'acks' = 1 is refused"):
        cfg.load(None, environ={"KAFKAPIPE_KAFKA__PRODUCER__ACKS": "1"})


def test_every_problem_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        cfg.from_mapping({"kafka": {"producer": {"acks": 0, "enable.idempotence": False}}})
    assert "'acks' = 0" in str(info.value) and "'enable.idempotence' = False" in str(info.value)


GUARDED = sorted({name for rule in CONSUMER_RULES + PRODUCER_RULES for name in rule.names})
VALUES = st.one_of(
    st.booleans(), st.integers(-10, 10), st.sampled_from(["all", "-1", "1", "true", "false", "earliest", "latest",
                                                          "read_committed", "read_uncommitted", "", " all "]),
    st.text(max_size=12),
)
KEYS = st.one_of(st.sampled_from(GUARDED), st.text(max_size=20))


@settings(max_examples=300, deadline=None)
@given(client=st.sampled_from(["consumer", "producer"]), overrides=st.dictionaries(KEYS, VALUES, max_size=6))
def test_any_override_table_is_accepted_only_if_every_rule_allows_it(client, overrides):
    rules = CONSUMER_RULES if client == "consumer" else PRODUCER_RULES
    expect_ok = all(
        rule.allowed(value) for key, value in overrides.items() for rule in rules
        if key.strip().lower() in rule.names
    )
    try:
        loaded = cfg.from_mapping({"kafka": {client: overrides}})
    except ConfigError as exc:
        assert not expect_ok, exc
        return
    assert expect_ok
    assert getattr(loaded.kafka, client) == overrides


@given(value=VALUES)
def test_acks_is_accepted_only_as_all_or_minus_one(value):
    try:
        _load("producer", "acks", value)
    except ConfigError:
        assert str(value).strip().lower() not in {"all", "-1"}
    else:
        assert str(value).strip().lower() in {"all", "-1"}


@pytest.mark.parametrize("value", ["¹", "٣", "-²"])
def test_unicode_digits_are_refused_not_crashed_on(value):
    with pytest.raises(ConfigError, match="max.in.flight"):
        cfg.from_mapping({"kafka": {"producer": {"max.in.flight.requests.per.connection": value}}}, "t.toml")
