"""DLQ triage against a real broker: filters, newest-first, stats, planned replay, ack by P:O or
selection, the events DLQ, the audit file. Helpers and the fixture come from test_dlq_cli."""

from __future__ import annotations

import json
from datetime import timedelta

import orjson
import pytest
from confluent_kafka import Producer
from kafkahelpers import create_topics

from kafkapipe.kafka.clients import header_map
from kafkapipe.messages import DownloadTask, loads, utcnow
from tests.integration.test_dlq_cli import env, failed, listed, produce, read_topic, review_offsets, tool  # noqa: F401

TIMEOUT = 30.0


def on_host(entry, host: str):
    import attrs

    task = attrs.evolve(entry.task, attachment_url=entry.task.attachment_url.replace("files.example.com", host))
    return attrs.evolve(entry, task=task)


def test_a_misspelt_category_is_an_error_naming_the_real_ones(env, capsys):  # noqa: F811
    for command in ("list", "stats", "replay", "ack"):
        with pytest.raises(SystemExit) as exited:
            tool(env, command, "--category", "transiant")
        assert exited.value.code == 2
        assert "unknown category 'transiant'" in capsys.readouterr().err
    assert tool(env, "list", "--category", "circuit_open")[0] == 0


def test_list_is_newest_first_and_filters_combine(env):  # noqa: F811
    now = utcnow()
    a = failed("a", "transient", failed_at=now - timedelta(hours=3))
    b = on_host(failed("b", "transient", failed_at=now - timedelta(minutes=30)), "other.example.org")
    c = failed("c", "permanent", failed_at=now - timedelta(minutes=10))
    d = failed("d", "transient", failed_at=now - timedelta(minutes=5))
    # produced across both partitions, oldest first: newest-first must merge them
    produce(env, [(0, a, None), (1, b, None), (0, c, None), (1, d, None)])

    names = lambda docs: [doc["trace_id"] for doc in docs]  # noqa: E731
    assert names(listed(env)) == ["trace-d", "trace-c", "trace-b", "trace-a"]
    assert names(listed(env, "--limit", "2")) == ["trace-d", "trace-c"]
    assert names(listed(env, "--category", "transient", "--since", "2h")) == ["trace-d", "trace-b"]
    assert names(listed(env, "--host", "OTHER.example.org")) == ["trace-b"]
    assert names(listed(env, "--trace-id", "trace-c")) == ["trace-c"]
    assert listed(env, "--trace-id", "trace-c", "--category", "transient") == []
    code, out, _ = tool(env, "list", "--trace-id", "trace-a")
    assert code == 0 and "trace-a" in out.splitlines()[1]


def test_stats_counts_both_dlqs_by_category_host_stage_and_age(env, kafka_admin):  # noqa: F811
    now = utcnow()
    create_topics(kafka_admin, env.topics.events_dlq, partitions=1)
    old = failed("old", "permanent", failed_at=now - timedelta(days=2))
    produce(env, [(0, old, None), (1, failed("x", "transient"), None), (0, failed("y", "transient"), None),
                  (1, on_host(failed("z", "validation"), "evil.example.net"), None), (0, b"junk", b"k")])
    producer = Producer({"bootstrap.servers": env.kafka.bootstrap_servers})
    producer.produce(env.topics.events_dlq, value=b"{bad", headers=[("error-category", b"validation")])
    producer.flush(TIMEOUT)

    code, out, err = tool(env, "stats", "--json")
    assert code == 0, err
    downloads, events = json.loads(out)["dlqs"]
    assert downloads["topic"] == env.topics.dlq and downloads["entries"] == 5
    assert downloads["by_category"] == {"transient": 2, "permanent": 1, "validation": 1, "undecodable": 1}
    assert downloads["by_host"] == {"files.example.com": 3, "evil.example.net": 1, "-": 1}
    assert downloads["by_stage"] == {"download": 4, "-": 1}
    assert downloads["by_age"] == {"<1h": 5}  # age is from the DLQ write time
    assert downloads["oldest"]["trace_id"] == "trace-old"
    assert (events["topic"], events["entries"], events["by_category"]) == (env.topics.events_dlq, 1,
                                                                           {"validation": 1})
    assert events["by_stage"] == {"ingest": 1}

    code, out, _ = tool(env, "stats", "--downloads", "--category", "transient")
    assert code == 0
    assert out.splitlines()[0] == f"{env.topics.dlq}: 2 entries"
    assert "category  transient=2" in out


