"""Local disk storage: temp file under ``<root>/.incoming``, fsync, ``os.replace``.

Bodies are written to ``.incoming`` (same filesystem, so the final rename is atomic) and
published under their final name only when complete. A process killed mid-download leaves
its temp file there, never beside the published files; :meth:`LocalStorage.sweep` removes
those once they are older than any live download can be.

Paths are checked by :func:`kafkapipe.paths.check_relative` and then walked folder by folder
with ``O_NOFOLLOW`` from the root: nothing is written outside the root, through a symlink, or
into folders a failed download created.

Durability: the file is fsynced before its rename, so a published name never has partial
content; after the rename the folder renamed into, its parent and the parent of every folder
made are fsynced by a :class:`FolderSyncer` shared by the storage's writers (group commit), and
:meth:`LocalWriter.commit` returns only once that is done.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import random
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

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
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk(root: str, folders: list[str], *, create: bool, made: list[str] | None = None) -> list[int] | None:
    """Descriptors of ``root`` and of each of ``folders`` below it, reached one segment at a time,
    never through a symlink; the caller closes them.

    ``create`` makes what is missing (appending each made folder's relative path to ``made``);
    without it a missing folder gives None. A symlink or a non-directory on the way is refused:
    nothing resolves outside the root, even if someone plants a link inside it. A folder is
    opened first and made only when missing: the common case, an existing folder, costs one
    ``openat`` and no ``mkdir`` (which locks the parent even when it fails).
    """
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for depth, name in enumerate(folders):
            try:
                fds.append(_open_segment(fds[-1], name))
                continue
            except FileNotFoundError:
                if not create:
                    _close_all(fds)
                    return None
            except _Refused:
                raise _refused(folders[: depth + 1]) from None
            try:
                os.mkdir(name, dir_fd=fds[-1])
                if made is not None:
                    made.append("/".join(folders[: depth + 1]))
            except FileExistsError:  # another writer made it meanwhile
                pass
            try:
                fds.append(_open_segment(fds[-1], name))
            except _Refused:
                raise _refused(folders[: depth + 1]) from None
    except BaseException:
        _close_all(fds)
        raise
    return fds


class _Refused(Exception):
    pass


def _open_segment(parent: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _Refused from None
        raise


def _refused(folders: list[str]) -> ValidationError:
    return ValidationError(f"storage path refused: {'/'.join(folders)!a} is a symlink or not a directory")


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:  # the fsync said what there was to say about this folder
        pass


def _absent(path: str) -> bool:
    """Whether nothing is at ``path``, by one ``stat``: a miss needs no walk.

    Only an absence is trusted (whatever the path resolves through, nothing is there); anything
    found is then walked without following symlinks.
    """
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def _sync_keys(folders: list[str], made: list[str]) -> list[str]:
    """The folders (relative, ``""`` the root) whose fsync makes a rename into ``folders`` durable.

    The folder renamed into; its parent, which holds its entry (a folder another writer made
    moments ago is durable only once that parent is synced); the parent of every folder made.
    """
    keys = {"/".join(folders): None, "/".join(folders[:-1]): None} if folders else {"": None}
    for relative in made:
        keys["/".join(relative.split("/")[:-1])] = None
    return list(keys)


_temp_names = itertools.count()


def _create_temp(incoming: str) -> tuple[int, str]:
    """A new temp file in ``incoming``: exclusive, not through a symlink, readable by us only."""
    while True:
        name = f"{TEMP_PREFIX}{os.getpid()}-{next(_temp_names)}-{random.getrandbits(32):08x}"
        try:
            return os.open(os.path.join(incoming, name), _TEMP_FLAGS, 0o600), name
        except FileExistsError:  # left by a process that had our pid: take the next name
            continue


WRITEBACK_EVERY = 16 * 1024 * 1024  # bytes between two early-writeback kicks of a large body


class LocalWriter(BlobWriter):
    def __init__(self, root: Path, segments: list[str], incoming: Path, syncer: FolderSyncer) -> None:
        self._root = root
        self._folders, self._name = segments[:-1], segments[-1]
        self._incoming = incoming
        self._syncer = syncer
        try:
            fd, self._tmp_name = self._temp()
        except OSError as exc:  # our own temp directory: whatever is wrong there is not the task's fault
            error = _classify_os_error(exc, str(incoming))
            raise (_unavailable(exc, str(incoming)) if isinstance(error, PermanentError) else error) from None
        try:
            self._probe()  # a planted symlink fails fast
        except BaseException as exc:
            os.close(fd)
            os.unlink(os.path.join(incoming, self._tmp_name))
            if isinstance(exc, OSError):
                raise _classify_os_error(exc, self._where) from None
            raise
        self._file = os.fdopen(fd, "wb")
        self._done = False
        self._written = self._kicked = 0

    def _temp(self) -> tuple[int, str]:
        incoming = str(self._incoming)
        try:
            return _create_temp(incoming)
        except FileNotFoundError:  # the first write, or .incoming removed since: made again
            self._incoming.mkdir(parents=True, exist_ok=True)  # makes the root too
            return _create_temp(incoming)

    def _probe(self) -> None:
        if _absent(os.path.join(self._root, *self._folders)):
            return  # the usual case, a new trace folder: the walk at commit checks every segment
        fds = _walk(str(self._root), self._folders, create=False)
        if fds is not None:
            _close_all(fds)

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
        """fsync the file, rename it into its folder, and return once the folder's fsync round is done.

        The file's own fsync comes before the rename: a published name never has partial content
        (the "already stored" lookup trusts it). The folders' fsyncs are shared with the other
        writers of the storage (:class:`FolderSyncer`).
        """
        made: list[str] = []
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            # Folders appear only now, so a refused or failed download leaves none behind.
            to_sync = self._publish(made)
        except BaseException as exc:
            self.abort()
            self._remove_empty(made)
            if isinstance(exc, OSError):
                raise _classify_os_error(exc, self._where) from None
            raise
        self._done = True
        self._syncer.sync(to_sync, self._where)

    def _publish(self, made: list[str]) -> dict[str, int]:
        """Rename the temp file into its folder; the descriptors to fsync, by folder (for the syncer)."""
        fds = _walk(str(self._root), self._folders, create=True, made=made)
        assert fds is not None
        try:
            # Relative to descriptors: a symlink swapped in after the check is never followed.
            incoming = os.open(self._incoming, _DIR_FLAGS)
            try:
                os.replace(self._tmp_name, self._name, src_dir_fd=incoming, dst_dir_fd=fds[-1])
            finally:
                os.close(incoming)
        except BaseException:
            _close_all(fds)
            raise
        return _hand_over(fds, self._folders, made)

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
        try:
            os.unlink(os.path.join(self._incoming, self._tmp_name))
        except FileNotFoundError:
            pass


def _hand_over(fds: list[int], folders: list[str], made: list[str]) -> dict[str, int]:
    """Of the walk's descriptors (root first), those of :func:`_sync_keys`; the others are closed."""
    wanted = set(_sync_keys(folders, made))
    kept: dict[str, int] = {}
    for depth, fd in enumerate(fds):
        key = "/".join(folders[:depth])
        if key in wanted:
            kept[key] = fd
        else:
            os.close(fd)
    return kept


class _Pass:
    """One fsync of one folder and the writers it covers."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: OSError | None = None


class FolderSyncer:
    """Folder fsyncs shared by the writers of a storage (group commit, per folder).

    A writer needing a folder synced after its rename joins that folder's next fsync if it has
    not started yet (so it starts after the rename); otherwise it makes one, which starts once
    the fsync in progress for that folder ends. Folders shared by many writers (the day's, the
    source's) are so synced once per round of renames instead of once per writer, while
    different folders are synced concurrently, by the writers themselves: on ext4 a folder's
    fsync forces a journal commit, and concurrent ones share it; a single thread syncing them in
    turn would commit once per folder and make every writer wait for all of them.

    A writer returns only once a fsync of each of its folders that started after its rename
    finished, so a verdict is never reported before the folder holding its file is durable. A
    failed fsync raises :class:`StorageUnavailableError` in every writer it covers (held, never
    dead-lettered). Waiting is bounded: per folder, the fsync in progress and the writer's own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, _Pass] = {}  # folder → its fsync not started yet
        self._running: dict[str, _Pass] = {}  # folder → its fsync in progress

    def sync(self, folders: dict[str, int], where: str) -> None:
        """fsync ``folders`` (relative path → descriptor, closed here) as described above."""
        error: OSError | None = None
        try:
            for key, fd in folders.items():
                error = self._sync_one(key, fd) or error
        finally:
            for fd in folders.values():
                _close_quietly(fd)
        if error is not None:
            raise _unavailable(error, f"{where} (folder fsync)")

    def _sync_one(self, key: str, fd: int) -> OSError | None:
        with self._lock:
            joined = self._next.get(key)
            if joined is None:
                mine = self._next[key] = _Pass()
                before = self._running.get(key)
        if joined is not None:
            joined.done.wait()
            return joined.error
        if before is not None:
            before.done.wait()
        with self._lock:
            del self._next[key]  # from now on a writer makes the next one: this one may predate it
            self._running[key] = mine
        try:
            os.fsync(fd)
        except OSError as exc:
            mine.error = exc
        finally:
            with self._lock:
                del self._running[key]
            mine.done.set()
        return mine.error

    def close(self) -> None:
        """Nothing to stop: every fsync runs in a writer's own thread."""


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.incoming = self.root / INCOMING
        self._syncer = FolderSyncer()

    def _path(self, blob_path: str) -> Path:
        return self.root.joinpath(*check_relative(blob_path))

    def open_writer(self, blob_path: str) -> LocalWriter:
        return LocalWriter(self.root, check_relative(blob_path), self.incoming, self._syncer)

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
        found = self.find([blob_path])
        return None if found is None else attrs.evolve(found, path=None)

    def find(self, blob_paths: Sequence[str]) -> StoredBlob | None:
        """The first of ``blob_paths`` published complete (see :meth:`stat`), with its ``path``.

        Each folder is walked once for all the names in it, and a folder that does not exist
        (a new trace's, the common case) costs one ``stat``. A file found is reported only once
        its folder and that folder's parent are synced: a rename whose folder fsync failed (its
        writer was held) leaves a complete file, but its name is durable only after that.
        """
        folders: dict[tuple[str, ...], list[int] | None] = {}
        try:
            for blob_path in blob_paths:
                segments = check_relative(blob_path)
                key = tuple(segments[:-1])
                if key not in folders:
                    folders[key] = self._open_existing(segments[:-1])
                fds = folders[key]
                if fds is None:
                    continue
                found = self._file_in(fds[-1], segments[-1], blob_path)
                if found is not None:
                    folders[key] = None  # handed to the syncer, which closes them
                    self._syncer.sync(_hand_over(fds, segments[:-1], []), self.describe(blob_path))
                    return attrs.evolve(found, path=blob_path)
            return None
        finally:
            for fds in folders.values():
                if fds is not None:
                    _close_all(fds)

    def _open_existing(self, folders: list[str]) -> list[int] | None:
        """The walk's descriptors to an existing folder, None where nothing can be stored."""
        if _absent(os.path.join(self.root, *folders)):
            return None
        try:
            return _walk(str(self.root), folders, create=False)
        except ValidationError:
            return None  # a symlink on the way: never followed, so nothing is stored there
        except FileNotFoundError:
            return None  # no root yet: nothing was ever stored
        except OSError as exc:
            raise _classify_os_error(exc, str(self.root)) from None

    def _file_in(self, folder: int, name: str, blob_path: str) -> StoredBlob | None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise _classify_os_error(exc, str(self._path(blob_path))) from None
        return _digest(fd)

    def describe(self, blob_path: str) -> str:
        return str(self._path(blob_path))

    def close(self) -> None:
        self._syncer.close()


def _digest(fd: int) -> StoredBlob | None:
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return StoredBlob(bytes=size, sha256=digest.hexdigest())
