"""The storage interface every backend implements.

A writer receives the body chunk by chunk and publishes it atomically on
:meth:`BlobWriter.commit`: until then nothing is visible under the final
name, and :meth:`BlobWriter.abort` (or an exception inside the ``with``
block) leaves nothing behind. Writing the same path twice yields the same
bytes at the same path, so redelivered tasks are harmless.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType

import attrs


@attrs.frozen
class StoredBlob:
    """A complete, published blob: its size and, where the backend knows it, its sha256.

    ``path`` is the storage path it was found under, where the finder knows it.
    """

    bytes: int
    sha256: str | None = None
    path: str | None = None


class BlobWriter(abc.ABC):
    @abc.abstractmethod
    def write(self, chunk: bytes) -> None:
        """Append one chunk; raises a categorised PipelineError on failure."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Publish everything written under the final name, atomically."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard everything written; never raises."""

    def use_extension(self, extension: str) -> None:  # noqa: B027 - optional hook
        """Store under the opened name with ``extension`` (:func:`kafkapipe.paths.stored_path`).

        Called once the body's type is known, before the first write; a writer never
        told keeps the name it was opened with.
        """

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


class Storage(abc.ABC):
    @abc.abstractmethod
    def open_writer(self, blob_path: str) -> BlobWriter:
        """A writer for ``blob_path`` (relative, already validated by kafkapipe.paths)."""

    @abc.abstractmethod
    def exists(self, blob_path: str) -> bool:
        """Whether a committed object is at ``blob_path``."""

    @abc.abstractmethod
    def describe(self, blob_path: str) -> str:
        """Where ``blob_path`` lives, for logs and the CLI (no secrets)."""

    def stat(self, blob_path: str) -> StoredBlob | None:
        """The blob at ``blob_path`` if it is published complete; None if absent or unknown.

        Backends that cannot tell keep this default, and their tasks are always downloaded.
        """
        return None

    def find(self, blob_paths: Sequence[str]) -> StoredBlob | None:
        """The first of ``blob_paths`` published complete, with its ``path``; None if none is.

        The default asks :meth:`stat` for each in turn; a backend where every ask is a round
        trip answers them all at once.
        """
        for blob_path in blob_paths:
            found = self.stat(blob_path)
            if found is not None:
                return attrs.evolve(found, path=blob_path)
        return None

    def sweep(self, older_than: float) -> int:
        """Remove leftovers of writers that died more than ``older_than`` seconds ago.

        Backends whose uncommitted data expires by itself (Azure Blob) keep this default.
        """
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; default does nothing."""