def test_replay_plans_without_execute_and_sends_the_newest_with_execute(env, caplog):  # noqa: F811
    now = utcnow()
    entries = [failed(f"r{i}", "transient", failed_at=now - timedelta(minutes=10 - i)) for i in range(4)]
    bad = failed("bad", "permanent", failed_at=now)
    produce(env, [(i % 2, e, None) for i, e in enumerate(entries)] + [(0, bad, None)])

    code, out, err = tool(env, "replay", "--category", "transient")
    assert code == 0, err
    assert out.startswith("plan: replay 4 from") and out.count("would replay") == 4
    assert "add --execute" in err
    assert read_topic(env, env.topics.pending) == []

    code, out, err = tool(env, "replay", "--since", "1h")
    assert code == 0 and "warning: 1 of these failed as permanent" in err

    code, out, err = tool(env, "replay", "--category", "transient", "--limit", "2", "--rate", "50", "--execute")
    assert code == 0, err
    assert "replayed=2" in out and "sending 2/2" in err
    sent = {loads(m.value(), DownloadTask).trace_id for m in read_topic(env, env.topics.pending)}
    assert sent == {"trace-r3", "trace-r2"}  # the newest two

    with open(env.dlq.audit_log, "rb") as log:
        audit_lines = [orjson.loads(line) for line in log]
    assert [(r["action"], r["dry_run"]) for r in audit_lines] == [
        ("dlq.replay", True), ("dlq.replay", True), ("dlq.replay", False)
    ]
    assert audit_lines[-1]["category"] == "transient" and audit_lines[-1]["limit"] == 2
    assert audit_lines[-1]["user"] and audit_lines[-1]["at"]


def test_replay_ack_acknowledges_only_the_leading_replayed_entries(env):  # noqa: F811
    a, b, c = failed("a", "transient"), failed("b", "permanent"), failed("c", "transient")
    coords = produce(env, [(0, a, None), (0, b, None), (0, c, None), (1, failed("d", "transient"), None)])
    code, out, err = tool(env, "replay", "--category", "transient", "--execute", "--ack")
    assert code == 0, err
    assert "replayed=3" in out
    offsets = review_offsets(env)
    # partition 0 stops at b (not replayed); partition 1 is wholly replayed
    assert offsets[0] == int(coords[1].split(":")[1]) and offsets[1] == int(coords[3].split(":")[1]) + 1
    assert [doc["trace_id"] for doc in listed(env)] == ["trace-c", "trace-b"]


def test_ack_takes_coordinates_as_printed_and_selections(env):  # noqa: F811
    coords = produce(env, [(0, failed("p", "permanent"), None), (0, failed("q", "transient"), None),
                           (1, failed("s", "permanent"), None)])
    code, out, err = tool(env, "ack", coords[0])
    assert code == 0, err
    assert [doc["trace_id"] for doc in listed(env)] == ["trace-s", "trace-q"]
    assert tool(env, "ack", "0:abc")[0] == 2
    assert tool(env, "ack", coords[1], "--all")[0] == 2

    code, out, err = tool(env, "ack", "--category", "permanent")
    assert code == 0, err
    assert f"stopping at {coords[1]}" in out
    assert [doc["trace_id"] for doc in listed(env)] == ["trace-q"]


def test_events_dlq_list_show_and_replay_send_the_original_bytes(env, kafka_admin):  # noqa: F811
    create_topics(kafka_admin, [env.topics.events_dlq, env.topics.events], partitions=1)
    original = b'{"trace_id": "CLM-7", "event_type": "x", "attachments": "not a list"}'
    producer = Producer({"bootstrap.servers": env.kafka.bootstrap_servers})
    producer.produce(env.topics.events_dlq, key=b"CLM-7", value=original, headers=[
        ("trace_id", b"CLM-7"), ("origin", b"crm"), ("error-category", b"validation"),
        ("error-message", b"attachments must be a list of URL strings"), ("source-topic", b"events"),
    ])
    producer.flush(TIMEOUT)

    (doc,) = listed(env, "--events")
    assert (doc["trace_id"], doc["category"]) == ("CLM-7", "validation")
    assert "list of URL" in doc["message"]
    code, out, _ = tool(env, "show", "--events", f"{doc['partition']}:{doc['offset']}")
    assert code == 0 and json.loads(out)["headers"]["origin"] == "crm"

    code, out, err = tool(env, "replay", "--events", "--trace-id", "CLM-7", "--execute")
    assert code == 0, err
    assert "replayed=1" in out and "warning: 1 of these failed as" in err
    (msg,) = read_topic(env, env.topics.events)
    assert msg.value() == original and msg.key() == b"CLM-7"
    assert header_map(msg.headers()) == {"trace_id": "CLM-7", "origin": "crm"}
    code, out, _ = tool(env, "replay", "--events", "--trace-id", "CLM-7", "--execute")
    assert "replayed=0" in out and "already_replayed=1" in out
    assert len(read_topic(env, env.topics.events)) == 1


