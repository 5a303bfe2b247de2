"""Local disk storage: temp file under ``<root>/.incoming``, fsync, ``os.replace``.

Bodies are written to ``.incoming`` (same filesystem, so the final rename is atomic) and
published under their final name only when complete. A process killed mid-download leaves
its temp file there, never beside the published files; :meth:`LocalStorage.sweep` removes
those once they are older than any live download can be.

Paths are checked by :func:`kafkapipe.paths.check_relative` and then walked folder by folder
with ``O_NOFOLLOW`` from the root: nothing is written outside the root, through a symlink, or
into folders a failed download created.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
import time
from pathlib import Path

from kafkapipe.errors import AuthError, PermanentError, StorageUnavailableError, ValidationError
from kafkapipe.paths import check_relative, stored_name
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


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_folder(root: Path, folders: list[str], *, create: bool, made: list[str] | None = None) -> int | None:
    """A descriptor of ``root/folders...`` reached one segment at a time, never through a symlink.

    ``create`` makes what is missing (appending each made folder's relative path to ``made``);
    without it a missing folder gives None. A symlink or a non-directory on the way is refused:
    nothing resolves outside the root, even if someone plants a link inside it.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, name in enumerate(folders):
            if create:
                try:
                    os.mkdir(name, dir_fd=fd)
                    if made is not None:
                        made.append("/".join(folders[: depth + 1]))
                except FileExistsError:
                    pass
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create:
                    raise
                os.close(fd)
                return None
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise ValidationError(
                        f"storage path refused: {'/'.join(folders[: depth + 1])!a} is a symlink or not a directory"
                    ) from None
                raise
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


WRITEBACK_EVERY = 16 * 1024 * 1024  # bytes between two early-writeback kicks of a large body


class LocalWriter(BlobWriter):
    def __init__(self, root: Path, segments: list[str], incoming: Path) -> None:
        self._root = root
        self._folders, self._name = segments[:-1], segments[-1]
        self._incoming = incoming
        try:
            incoming.mkdir(parents=True, exist_ok=True)  # makes the root too
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=incoming)
        except OSError as exc:  # our own temp directory: whatever is wrong there is not the task's fault
            error = _classify_os_error(exc, str(incoming))
            raise (_unavailable(exc, str(incoming)) if isinstance(error, PermanentError) else error) from None
        try:
            probe = _open_folder(root, self._folders, create=False)  # a planted symlink fails fast
        except BaseException as exc:
            os.close(fd)
            os.unlink(tmp)
            if isinstance(exc, OSError):
                raise _classify_os_error(exc, self._where) from None
            raise
        if probe is not None:
            os.close(probe)
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._done = False
        self._written = self._kicked = 0

    @property
    def _where(self) -> str:
        return str(self._root.joinpath(*self._folders, self._name))

    def use_extension(self, extension: str) -> None:
        self._name = stored_name(self._name, extension)

    def write(self, chunk: bytes) -> None:
        try:
            self._file.write(chunk)
            self._written += len(chunk)
            if self._written - self._kicked >= WRITEBACK_EVERY:
                self._kick_writeback()
        except OSError as exc:
            raise _classify_os_error(exc, self._where) from None

    def _kick_writeback(self) -> None:
        """Start writing what is written so far to disk, without waiting for it.

        A large body then reaches the disk while the rest downloads, and the commit's fsync
        only waits for the tail; the pages, never read again here, leave the page cache once
        clean. The fsync at commit is what makes the file durable, as before.
        """
        self._file.flush()
        os.posix_fadvise(self._file.fileno(), self._kicked, self._written - self._kicked, os.POSIX_FADV_DONTNEED)
        self._kicked = self._written

    def commit(self) -> None:
        made: list[str] = []
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            # Folders appear only now, so a refused or failed download leaves none behind.
            self._publish(made)
        except BaseException as exc:
            self.abort()
            self._remove_empty(made)
            if isinstance(exc, OSError):
                raise _classify_os_error(exc, self._where) from None
            raise
        self._done = True

    def _publish(self, made: list[str]) -> None:
        folder = _open_folder(self._root, self._folders, create=True, made=made)
        assert folder is not None
        try:
            # Relative to descriptors: a symlink swapped in after the check is never followed.
            incoming = os.open(self._incoming, _DIR_FLAGS)
            try:
                os.replace(self._tmp.name, self._name, src_dir_fd=incoming, dst_dir_fd=folder)
            finally:
                os.close(incoming)
            os.fsync(folder)
        finally:
            os.close(folder)

    def _remove_empty(self, made: list[str]) -> None:
        for relative in reversed(made):
            try:
                os.rmdir(self._root / relative)
            except OSError:  # another writer put something there meanwhile
                return

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
        return self.root.joinpath(*check_relative(blob_path))

    def open_writer(self, blob_path: str) -> LocalWriter:
        return LocalWriter(self.root, check_relative(blob_path), self.incoming)

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
        try:
            return stat.S_ISREG(os.lstat(self._path(blob_path)).st_mode)
        except FileNotFoundError:
            return False

    def stat(self, blob_path: str) -> StoredBlob | None:
        """A regular file at the final path is complete: it is only published by a rename after fsync."""
        segments = check_relative(blob_path)
        try:
            folder = _open_folder(self.root, segments[:-1], create=False)
        except ValidationError:
            return None  # a symlink on the way: never followed, so nothing is stored there
        except FileNotFoundError:
            return None  # no root yet: nothing was ever stored
        except OSError as exc:
            raise _classify_os_error(exc, str(self.root)) from None
        if folder is None:
            return None
        try:
            fd = os.open(segments[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise _classify_os_error(exc, str(self._path(blob_path))) from None
        finally:
            os.close(folder)
        return _digest(fd)

    def describe(self, blob_path: str) -> str:
        return str(self._path(blob_path))


def _digest(fd: int) -> StoredBlob | None:
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return StoredBlob(bytes=size, sha256=digest.hexdigest())
