"""Work already done: a task whose blob is already stored complete is not downloaded again.

A replayed or redelivered task may find its blob written by an earlier attempt; its presigned
URL may have expired since. Looking first turns that into a success without a request. The
lookup sits behind :class:`DoneWork` so another source (an inventory) can answer first later.
"""

from __future__ import annotations

from typing import Protocol

from kafkapipe.messages import DownloadTask
from kafkapipe.storage.base import Storage, StoredBlob


class DoneWork(Protocol):
    def lookup(self, task: DownloadTask) -> StoredBlob | None:
        """The stored blob of ``task`` if it is complete, else None; storage errors propagate."""
        ...


class StoredInStorage:
    """Asks the storage backend itself (complete means published: see :meth:`Storage.stat`)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def lookup(self, task: DownloadTask) -> StoredBlob | None:
        return self.storage.stat(task.blob_path)
