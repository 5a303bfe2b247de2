"""The pipeline storing into Azure Blob (Azurite): refused credentials hold the stage and the same
message is processed again once the key is fixed — nothing is dead-lettered.
"""

from __future__ import annotations

import hashlib

from kafkahelpers import wait_for
from pipelinehelpers import Pipeline, event

from tests.integration.test_azure_blob import AZURITE_KEY, blob_sha256, storage_for

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 64


def test_refused_key_holds_the_message_until_the_key_is_fixed(
    tmp_path, kafka_bootstrap, kafka_admin, unique_name, fault_server, azurite_endpoint
):
    key_file = tmp_path / "account.key"
    key_file.write_text(AZURITE_KEY)
    container = unique_name("kp")
    admin_storage = storage_for(azurite_endpoint, container, key_file)
    admin_storage.create_container()
    wrong = AZURITE_KEY[:10] + ("A" if AZURITE_KEY[10] != "A" else "B") + AZURITE_KEY[11:]
    key_file.write_text(wrong)

    fault_server.add("/claim.pdf", PDF, content_type="application/pdf")
    pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("az"), fault_server.port, {
        "storage": {"backend": "azure_blob", "azure": {
            "account_url": azurite_endpoint, "container": container, "prefix": "claims",
            "credential": {"kind": "shared_key", "account_key_file": str(key_file)},
        }},
    })
    pipe.create_topics(kafka_admin)
    try:
        pipe.start(("ingest", "download", "delay", "results"))
        pipe.produce([event("t-azure", [fault_server.url("/claim.pdf")])])
        wait_for(lambda: "storage credentials refused" in pipe.logs(), 60, "the stage to hold on refused credentials")
        wait_for(lambda: pipe.logs().count("storage credentials refused") >= 2, 60, "a second try, still refused")
        assert pipe.rows() == [], "an auth failure is neither a result nor a dead letter"
        assert pipe.lag("download", pipe.topics["pending"]) == 1, "the message is not committed"

        key_file.write_text(AZURITE_KEY)  # the operator fixes the key
        row = pipe.wait_rows(1, status="success", timeout=120)[0]
    finally:
        pipe.stop()

    assert row["attempt"] == 1, "holding for credentials used no attempt"
    stored = blob_sha256(admin_storage, f"claims/{row['blob_path']}")  # under the configured prefix
    assert stored == (hashlib.sha256(PDF).hexdigest(), len(PDF))
    assert pipe.count(pipe.topics["results"]) == 1, "one result: the success"
    assert pipe.count(pipe.topics["dlq"]) == 0
    assert pipe.lag("download", pipe.topics["pending"]) == 0
    assert pipe.lag("results", pipe.topics["results"]) == 0
    admin_storage.close()


def test_missing_container_holds_the_message_until_it_is_created(
    tmp_path, kafka_bootstrap, kafka_admin, unique_name, fault_server, azurite_endpoint
):
    key_file = tmp_path / "account.key"
    key_file.write_text(AZURITE_KEY)
    container = unique_name("kp")  # not created yet: a storage-side problem, not the task's
    admin_storage = storage_for(azurite_endpoint, container, key_file)

    fault_server.add("/claim.pdf", PDF, content_type="application/pdf")
    pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("az"), fault_server.port, {
        "storage": {"backend": "azure_blob", "azure": {
            "account_url": azurite_endpoint, "container": container,
            "credential": {"kind": "shared_key", "account_key_file": str(key_file)},
        }},
    })
    pipe.create_topics(kafka_admin)
    try:
        pipe.start(("ingest", "download", "delay", "results"))
        pipe.produce([event("t-nocontainer", [fault_server.url("/claim.pdf")])])
        wait_for(lambda: "storage unavailable; holding the task" in pipe.logs(), 60, "the stage to hold")
        assert "ContainerNotFound" in pipe.logs()
        assert pipe.rows() == [] and pipe.count(pipe.topics["dlq"]) == 0
        assert pipe.lag("download", pipe.topics["pending"]) == 1, "the message is not committed"

        admin_storage.create_container()  # the operator creates it
        row = pipe.wait_rows(1, status="success", timeout=120)[0]

        # The same task again: its blob is there with its sha256, so no second request is made.
        requests_before = fault_server.requests_to("/claim.pdf")
        pipe.produce([event("t-nocontainer", [fault_server.url("/claim.pdf")])])
        wait_for(lambda: pipe.count(pipe.topics["results"]) >= 2, 60, "the second result")
        pipe.wait_caught_up("download", pipe.topics["pending"])
    finally:
        pipe.stop()

    assert row["attempt"] == 1, "holding for storage used no attempt"
    assert blob_sha256(admin_storage, row["blob_path"]) == (hashlib.sha256(PDF).hexdigest(), len(PDF))
    assert fault_server.requests_to("/claim.pdf") == requests_before, "already stored: not downloaded again"
    assert "already stored" in pipe.logs()
    assert pipe.count(pipe.topics["dlq"]) == 0
    admin_storage.close()
