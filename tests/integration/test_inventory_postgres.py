"""PostgreSQL-only behaviour: the DSN's secret stays secret, TLS settings reach libpq, and a
server that goes away holds the results stage until it is back, losing nothing."""

from __future__ import annotations

import socket
import subprocess
import sys

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from fakekafka import FakeConsumer, FakeProducer
from inventoryhelpers import T0, as_table, inventory_config, result
from kafkahelpers import wait_for
from pipelinehelpers import ROOT, Pipeline, to_toml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from kafkapipe.config import from_mapping
from kafkapipe.inventory import InventoryUnavailable, open_inventory
from kafkapipe.kafka.loop import ConsumeLoop
from kafkapipe.messages import DownloadResult, dumps, make_task_id
from kafkapipe.stages.results import ResultsStage
from kafkapipe.worker import WorkerControl

CANARY = "S3cret-Canary-9f2e"


def cli(config_path, *args):
    return subprocess.run([sys.executable, "-m", "kafkapipe.cli", *args, "--config", str(config_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def pg_config(tmp_path, dsn: str, **postgresql) -> object:
    (tmp_path / "dsn").write_text(dsn)
    path = tmp_path / "pipeline.toml"
    path.write_text(to_toml({"inventory": {"backend": "postgresql",
                                           "postgresql": {"dsn_file": str(tmp_path / "dsn"), **postgresql}}}))
    return path


def test_the_dsn_password_is_never_printed(tmp_path, postgres_dsn):
    params = conninfo_to_dict(postgres_dsn)
    # A database that does not exist: the server answers, and refuses.
    wrong = make_conninfo(postgres_dsn, password=CANARY, dbname="kp_no_such_database")
    config = pg_config(tmp_path, wrong, connect_timeout=3.0)
    for action in ("summary", "migrate"):
        proc = cli(config, "inventory", action)
        assert proc.returncode == 1, proc.stderr
        assert "kp_no_such_database" in proc.stderr or "connection" in proc.stderr
        assert CANARY not in proc.stdout + proc.stderr
    malformed = pg_config(tmp_path, f"host={params.get('host', '127.0.0.1')} password='{CANARY}")  # unterminated
    proc = cli(malformed, "inventory", "summary")
    assert proc.returncode == 2 and "not a valid libpq DSN" in proc.stderr
    assert CANARY not in proc.stdout + proc.stderr
    shown = cli(config, "config", "check")
    assert shown.returncode == 0 and CANARY not in shown.stdout


def test_tls_settings_are_passed_to_libpq(tmp_path, postgres_dsn):
    plain = pg_config(tmp_path, postgres_dsn)
    assert cli(plain, "inventory", "migrate").returncode == 0
    verified = pg_config(tmp_path, postgres_dsn, sslmode="verify-full",
                         sslrootcert=str(tmp_path / "no-such-ca.pem"), connect_timeout=3.0)
    proc = cli(verified, "inventory", "summary")
    assert proc.returncode == 1
    assert "SSL" in proc.stderr or "certificate" in proc.stderr, proc.stderr


def postgres_local(*args: str, check: bool = True) -> dict[str, str]:
    proc = subprocess.run([str(ROOT / "bin" / "postgres-local"), *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 or not check, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


@pytest.fixture
def own_server(tmp_path_factory):
    """A PostgreSQL server of this test's own, to stop and start again."""
    state = tmp_path_factory.mktemp("pg-own")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ("--dir", str(state), "--port", str(port))
    dsn = postgres_local("start", *args)["dsn"]
    try:
        yield dsn, lambda: postgres_local("stop", *args), lambda: postgres_local("start", *args)
    finally:
        postgres_local("stop", *args, "--purge", check=False)


def test_results_stage_holds_while_the_server_is_away_and_loses_nothing(
        tmp_path, own_server, kafka_bootstrap, kafka_admin, unique_name):
    dsn, stop_server, start_server = own_server
    (tmp_path / "dsn").write_text(dsn)
    pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("pgaway"), 443, overrides={
        "inventory": {"backend": "postgresql", "postgresql": {"dsn_file": str(tmp_path / "dsn"),
                                                              "connect_timeout": 2.0}},
        "stages": {"results": {"batch_size": 10, "batch_timeout": 0.1}},
    })
    pipe.create_topics(kafka_admin)
    try:
        pipe.cli("inventory", "migrate", "--config", str(pipe.config_path))
        worker = pipe.start_worker("results")
        producer = Producer({"bootstrap.servers": kafka_bootstrap})

        def send(tasks):
            for task in tasks:
                producer.produce(pipe.topics["results"],
                                 value=dumps(result("success", T0, task_id=make_task_id("tr", task))))
            assert producer.flush(30) == 0

        send([f"before-{i}" for i in range(20)])
        pipe.wait_rows(20)
        stop_server()
        send([f"during-{i}" for i in range(20)])
        wait_for(lambda: "inventory write failed" in pipe.logs(), 60, "the stage to hold on the lost server")
        assert worker.poll() is None, "the worker holds, it does not die"
        assert pipe.lag("results", pipe.topics["results"]) > 0, "nothing committed while unwritten"
        start_server()
        rows = pipe.wait_rows(40, timeout=120)
        assert {r["task_id"] for r in rows} == {
            make_task_id("tr", f"{p}-{i}") for p in ("before", "during") for i in range(20)}
        pipe.wait_caught_up("results", pipe.topics["results"])
        assert CANARY not in pipe.logs()
    finally:
        pipe.stop()


def _run_results_stage(stage, values: list[bytes]):
    """Every value through a real ConsumeLoop (in-memory Kafka); returns the producer."""
    consumer, producer = FakeConsumer(), FakeProducer()
    loop = ConsumeLoop(stage, consumer, producer, WorkerControl(), max_in_flight=100, drain_timeout=1.0)
    consumer.subscribe(stage.topics, loop._on_assign, loop._on_revoke, loop._on_lost)
    topic = stage.topics[0]
    for value in values:
        consumer.add(topic, 0, value, None)
    consumer.assign((topic, 0))
    for _ in range(5):
        loop._iterate()
    assert loop._fatal is None
    assert consumer.stored[(topic, 0)] == len(values)  # every offset done: nothing held
    return producer


# 1500 CJK characters, 4500 bytes that do not compress: too large for the trace_id index (SQLSTATE 54000)
LONG_CJK_TRACE = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1500))


def _result(task_id: str, **changes) -> DownloadResult:
    return DownloadResult(task_id=task_id, trace_id="tr", attachment_url="https://h/a.pdf", blob_path="p/a.pdf",
                          status="success", attempt=1, completed_at=T0, duration_ms=5, **changes)


def test_a_result_the_database_cannot_index_does_not_make_the_inventory_unavailable(tmp_path, request):
    config = inventory_config("postgresql", tmp_path, request)
    inventory = open_inventory(config)
    try:
        bad = _result("b" * 32)
        object.__setattr__(bad, "trace_id", LONG_CJK_TRACE)  # as a writer skipping the message checks would
        with pytest.raises(psycopg.Error) as caught:
            inventory.upsert([_result("a" * 32), bad])
        assert not isinstance(caught.value, InventoryUnavailable)
        assert caught.value.sqlstate == "54000"
        assert inventory.upsert([_result("a" * 32)]) == 1  # the pool's connection is still usable
        assert inventory.lookup("a" * 32) is not None
    finally:
        inventory.close()


def test_one_result_the_database_refuses_does_not_hold_the_batch(tmp_path, request):
    inventory = inventory_config("postgresql", tmp_path, request)
    config = from_mapping({"inventory": as_table(inventory), "storage": {"root": str(tmp_path / "blobs")}},
                          "test.toml")
    stage = ResultsStage(config)
    try:
        good = [orjson.loads(dumps(_result(c * 32))) for c in "acd"]
        bad = {**orjson.loads(dumps(_result("b" * 32))), "trace_id": LONG_CJK_TRACE}
        producer = _run_results_stage(stage, [orjson.dumps(v) for v in (good[0], bad, *good[1:])])
        letters = producer.on(config.topics.dlq)
        assert [p.header("source-offset") for p in letters] == [b"1"]
        assert {c for c in "abcd" if stage.inventory.lookup(c * 32) is not None} == {"a", "c", "d"}
    finally:
        stage.close()
