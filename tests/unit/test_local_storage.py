import os
import time

import pytest

from kafkapipe.errors import PermanentError
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
