"""The librdkafka settings built for each target: Event Hubs' limits and a plain broker's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkapipe import config as cfg
from kafkapipe.errors import ConfigError
from kafkapipe.kafka.clients import consumer_config, headers, producer_config
from kafkapipe.messages import SCHEMA_FAILED, SCHEMA_RESULT, SCHEMA_TASK

EXAMPLES = Path(__file__).resolve().parents[2] / "etc" / "examples"


def _without_callbacks(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in ("oauth_cb", "logger", "client.id")}


def test_event_hubs_example_builds_what_event_hubs_accepts(monkeypatch):
    monkeypatch.setenv("KAFKAPIPE_EVENTHUBS_SECRET", "example-secret")
    config = cfg.load(EXAMPLES / "kafka-eventhubs-spn.toml", environ={})
    producer = _without_callbacks(producer_config(config))
    assert producer == {
        "bootstrap.servers": "claims-events.servicebus.windows.net:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "none",
        "request.timeout.ms": 60000,
        "socket.keepalive.enable": True,
        "connections.max.idle.ms": 180000,
        "metadata.max.age.ms": 180000,
    }
    consumer = _without_callbacks(consumer_config(config, "kafkapipe.download"))
    assert consumer["session.timeout.ms"] == 30000
    assert consumer["connections.max.idle.ms"] == 180000
    assert "request.timeout.ms" not in consumer and "compression.type" not in consumer


def test_plain_broker_keeps_lz4_and_short_sessions():
    config = cfg.load(None, environ={"KAFKAPIPE_KAFKA__BOOTSTRAP_SERVERS": "broker-1:9092,broker-2:9092"})
    producer = _without_callbacks(producer_config(config))
    assert producer == {
        "bootstrap.servers": "broker-1:9092,broker-2:9092",
        "security.protocol": "PLAINTEXT",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    consumer = consumer_config(config, "kafkapipe.ingest")
    assert consumer["session.timeout.ms"] == 10000 and "request.timeout.ms" not in consumer


@pytest.mark.parametrize(
    ("bootstrap", "compression", "expected"),
    [
        ("ns.servicebus.windows.net:9093", "auto", "none"),
        ("ns.servicebus.windows.net:9093", "gzip", "gzip"),
        ("NS.ServiceBus.Windows.Net.:9093", "auto", "none"),
        ("ns.servicebus.chinacloudapi.cn:9093", "auto", "none"),
        ("ns.servicebus.usgovcloudapi.net:9093", "auto", "none"),
        ("broker:9092", "zstd", "zstd"),
        ("broker:9092", "none", "none"),
        # A host that only contains the suffix is no Event Hubs namespace.
        ("servicebus.windows.net.evil.example:9093", "auto", "lz4"),
    ],
)
def test_compression_follows_the_target(bootstrap, compression, expected):
    config = cfg.from_mapping({"kafka": {"bootstrap_servers": bootstrap, "compression": compression}})
    assert producer_config(config)["compression.type"] == expected


def test_operator_settings_still_win_on_event_hubs():
    config = cfg.from_mapping({
        "kafka": {
            "bootstrap_servers": "ns.servicebus.windows.net:9093",
            "consumer": {"session.timeout.ms": 45000},
            "producer": {"request.timeout.ms": 30000},
        }
    })  # fmt: skip
    assert consumer_config(config, "g")["session.timeout.ms"] == 45000
    assert producer_config(config)["request.timeout.ms"] == 30000


@pytest.mark.parametrize("compression", ["lz4", "snappy", "zstd"])
def test_event_hubs_refuses_codecs_it_cannot_read(tmp_path, compression):
    path = tmp_path / "eh.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = "ns.servicebus.windows.net:9093"\ncompression = "{compression}"\n'
    )
    with pytest.raises(ConfigError, match=r"kafka: compression must be auto, none or gzip for Event Hubs"):
        cfg.load(path, environ={})


def test_unknown_compression_is_refused():
    with pytest.raises(ConfigError, match=r"kafka: compression must be one of"):
        cfg.from_mapping({"kafka": {"compression": "brotli"}})


@given(st.text(max_size=80))
def test_any_bootstrap_text_gives_a_codec_librdkafka_knows(bootstrap):
    try:
        config = cfg.from_mapping({"kafka": {"bootstrap_servers": bootstrap}})
    except ConfigError:
        return
    chosen = producer_config(config)["compression.type"]
    assert chosen in ("none", "lz4")
    if chosen == "none":
        assert ".servicebus." in bootstrap.lower()


SCHEMAS = st.sampled_from([SCHEMA_TASK, SCHEMA_RESULT, SCHEMA_FAILED, "other/1"]) | st.none() | st.text(max_size=8)


@given(SCHEMAS, st.none() | st.text(max_size=8), st.none() | st.text(max_size=8),
       st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
def test_headers_are_trace_task_schema_then_extras_each_encoded(schema, trace_id, task_id, extra) -> None:
    expected = [(name, value.encode()) for name, value in
                (("trace_id", trace_id), ("task_id", task_id), ("kafkapipe-schema", schema)) if value is not None]
    expected += [(k, v.encode()) for k, v in extra.items()]
    first, second = headers(schema, trace_id, task_id, **extra), headers(schema, trace_id, task_id, **extra)
    assert first == second == expected
    assert first is not second  # a list of its own for every message: callers may add to it