def test_events_replay_is_byte_for_byte_and_a_truncated_letter_is_refused(env, kafka_admin):  # noqa: F811
    create_topics(kafka_admin, [env.topics.events_dlq, env.topics.events], partitions=1)
    key = b"\xffCLM-8\x80\xfe"  # not UTF-8
    original = b'{"trace_id": "CLM-8", "event_type": "x", "attachments": "not a list"}'
    # duplicates, a value that is not UTF-8 and one with no value, in this order
    kept = [("trace_id", b"CLM-8"), ("origin", b"crm"), ("flag", None), ("origin", b"\xc3(erp"), ("origin", b"crm")]
    ours = [("error-category", b"validation"), ("error-message", b"attachments must be a list of URL strings"),
            ("source-topic", b"events"), ("source-partition", b"0"), ("source-offset", b"7")]
    producer = Producer({"bootstrap.servers": env.kafka.bootstrap_servers})
    producer.produce(env.topics.events_dlq, key=key, value=original, headers=[*kept, *ours])
    producer.produce(env.topics.events_dlq, key=b"CLM-9", value=original[:20], headers=[
        ("trace_id", b"CLM-9"), *ours, ("original-size", str(len(original)).encode()), ("truncated", b"true"),
    ])
    producer.flush(TIMEOUT)

    code, out, err = tool(env, "replay", "--events", "--trace-id", "CLM-8", "--execute")
    assert code == 0, err
    assert " replayed=1" in out
    (msg,) = read_topic(env, env.topics.events)
    assert (msg.key(), msg.value(), msg.headers()) == (key, original, kept)

    code, out, err = tool(env, "replay", "--events", "--trace-id", "CLM-9", "--execute")
    assert code != 0
    assert " replayed=0" in out and "truncated=1" in out
    assert "was cut to fit the dead-letter topic" in err and "not replayed" in err
    assert len(read_topic(env, env.topics.events)) == 1


def test_an_audit_log_that_cannot_be_written_stops_the_action(env, tmp_path):  # noqa: F811
    import attrs

    produce(env, [(0, failed("kept", "transient"), None)])
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "audit").write_text("")  # a file where the directory should be
    blocked = attrs.evolve(env, dlq=attrs.evolve(env.dlq, audit_log=str(tmp_path / "ro" / "audit" / "log")))
    code, _, err = tool(blocked, "replay", "--all-entries", "--execute")
    assert code == 1 and "cannot write the audit log" in err
    assert read_topic(env, env.topics.pending) == []
    assert tool(blocked, "ack", "--all")[0] == 1
    assert len(listed(env)) == 1


@pytest.mark.parametrize(("answer", "sent"), [("y\n", 1), ("n\n", 0), ("\n", 0)])
def test_replay_on_a_terminal_asks_first(env, tmp_path, answer, sent):  # noqa: F811
    import os
    import pty
    import subprocess
    import sys

    from tests.integration.test_dlq_cli import ROOT

    produce(env, [(0, failed("asked", "transient"), None)])
    config_file = tmp_path / "pipeline.toml"
    topics = "\n".join(f'{n} = "{getattr(env.topics, n)}"' for n in ("events", "pending", "dlq", "events_dlq"))
    config_file.write_text(
        f'[kafka]\nbootstrap_servers = "{env.kafka.bootstrap_servers}"\ngroup_prefix = "{env.kafka.group_prefix}"\n'
        f'[topics]\n{topics}\n[dlq]\naudit_log = "{env.dlq.audit_log}"\n'
    )
    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode())  # typed ahead: the terminal keeps it until the prompt reads
        proc = subprocess.run(
            [sys.executable, "-m", "kafkapipe", "dlq", "replay", "--all-entries", "--config", str(config_file)],
            stdin=slave, capture_output=True, text=True, cwd=ROOT, timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("KAFKAPIPE_")},
        )
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert "replay these 1? [y/N]" in proc.stderr
    assert len(read_topic(env, env.topics.pending)) == sent
    assert (f"replayed={sent}" in proc.stdout) if sent else ("would_replay=1" in proc.stdout)
