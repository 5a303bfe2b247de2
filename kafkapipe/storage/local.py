"""Local disk storage: temp file under ``<root>/.incoming``, fsync, ``os.replace``.

Bodies are written to ``.incoming`` (same filesystem, so the final rename is atomic) and
published under their final name only when complete. A process killed mid-download leaves
its temp file there, never beside the published files; :meth:`LocalStorage.sweep` removes
those once they are older than any live download can be.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import time
from pathlib import Path

from kafkapipe.errors import AuthError, PermanentError, StorageUnavailableError
from kafkapipe.storage.base import BlobWriter, Storage, StoredBlob

INCOMING = ".incoming"
TEMP_PREFIX = ".tmp-"


# Our own disk cannot take the write: the task is fine, storage must be fixed (held, never dead-lettered).
UNAVAILABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EAGAIN})


def _classify_os_error(exc: OSError, where: str) -> Exception:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return AuthError(f"storage refused access to {where}: {exc.strerror}")
    if exc.errno in UNAVAILABLE_ERRNOS:
        return _unavailable(exc, where)
    return PermanentError(f"storage write failed at {where}: {exc.strerror}")


def _unavailable(exc: OSError, where: str) -> StorageUnavailableError:
    error = StorageUnavailableError(f"storage write failed at {where}: {exc.strerror}")
    error.reason = errno.errorcode.get(exc.errno or 0, "")  # type: ignore[attr-defined]
    return error


class LocalWriter(BlobWriter):
    def __init__(self, final: Path, incoming: Path) -> None:
        self._final = final
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _classify_os_error(exc, str(final.parent)) from None
        try:
            incoming.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=incoming)
        except OSError as exc:  # our own temp directory: whatever is wrong there is not the task's fault
            error = _classify_os_error(exc, str(incoming))
            if isinstance(error, PermanentError):
                error = _unavailable(exc, str(incoming))
            raise error from None
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._done = False

    def write(self, chunk: bytes) -> None:
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise _classify_os_error(exc, str(self._final)) from None

    def commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._final)
            dir_fd = os.open(self._final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self.abort()
            raise _classify_os_error(exc, str(self._final)) from None
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
        except OSError:
            pass
        self._tmp.unlink(missing_ok=True)


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.incoming = self.root / INCOMING

    def _path(self, blob_path: str) -> Path:
        return self.root / blob_path

    def open_writer(self, blob_path: str) -> LocalWriter:
        return LocalWriter(self._path(blob_path), self.incoming)

    def sweep(self, older_than: float) -> int:
        """Remove temp files untouched for ``older_than`` seconds; returns how many.

        Every download is cut off at ``download.total_timeout``, so a temp file older than that
        belongs to a process that died; other processes sharing the root are never disturbed.
        """
        cutoff = time.time() - older_than
        removed = 0
        try:
            entries = list(os.scandir(self.incoming))
        except (FileNotFoundError, NotADirectoryError):  # the writer reports a broken .incoming
            return 0
        for entry in entries:
            try:
                if entry.name.startswith(TEMP_PREFIX) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # another process swept it first
                continue
        return removed

    def exists(self, blob_path: str) -> bool:
        return self._path(blob_path).is_file()

    def stat(self, blob_path: str) -> StoredBlob | None:
        """A file at the final path is complete: it is only published by a rename after fsync."""
        path = self._path(blob_path)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as file:
                while chunk := file.read(1024 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _classify_os_error(exc, str(path)) from None
        return StoredBlob(bytes=size, sha256=digest.hexdigest())

    def describe(self, blob_path: str) -> str:
        return str(self._path(blob_path))
