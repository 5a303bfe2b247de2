"""File descriptors the supervisor shares with its workers across the fork."""

from __future__ import annotations

import contextlib
import os
import tempfile


def anonymous_file(name: str) -> int:
    """A file with no name on disk (memfd, else an unlinked temp file); close-on-exec, inherited by fork."""
    try:
        return os.memfd_create(name, os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd, path = tempfile.mkstemp(prefix=f"{name}-")
        os.unlink(path)
        return fd


def close_fd(fd: int) -> int:
    """Close ``fd`` if open, ignoring errors; returns -1 to store in its place."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    return -1
