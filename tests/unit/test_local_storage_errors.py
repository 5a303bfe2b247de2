"""Local storage failures are classified by whose fault they are: ours hold, the task's do not."""

from __future__ import annotations

import errno
import hashlib

import pytest

from kafkapipe.errors import ErrorCategory
from kafkapipe.storage.local import LocalStorage, _classify_os_error


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (errno.ENOSPC, ErrorCategory.STORAGE),
        (errno.EDQUOT, ErrorCategory.STORAGE),
        (errno.EROFS, ErrorCategory.STORAGE),
        (errno.EIO, ErrorCategory.STORAGE),
        (errno.EACCES, ErrorCategory.AUTH),
        (errno.EPERM, ErrorCategory.AUTH),
        (errno.ENAMETOOLONG, ErrorCategory.PERMANENT),
    ],
)
def test_os_errors(code, category):
    error = _classify_os_error(OSError(code, "boom"), "/x")
    assert error.category is category


def test_a_broken_incoming_directory_holds(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / ".incoming").write_text("a file where our temp directory must be")
    assert storage.sweep(0) == 0
    with pytest.raises(Exception) as info:
        storage.open_writer("a/b.pdf")
    assert getattr(info.value, "category", None) is ErrorCategory.STORAGE


def test_stat_sees_only_published_files(tmp_path):
    storage = LocalStorage(tmp_path)
    assert storage.stat("a/b.pdf") is None
    with storage.open_writer("a/b.pdf") as writer:
        writer.write(b"%PDF-1.7 hello")
        assert storage.stat("a/b.pdf") is None, "not published before commit"
        writer.commit()
    stored = storage.stat("a/b.pdf")
    assert stored is not None and stored.bytes == 14
    assert stored.sha256 == hashlib.sha256(b"%PDF-1.7 hello").hexdigest()
