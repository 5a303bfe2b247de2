import os
import time

import pytest

from kafkapipe.errors import PermanentError, ValidationError
from kafkapipe.storage.local import LocalStorage


def published(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".incoming" not in p.parts)


def test_nothing_is_visible_under_the_final_name_until_commit(tmp_path):
    storage = LocalStorage(tmp_path)
    with storage.open_writer("a/b/doc.pdf") as writer:
        writer.write(b"%PDF-1.7 part one ")
        assert published(tmp_path) == [] and not storage.exists("a/b/doc.pdf")
        writer.write(b"part two")
        writer.commit()
    assert published(tmp_path) == ["a/b/doc.pdf"]
    assert (tmp_path / "a/b/doc.pdf").read_bytes() == b"%PDF-1.7 part one part two"
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_an_exception_inside_the_writer_leaves_nothing(tmp_path):
    storage = LocalStorage(tmp_path)
    with pytest.raises(PermanentError), storage.open_writer("x/doc.pdf") as writer:
        writer.write(b"partial")
        raise PermanentError("rejected mid-stream")
    assert published(tmp_path) == []
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_writing_the_same_path_twice_gives_the_same_bytes_once(tmp_path):
    storage = LocalStorage(tmp_path)
    for _ in range(2):
        with storage.open_writer("t/doc.pdf") as writer:
            writer.write(b"same bytes")
            writer.commit()
    assert published(tmp_path) == ["t/doc.pdf"]


def test_sweep_removes_only_temp_files_older_than_the_cutoff(tmp_path):
    storage = LocalStorage(tmp_path)
    assert storage.sweep(60) == 0  # no incoming directory yet
    live = storage.open_writer("live/doc.pdf")  # a writer of another process, still running
    live.write(b"in progress")
    storage.incoming.mkdir(exist_ok=True)
    stale = storage.incoming / ".tmp-abandoned"
    stale.write_bytes(b"left by a killed worker")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    (storage.incoming / "not-ours").write_bytes(b"")
    os.utime(storage.incoming / "not-ours", (old, old))
    assert storage.sweep(600) == 1
    assert not stale.exists() and (storage.incoming / "not-ours").exists()
    live.commit()
    assert storage.exists("live/doc.pdf")


def everything_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


@pytest.mark.parametrize(
    "hostile",
    ["../../x", "/tmp/x", "a/../../x", "%2e%2e/%2e%2e/x", "a\\..\\..\\x", "a/x\x00.pdf", "a/" + "x" * 1100,
     "a//b", "./a"],
)
def test_a_path_that_could_leave_the_root_is_refused_before_anything_is_written(tmp_path, hostile):
    root = tmp_path / "root"
    storage = LocalStorage(root)
    with pytest.raises(ValidationError, match="storage path refused"):
        storage.open_writer(hostile)
    assert everything_under(tmp_path) == []


def test_a_symlinked_folder_inside_the_root_pointing_out_is_never_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "claims").mkdir(parents=True)
    outside.mkdir()
    (root / "claims" / "2026").symlink_to(outside)
    storage = LocalStorage(root)
    with pytest.raises(ValidationError, match="symlink"):
        storage.open_writer("claims/2026/t-a.pdf")
    assert list(outside.iterdir()) == []


def test_a_symlink_planted_after_the_writer_opened_is_refused_at_commit(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    storage = LocalStorage(root)
    writer = storage.open_writer("claims/2026/t-a.pdf")
    writer.write(b"%PDF-1.7 body")
    (root / "claims").mkdir(parents=True)
    (root / "claims" / "2026").symlink_to(outside)  # the race: swapped in between check and use
    with pytest.raises(ValidationError, match="symlink"):
        writer.commit()
    assert list(outside.iterdir()) == []
    assert list((root / ".incoming").iterdir()) == []


def test_a_symlink_at_the_final_name_is_replaced_not_written_through(tmp_path):
    root, target = tmp_path / "root", tmp_path / "inventory.sqlite3"
    target.write_bytes(b"precious")
    (root / "claims").mkdir(parents=True)
    (root / "claims" / "t-a.pdf").symlink_to(target)
    storage = LocalStorage(root)
    with storage.open_writer("claims/t-a.pdf") as writer:
        writer.write(b"%PDF-1.7 new")
        writer.commit()
    assert target.read_bytes() == b"precious"
    assert not (root / "claims" / "t-a.pdf").is_symlink()
    assert (root / "claims" / "t-a.pdf").read_bytes() == b"%PDF-1.7 new"


def test_a_failed_download_leaves_no_empty_directories(tmp_path):
    storage = LocalStorage(tmp_path)
    with pytest.raises(PermanentError), storage.open_writer("xact/2026/11/25/trace/t-a.pdf") as writer:
        writer.write(b"partial")
        raise PermanentError("type refused")
    assert everything_under(tmp_path) == [".incoming"]
    writer = storage.open_writer("xact/2026/11/26/trace/t-b.pdf")
    writer.write(b"x")
    writer.abort()
    assert everything_under(tmp_path) == [".incoming"]


def test_a_commit_that_fails_removes_the_folders_it_made(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "xact").mkdir()
    writer = storage.open_writer("xact/2026/11/t-a.pdf")
    writer.write(b"x")
    (tmp_path / ".incoming").rename(tmp_path / ".moved")  # the temp file is gone: the rename fails
    with pytest.raises(PermanentError):
        writer.commit()
    assert everything_under(tmp_path / "xact") == []


def test_the_stored_name_takes_the_extension_it_is_given(tmp_path):
    storage = LocalStorage(tmp_path)
    with storage.open_writer("claims/t-invoice.scr") as writer:
        writer.use_extension("pdf")
        writer.write(b"%PDF-1.7")
        writer.commit()
    assert published(tmp_path) == ["claims/t-invoice.pdf"]
    assert storage.exists("claims/t-invoice.pdf") and not storage.exists("claims/t-invoice.scr")


def test_nothing_is_stored_before_the_root_exists(tmp_path):
    """The first download of a new deployment: no root yet is "not stored", not a storage error."""
    storage = LocalStorage(tmp_path / "not-yet")
    assert storage.stat("src/2026/01/01/t/abc-a.pdf") is None
    assert not (tmp_path / "not-yet").exists()
