"""Where a task's attachment is stored, relative to the storage root.

``<source_system>/<yyyy>/<mm>/<dd>/<trace_id>/<task_id>-<file name>``: the
date is the event's own timestamp, so the path depends on nothing but the
task and the same event ingested twice lands in the same place. The task id
makes it unique; every segment is reduced to ``[A-Za-z0-9._-]`` with no
``..`` and no leading dot, and the whole stays within 1024 bytes.

The file is stored under :func:`stored_path`: the same name with the
extension of the type its bytes showed (never the URL's), so ``invoice.scr``
holding a PDF is stored as ``invoice.pdf``. :func:`check_relative` is the
storage backends' own guard against a path that leaves their root.
"""

from __future__ import annotations

import posixpath
import re
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from kafkapipe.errors import ValidationError
from kafkapipe.memo import remember

MAX_PATH = 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")
# Whole-string match: with ``$`` a trailing newline would pass.
_VALID = re.compile(r"[A-Za-z0-9._/-]+")
# Controls, backslash (a separator on Windows shares and in some HTTP stacks), percent (a proxy
# that decodes twice turns %2e%2e into ..), and the format characters that make a name display
# differently from what it is.
_HOSTILE = re.compile(r"[\x00-\x1f\x7f-\x9f\\%\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


# Already safe: nothing below would change it (no unsafe character, no "..", no leading dot or
# dash, no trailing dot), the common case for trace ids and source systems.
_ALREADY_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def safe_segment(text: str, limit: int, fallback: str = "_") -> str:
    if len(text) <= limit and _ALREADY_SAFE.fullmatch(text) and ".." not in text and text[-1] != ".":
        return text
    cleaned = _DOTS.sub(".", _UNSAFE.sub("_", text)).lstrip(".-")[:limit].rstrip(".")
    return cleaned or fallback


def file_name(url: str) -> str:
    """The URL's last path segment, decoded and made safe; ``attachment`` when there is none."""
    m = _PLAIN_URL_NAME.fullmatch(url)
    name = (m.group(2) or "") if m and m.group(1).isascii() else posixpath.basename(url_path(url))
    return safe_segment(unquote(name) if "%" in name else name, 120, "attachment")


# ``scheme://netloc/path`` with an ASCII netloc: the path urlsplit would return, found by one
# regex match. Anything else (spaces or controls, which urlsplit strips; brackets and non-ASCII
# hosts, which it checks and may refuse; no authority) goes through urlsplit itself.
_PLAIN_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#\[\]]*)(/[^?#]*)?(?=[?#]|\Z)")
_C0_OR_SPACE = re.compile(r"[\x00-\x20]")
# The same URLs as _PLAIN_URL with no control or space anywhere, in one match that also finds
# the path's last segment (what posixpath.basename of url_path gives).
_PLAIN_URL_NAME = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#\[\]\x00-\x20]*)"
    r"(?:/(?:[^?#\x00-\x20]*/)?([^/?#\x00-\x20]*))?"
    r"(?:[?#][^\x00-\x20]*)?"
)


def url_path(url: str) -> str:
    """``urlsplit(url).path``, or "" for a URL urlsplit refuses."""
    m = _PLAIN_URL.match(url)
    if m and m.group(1).isascii() and not _C0_OR_SPACE.search(url):
        return m.group(2) or ""
    try:
        return urlsplit(url).path
    except ValueError:
        return ""


def blob_path(task_id: str, trace_id: str, url: str, source_system: str, when: datetime) -> str:
    path = (
        f"{_source_segment(source_system)}/{_day_folder_of(when.astimezone(UTC))}/"
        f"{safe_segment(trace_id, 128)}/{task_id}-{file_name(url)}"
    )
    if not is_valid(path):  # pragma: no cover - guarded by construction; a bug if reached
        raise ValueError(f"constructed an invalid blob path for task {task_id}")
    return path


# Events come from a few source systems and mostly from the last few days: these two segments
# are looked up, not rebuilt, for nearly every task. Each is a function of its key alone; the
# bound keeps a flood of distinct values from growing them (it then costs a rebuild, not memory).
_REMEMBERED = 1024
_SOURCE_SEGMENTS: dict[str, str] = {}
_DAY_FOLDERS: dict[int, str] = {}


def _source_segment(source_system: str) -> str:
    segment = _SOURCE_SEGMENTS.get(source_system)
    if segment is None:
        segment = safe_segment(source_system, 64, "unknown")
        if len(source_system) <= 64:  # a longer one is refused or cut anyway: not worth keeping
            remember(_SOURCE_SEGMENTS, source_system, segment, _REMEMBERED)
    return segment


def _day_folder_of(day: datetime) -> str:
    key = day.toordinal()  # the date and nothing else: what the folder is made of
    folder = _DAY_FOLDERS.get(key)
    if folder is None:
        folder = remember(_DAY_FOLDERS, key, _day_folder(day), _REMEMBERED)
    return folder


def _day_folder(day: datetime) -> str:
    if day.year < 1000:  # strftime does not pad such years; keep its spelling
        return f"{day:%Y/%m/%d}"
    return f"{day.year}/{day.month:02d}/{day.day:02d}"


# Segments of [A-Za-z0-9._-] that do not start with a dot, so none is "." or "..", none is empty
# and the path is not absolute: every path this matches (within MAX_PATH; all ASCII, so its
# length is its size in bytes) passes the rules of is_valid. What blob_path builds always does.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")


def is_valid(path: str) -> bool:
    if len(path) <= MAX_PATH and _PLAIN_PATH.fullmatch(path):
        return True
    return _is_valid(path)


def _is_valid(path: str) -> bool:
    return (
        bool(_VALID.fullmatch(path))
        and not path.startswith("/")
        and not {".", ".."} & set(path.split("/"))
        and all(path.split("/"))
        and len(path.encode()) <= MAX_PATH
    )


def stored_name(name: str, extension: str) -> str:
    """``name`` with its extension replaced by ``extension``; inner dots become ``_``.

    ``extension`` is :func:`kafkapipe.security.filetypes.canonical_extension` of the
    detected type. No double extension survives (``invoice.pdf.exe`` holding a PDF is
    ``invoice_pdf.pdf``).
    """
    if not re.fullmatch(r"[a-z0-9]{1,8}", extension):
        raise ValueError(f"not an extension: {extension!a}")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{stem.replace('.', '_') or 'attachment'}.{extension}"


def stored_path(blob_path: str, extension: str) -> str:
    """Where a task's body is stored: its blob path, named with the detected type's extension."""
    folder, slash, name = blob_path.rpartition("/")
    return f"{folder}{slash}{stored_name(name, extension)}"


def check_relative(path: str) -> list[str]:
    """The segments of a storage-relative path; ValidationError when it could leave the root.

    Refused: absolute, empty, ``.`` or ``..`` segments, backslashes, control and
    bidi/zero-width characters, more than :data:`MAX_PATH` bytes.
    """
    if not path or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise ValidationError(f"storage path refused: empty or longer than {MAX_PATH} bytes")
    if _HOSTILE.search(path):
        raise ValidationError(f"storage path refused: control, backslash, percent or format character in {path!a}")
    segments = path.split("/")
    if path.startswith("/") or any(s in ("", ".", "..") for s in segments):
        raise ValidationError(f"storage path refused: absolute, empty, '.' or '..' segment in {path!a}")
    return segments
