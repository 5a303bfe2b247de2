"""`kafkapipe topics create` on the real broker: dead letters never silently expire."""

from __future__ import annotations

from confluent_kafka.admin import ConfigResource
from kafkahelpers import create_topics
from pipelinehelpers import Pipeline

DAY_MS = 86_400_000


def retention(admin, topic: str) -> int:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    (future,) = admin.describe_configs([resource], request_timeout=30).values()
    return int(future.result(30)["retention.ms"].value)


def _pipe(tmp_path, kafka_bootstrap, unique_name, **topics) -> Pipeline:
    return Pipeline(tmp_path, kafka_bootstrap, unique_name("topics"), 443, {"topics": topics})


def test_creates_both_dlqs_without_expiry_and_says_nothing_more(tmp_path, kafka_bootstrap, kafka_admin, unique_name):
    pipe = _pipe(tmp_path, kafka_bootstrap, unique_name)
    first = pipe.cli("topics", "create", "--config", str(pipe.config_path))
    assert first.stderr.count("warning") == 0, first.stderr
    for topic in pipe.all_topics():
        assert f"created  {topic}" in first.stdout
    topics = pipe.topics
    assert retention(kafka_admin, topics["dlq"]) == -1
    assert retention(kafka_admin, topics["events_dlq"]) == -1
    assert retention(kafka_admin, topics["pending"]) > 0, "only dead letters are kept forever"

    again = pipe.cli("topics", "create", "--config", str(pipe.config_path))
    assert "created" not in again.stdout and f"exists   {topics['dlq']}" in again.stdout
    assert "warning" not in again.stderr, again.stderr


def test_warns_about_an_existing_dlq_with_finite_retention(tmp_path, kafka_bootstrap, kafka_admin, unique_name):
    pipe = _pipe(tmp_path, kafka_bootstrap, unique_name)
    dlq = pipe.topics["dlq"]
    create_topics(kafka_admin, [dlq], partitions=3, config={"retention.ms": str(7 * DAY_MS)})

    done = pipe.cli("topics", "create", "--config", str(pipe.config_path))
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, done.stderr
    assert f"dead-letter topic {dlq} has retention.ms={7 * DAY_MS}" in warnings[0]
    assert "retention.ms=-1" in warnings[0]
    assert retention(kafka_admin, pipe.topics["events_dlq"]) == -1


def test_dlq_retention_is_configurable(tmp_path, kafka_bootstrap, kafka_admin, unique_name):
    wanted = 90 * DAY_MS
    pipe = _pipe(tmp_path, kafka_bootstrap, unique_name, dlq_retention_ms=wanted)
    events_dlq = pipe.topics["events_dlq"]
    create_topics(kafka_admin, [events_dlq], partitions=3, config={"retention.ms": str(365 * DAY_MS)})

    done = pipe.cli("topics", "create", "--config", str(pipe.config_path))
    assert retention(kafka_admin, pipe.topics["dlq"]) == wanted
    assert "warning" not in done.stderr, "a DLQ kept longer than asked is fine"


def test_the_start_check_sees_topics_over_sasl_oauthbearer(tmp_path, kafka_sasl_bootstrap, kafka_admin, unique_name):
    """The supervisor's topic check authenticates like the workers (a token from oauth_cb)."""
    from kafkapipe import config as cfg
    from kafkapipe.kafka.topiccheck import check_topics

    pipe = _pipe(tmp_path, kafka_sasl_bootstrap, unique_name)
    present = [t for t in pipe.all_topics() if t != pipe.topics["results"]]
    create_topics(kafka_admin, present, partitions=1)
    data = {
        **pipe.data,
        "kafka": {**pipe.data["kafka"], "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "OAUTHBEARER",
                  "oauth": {"credential": {"kind": "unsecured_jwt"}}},
    }
    found = check_topics(cfg.from_mapping(data), timeout=20)
    assert found.missing == (pipe.topics["results"],)
    assert found.stranded == {}
