"""Topic specs and topic-check reports, without a broker."""

from __future__ import annotations

import pytest

from kafkapipe import config as cfg
from kafkapipe.errors import ConfigError
from kafkapipe.kafka.admin import topic_specs
from kafkapipe.kafka.topiccheck import TopicCheck


def test_only_the_dead_letter_topics_are_kept_forever():
    config = cfg.Config()
    specs = {spec.topic: spec for spec in topic_specs(config)}
    dlqs = {config.topics.dlq, config.topics.events_dlq}
    for name in config.topics.all:
        expected = {"retention.ms": "-1"} if name in dlqs else {}
        assert specs[name].config == expected, name


@pytest.mark.parametrize("value", [0, -2, -86_400_000])
def test_dlq_retention_must_be_minus_one_or_positive(value):
    with pytest.raises(ConfigError, match="dlq_retention_ms must be -1"):
        cfg.from_mapping({"topics": {"dlq_retention_ms": value}})


def test_dlq_retention_is_passed_to_the_topic():
    config = cfg.from_mapping({"topics": {"dlq_retention_ms": 1000}})
    specs = {spec.topic: spec for spec in topic_specs(config)}
    assert specs[config.topics.dlq].config == {"retention.ms": "1000"}


def test_a_clean_check_has_no_problems():
    assert TopicCheck().ok and TopicCheck().problems("/etc/p.toml") == []


def test_problems_name_the_topics_the_counts_and_the_command():
    check = TopicCheck(missing=("a.events", "a.dlq"), stranded={"a.retry.9s": 3})
    assert not check.ok
    missing, stranded = check.problems("/etc/p.toml")
    assert missing == (
        "missing topic(s) a.events, a.dlq: create them with `kafkapipe topics create --config /etc/p.toml`"
    )
    assert "a.retry.9s (3 message(s))" in stranded
