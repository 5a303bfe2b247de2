"""Where a task's attachment is stored, relative to the storage root.

``<source_system>/<yyyy>/<mm>/<dd>/<trace_id>/<task_id>-<file name>``: the
date is the event's own timestamp, so the path depends on nothing but the
task and the same event ingested twice lands in the same place. The task id
makes it unique; every segment is reduced to ``[A-Za-z0-9._-]`` with no
``..`` and no leading dot, and the whole stays within 1024 bytes.
"""

from __future__ import annotations

import posixpath
import re
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

MAX_PATH = 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")
_VALID = re.compile(r"^[A-Za-z0-9._/-]+$")


def safe_segment(text: str, limit: int, fallback: str = "_") -> str:
    cleaned = _DOTS.sub(".", _UNSAFE.sub("_", text)).lstrip(".-")[:limit].rstrip(".")
    return cleaned or fallback


def file_name(url: str) -> str:
    """The URL's last path segment, decoded and made safe; ``attachment`` when there is none."""
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    return safe_segment(unquote(posixpath.basename(path)), 120, "attachment")


def blob_path(task_id: str, trace_id: str, url: str, source_system: str, when: datetime) -> str:
    day = when.astimezone(UTC)
    path = "/".join(
        (
            safe_segment(source_system, 64, "unknown"),
            f"{day:%Y/%m/%d}",
            safe_segment(trace_id, 128),
            f"{task_id}-{file_name(url)}",
        )
    )
    if not is_valid(path):  # pragma: no cover - guarded by construction; a bug if reached
        raise ValueError(f"constructed an invalid blob path for task {task_id}")
    return path


def is_valid(path: str) -> bool:
    return (
        bool(_VALID.match(path))
        and not path.startswith("/")
        and ".." not in path.split("/")
        and all(path.split("/"))
        and len(path.encode()) <= MAX_PATH
    )
