"""Folder fsyncs are shared by the writers of a storage, and no verdict comes before its round."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time

import pytest

from kafkapipe.errors import ErrorCategory, StorageUnavailableError
from kafkapipe.storage.local import LocalStorage


class FolderFsyncs:
    """Wraps os.fsync: records the folders fsynced (by inode), and can hold or fail them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = os.fsync
        self.synced: list[tuple[int, int]] = []
        self.files: list[tuple[int, int]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.error: int | None = None
        self.delay = 0.0
        self.lock = threading.Lock()
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        info = os.fstat(fd)
        if not stat.S_ISDIR(info.st_mode):
            with self.lock:
                self.files.append((info.st_dev, info.st_ino))
            return self.real(fd)
        self.entered.set()
        assert self.release.wait(10), "a folder fsync was held too long"
        time.sleep(self.delay)
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        with self.lock:
            self.synced.append((info.st_dev, info.st_ino))
        return self.real(fd)

    def synced_folder(self, path) -> int:
        info = os.stat(path)
        return self.synced.count((info.st_dev, info.st_ino))


def write(storage: LocalStorage, blob_path: str, body: bytes = b"%PDF-1.7 body") -> None:
    with storage.open_writer(blob_path) as writer:
        writer.write(body)
        writer.commit()


def write_in_thread(storage: LocalStorage, blob_path: str) -> tuple[threading.Thread, threading.Event, list]:
    """:func:`write` in a thread of its own, started: the event is set once it returned, the list
    holds what it raised."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            write(storage, blob_path)
        except BaseException as exc:  # pragma: no cover - the test asserts there is none
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done, errors


def test_a_commit_returns_only_after_the_round_covering_its_rename(tmp_path, monkeypatch):
    fsyncs = FolderFsyncs(monkeypatch)
    storage = LocalStorage(tmp_path)
    fsyncs.release.clear()
    thread, committed, errors = write_in_thread(storage, "src/2026/t1/a.pdf")
    assert fsyncs.entered.wait(5)
    assert (tmp_path / "src/2026/t1/a.pdf").exists(), "renamed before the round"
    assert not committed.wait(0.3), "the commit returned before its folder was synced"
    fsyncs.release.set()
    thread.join(5)
    assert committed.is_set() and errors == []
    assert fsyncs.synced_folder(tmp_path / "src/2026/t1") == 1
    storage.close()


def test_the_parents_of_made_folders_are_synced(tmp_path, monkeypatch):
    fsyncs = FolderFsyncs(monkeypatch)
    storage = LocalStorage(tmp_path)
    (tmp_path / "src").mkdir()
    write(storage, "src/2026/11/trace/a.pdf")
    # Made: 2026, 11, trace; each one's entry lives in its parent.
    for folder in ("src", "src/2026", "src/2026/11", "src/2026/11/trace"):
        assert fsyncs.synced_folder(tmp_path / folder) == 1, folder
    assert len(fsyncs.files) == 1, "the file itself is fsynced before the rename"
    storage.close()


def test_writers_share_the_fsyncs_of_a_shared_folder(tmp_path, monkeypatch):
    fsyncs = FolderFsyncs(monkeypatch)
    fsyncs.delay = 0.02
    storage = LocalStorage(tmp_path)
    (tmp_path / "src/day").mkdir(parents=True)
    threads = [threading.Thread(target=write, args=(storage, f"src/day/t{i}/a.pdf")) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    for i in range(16):
        assert (tmp_path / f"src/day/t{i}/a.pdf").read_bytes() == b"%PDF-1.7 body"
        assert fsyncs.synced_folder(tmp_path / f"src/day/t{i}") == 1
    # The shared parent of the 16 new folders is synced once per round of renames, not per writer.
    assert 1 <= fsyncs.synced_folder(tmp_path / "src/day") < 16
    storage.close()


def test_a_writer_never_rides_on_a_fsync_that_started_before_its_rename(tmp_path, monkeypatch):
    fsyncs = FolderFsyncs(monkeypatch)
    storage = LocalStorage(tmp_path)
    (tmp_path / "src/day/t1").mkdir(parents=True)
    fsyncs.release.clear()
    first, first_done, first_errors = write_in_thread(storage, "src/day/t1/a.pdf")
    assert fsyncs.entered.wait(5)  # the first writer's fsync of t1 is in progress
    second, second_done, second_errors = write_in_thread(storage, "src/day/t1/b.pdf")
    assert not second_done.wait(0.2)
    fsyncs.release.set()
    first.join(5)
    second.join(5)
    assert first_done.is_set() and second_done.is_set() and first_errors == second_errors == []
    # The second rename came after the first fsync started: t1 was synced again for it.
    assert fsyncs.synced_folder(tmp_path / "src/day/t1") == 2
    storage.close()


def test_a_failed_round_holds_each_of_its_writers_and_the_lookup_too(tmp_path, monkeypatch):
    fsyncs = FolderFsyncs(monkeypatch)
    storage = LocalStorage(tmp_path)
    fsyncs.error = errno.EIO
    with pytest.raises(StorageUnavailableError) as info:
        write(storage, "src/t/a.pdf")
    assert info.value.category is ErrorCategory.STORAGE
    # The file is complete but its name may not be durable: not reported stored until it is.
    with pytest.raises(StorageUnavailableError):
        storage.find(["src/t/a.pdf"])
    fsyncs.error = None
    found = storage.find(["src/t/a.pdf"])
    assert found is not None and found.path == "src/t/a.pdf" and found.bytes == len(b"%PDF-1.7 body")
    storage.close()


def test_close_does_not_wait_for_or_break_a_writer_in_its_fsync(tmp_path, monkeypatch):
    fsyncs = FolderFsyncs(monkeypatch)
    storage = LocalStorage(tmp_path)
    fsyncs.release.clear()
    thread, done, errors = write_in_thread(storage, "src/t1/a.pdf")
    assert fsyncs.entered.wait(5)
    storage.close()
    fsyncs.release.set()
    thread.join(5)
    assert done.is_set() and errors == []
    write(storage, "src/t2/a.pdf")
    assert fsyncs.synced_folder(tmp_path / "src/t2") == 1


def test_files_are_published_with_their_content_after_many_concurrent_commits(tmp_path):
    storage = LocalStorage(tmp_path)
    bodies = {f"src/d/t{i % 5}/n{i}.pdf": f"%PDF-1.7 {i}".encode() for i in range(40)}
    threads = [threading.Thread(target=write, args=(storage, path, body)) for path, body in bodies.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    storage.close()
    for path, body in bodies.items():
        assert (tmp_path / path).read_bytes() == body
    assert list((tmp_path / ".incoming").iterdir()) == []
