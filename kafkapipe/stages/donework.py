"""Work already done: a task whose blob is already stored complete is not downloaded again.

A replayed or redelivered task may find its blob written by an earlier attempt; its presigned
URL may have expired since. Looking first turns that into a success without a request. The
inventory answers first where the download stage can reach it: a success recorded there (ours,
or imported from the legacy pipeline by ``kafkapipe inventory import``) is not fetched again;
then the storage backend itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from kafkapipe.config import Config
from kafkapipe.errors import ConfigError, ValidationError
from kafkapipe.inventory import Inventory, InventoryUnavailable, open_inventory
from kafkapipe.inventory.records import url_sha256
from kafkapipe.messages import STATUS_SUCCESS, DownloadTask
from kafkapipe.paths import stored_path
from kafkapipe.security.filetypes import canonical_extension
from kafkapipe.storage.base import Storage, StoredBlob

log = logging.getLogger(__name__)


class DoneWork(Protocol):
    def lookup(self, task: DownloadTask) -> StoredBlob | None:
        """The stored blob of ``task`` if it is complete, else None; storage errors propagate."""
        ...


class StoredInStorage:
    """Asks the storage backend itself (complete means published: see :meth:`Storage.stat`).

    A body is published under :func:`kafkapipe.paths.stored_path` of the task's ``blob_path``
    with the detected type's extension, which the task does not know: the task's own path is
    probed, then its name with each extension an allowed file type is stored under.
    """

    def __init__(self, storage: Storage, allowed_file_types: Iterable[str] = ()) -> None:
        self.storage = storage
        self.extensions = _extensions(allowed_file_types)

    def candidates(self, task: DownloadTask) -> list[str]:
        names = [task.blob_path, *(stored_path(task.blob_path, ext) for ext in self.extensions)]
        return list(dict.fromkeys(names))

    def lookup(self, task: DownloadTask) -> StoredBlob | None:
        return self.storage.find(self.candidates(task))


def _extensions(file_types: Iterable[str]) -> tuple[str, ...]:
    """The distinct extensions the given file types are stored under, in their order."""
    found: dict[str, None] = {}
    for file_type in file_types:
        try:
            found[canonical_extension(file_type)] = None
        except ValidationError:  # never stored, so never found
            continue
    return tuple(found)


class RecordedInInventory:
    """A success row with its size and digest; an unreachable inventory answers "not known"."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def lookup(self, task: DownloadTask) -> StoredBlob | None:
        try:
            row = self.inventory.lookup(task.task_id)
        except InventoryUnavailable as exc:  # downloading again is safe: storage is idempotent
            log.warning("inventory not reachable, not consulted for this task: %s", exc)
            return None
        if row is None or row.status != STATUS_SUCCESS or row.bytes is None or not row.sha256:
            return None
        if row.trace_id != task.trace_id or row.url_sha256 != url_sha256(task.attachment_url):
            log.warning("inventory row of task %s is for another trace or URL; not taken as done", task.task_id)
            return None
        return StoredBlob(bytes=row.bytes, sha256=row.sha256, path=row.blob_path)


class FirstFound:
    """Asks each source in turn; the first that knows the blob answers."""

    def __init__(self, *sources: DoneWork) -> None:
        self.sources = sources

    def lookup(self, task: DownloadTask) -> StoredBlob | None:
        for source in self.sources:
            found = source.lookup(task)
            if found is not None:
                return found
        return None


def inventory_for_lookups(config: Config) -> Inventory | None:
    """The inventory, when the download stage should and can consult it; never creates one.

    A SQLite inventory lives on the results stage's VM: where its file is absent there is
    nothing to ask. A PostgreSQL inventory that cannot be opened at start is left out (with a
    warning) rather than stopping the downloads.
    """
    if not config.stages.download.check_inventory:
        return None
    if config.inventory.backend == "sqlite" and not Path(config.inventory.path).is_file():
        return None
    try:
        return open_inventory(config.inventory)
    except (InventoryUnavailable, ConfigError) as exc:
        log.warning("inventory not consulted before downloads: %s", exc)
        return None


def done_work_for(storage: Storage, inventory: Inventory | None, allowed_file_types: Iterable[str] = ()) -> DoneWork:
    stored = StoredInStorage(storage, allowed_file_types)
    return stored if inventory is None else FirstFound(RecordedInInventory(inventory), stored)
