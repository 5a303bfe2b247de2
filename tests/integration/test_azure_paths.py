"""Azure Blob storage refuses paths that would leave its container, before any URL is built (real Azurite)."""

from __future__ import annotations

import pytest

from kafkapipe.errors import ValidationError
from tests.integration.test_azure_blob import AZURITE_KEY, list_blobs, storage_for


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "azurite.key"
    path.write_text(AZURITE_KEY + "\n")
    return path


@pytest.fixture
def two_containers(azurite_endpoint, key_file, unique_name):
    ours, victim = unique_name("kpours"), unique_name("kpvictim")
    made = []
    for name in (ours, victim):
        storage = storage_for(azurite_endpoint, name, key_file)
        assert storage.create_container() is True
        made.append(storage)
    yield made
    for storage in made:
        storage.close()


@pytest.mark.parametrize(
    "hostile",
    ["../{victim}/x.pdf", "claims/../../{victim}/x.pdf", "./x.pdf", "claims//x.pdf", "claims/./x.pdf",
     "/{victim}/x.pdf", "claims\\..\\..\\{victim}\\x.pdf", "%2e%2e/{victim}/x.pdf", "claims/x\x00.pdf"],
)
def test_a_path_out_of_the_container_is_refused_and_nothing_lands_anywhere(two_containers, hostile):
    ours, victim = two_containers
    path = hostile.format(victim=victim.container)
    with pytest.raises(ValidationError, match="storage path refused"), ours.open_writer(path) as writer:
        writer.write(b"%PDF-1.7 planted")
        writer.commit()
    with pytest.raises(ValidationError):
        ours.exists(path)
    assert list_blobs(ours, "") == []
    assert list_blobs(victim, "") == []


def test_the_stored_name_takes_the_extension_it_is_given(two_containers):
    ours, _ = two_containers
    with ours.open_writer("claims/t-invoice.scr") as writer:
        writer.use_extension("pdf")
        writer.write(b"%PDF-1.7 body")
        writer.commit()
    assert list_blobs(ours, "") == ["claims/t-invoice.pdf"]
