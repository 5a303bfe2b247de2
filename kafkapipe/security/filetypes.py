"""File types from the first bytes, cross-checked against the URL and Content-Type.

Detection (:func:`detect_type`, on the first :data:`SNIFF_BYTES` of the body):

1. ZIP containers (``PK\\x03\\x04`` …) are told apart by the names of their
   first local file headers: ``word/`` → docx, ``xl/`` → xlsx, ``ppt/`` →
   pptx (OOXML puts ``[Content_Types].xml`` first; seen without a part name
   the container is ``ooxml``), an ``XACTDOC`` entry → esx (an Xactimate
   project is a ZIP container), OpenDocument by its ``mimetype`` entry;
   anything else is ``zip``.
2. OLE2 compound files (``D0 CF 11 E0 A1 B1 1A E1``) are told apart by the
   stream names in their first directory sector when it lies inside the
   sniffed bytes: ``WordDocument`` → doc, ``Workbook``/``Book`` → xls,
   ``PowerPoint Document`` → ppt, ``__substg1.0_*`` → msg; otherwise the
   ``filetype`` library's guess, otherwise the generic ``ole2``.
3. ISO-BMFF ``ftyp`` boxes with a HEIF brand (heic, heix, hevc, hevx, heim,
   heis; or mif1/msf1 with one of those beside it) → heic.
4. ``%PDF-`` within the first 1024 bytes → pdf (readers accept leading junk).
5. Everything else: the maintained ``filetype`` library (jpg, png, gif, tiff
   as ``tiff``, exe, elf, …).
6. Text, when nothing matched: UTF-8 (or UTF-16 with a BOM, or cp1252) with
   no control characters other than tab, LF, CR, FF and SUB → ``txt``;
   text that starts like HTML, XML or SVG is ``html``/``xml``/``svg``, so an
   error page served with status 200 is never taken for a document.

Cross-check policy (:func:`check_type`):

- The bytes decide. The URL path's extension (of the final URL and of the
  original one when they differ) and the ``Content-Type`` are *claims*.
- A claim that names no known type is ignored: unknown extensions, no
  extension, and generic content types (``application/octet-stream``,
  ``binary/octet-stream``, ``application/x-download`` …).
- A claim equal to the detected type agrees. A claim of a container's generic
  type agrees with any member (``application/zip`` for a docx, ``.zip`` for
  an esx, ``text/plain`` for CSV-like text). A generic detection is refined
  by a specific claim of its family (a ``zip`` named ``.esx`` or ``.docx`` is
  that type; an ``ole2`` file named ``.xls`` is xls; ``txt`` claimed as
  ``text/html`` is html).
- Any other disagreement is a mismatch and is refused
  (:class:`~kafkapipe.errors.ValidationError`), as is a final type not in
  ``allowed_file_types``, an empty body, and bytes nothing recognises.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Iterable
from urllib.parse import unquote

import filetype

from kafkapipe.errors import ValidationError

SNIFF_BYTES = 64 * 1024

ZIP_FAMILY = frozenset({"zip", "ooxml", "docx", "xlsx", "pptx", "esx", "odt", "ods", "odp", "epub"})
OLE_FAMILY = frozenset({"ole2", "doc", "xls", "ppt", "msg"})
TEXT_FAMILY = frozenset({"txt", "html", "xml", "svg"})
# generic detection → the specific types a claim may refine it to
REFINABLE = {
    "zip": frozenset({"docx", "xlsx", "pptx", "esx"}),
    "ooxml": frozenset({"docx", "xlsx", "pptx"}),
    "ole2": frozenset({"doc", "xls", "ppt", "msg"}),
    "txt": frozenset({"html", "xml", "svg"}),
}
# generic claim → the detected types it agrees with
GENERIC_CLAIMS = {"zip": ZIP_FAMILY, "ole2": OLE_FAMILY, "txt": TEXT_FAMILY}
# what an unrefined generic detection is finally called
FINAL_NAME = {"ooxml": "zip"}

EXTENSIONS = {
    "pdf": "pdf",
    "jpg": "jpg",
    "jpeg": "jpg",
    "jpe": "jpg",
    "jfif": "jpg",
    "png": "png",
    "gif": "gif",
    "tif": "tiff",
    "tiff": "tiff",
    "heic": "heic",
    "heif": "heic",
    "docx": "docx",
    "xlsx": "xlsx",
    "pptx": "pptx",
    "doc": "doc",
    "xls": "xls",
    "ppt": "ppt",
    "msg": "msg",
    "zip": "zip",
    "esx": "esx",
    "txt": "txt",
    "text": "txt",
    "csv": "txt",
    "tsv": "txt",
    "log": "txt",
    "json": "txt",
    "xml": "xml",
    "htm": "html",
    "html": "html",
    "svg": "svg",
    "exe": "exe",
    "dll": "exe",
}

CONTENT_TYPES = {
    "application/pdf": "pdf",
    "application/x-pdf": "pdf",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/pjpeg": "jpg",
    "image/png": "png",
    "image/x-png": "png",
    "image/gif": "gif",
    "image/tiff": "tiff",
    "image/tif": "tiff",
    "image/heic": "heic",
    "image/heif": "heic",
    "image/heic-sequence": "heic",
    "image/heif-sequence": "heic",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/msword": "doc",
    "application/vnd.ms-excel": "xls",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.ms-outlook": "msg",
    "application/vnd.ms-office": "ole2",
    "application/x-ole-storage": "ole2",
    "application/cdfv2": "ole2",
    "application/zip": "zip",
    "application/x-zip": "zip",
    "application/x-zip-compressed": "zip",
    "multipart/x-zip": "zip",
    "text/plain": "txt",
    "text/csv": "txt",
    "application/json": "txt",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/xml": "xml",
    "application/xml": "xml",
    "image/svg+xml": "svg",
    "application/x-msdownload": "exe",
    "application/x-dosexec": "exe",
}

_FILETYPE_NAMES = {"tif": "tiff", "jpx": "jp2"}
_HEIF_BRANDS = frozenset({"heic", "heix", "hevc", "hevx", "heim", "heis"})
_HEIF_GENERIC = frozenset({"mif1", "msf1"})  # also used by AVIF: needs a HEVC brand beside it
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_LOCAL = b"PK\x03\x04"
_BINARY_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x19\x1b-\x1f\x7f]")


def detect_type(head: bytes) -> str | None:
    """The type the first bytes show, or None when nothing recognises them."""
    if not head:
        return None
    if head.startswith(_ZIP_LOCAL):
        return _zip_kind(head)
    if head.startswith((b"PK\x05\x06", b"PK\x07\x08")):
        return "zip"
    if head.startswith(_OLE_MAGIC):
        return _ole_kind(head)
    if _is_heif(head):
        return "heic"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    kind = filetype.guess(head)
    if kind is not None:
        return _FILETYPE_NAMES.get(kind.extension, kind.extension)
    return _text_kind(head)


def _zip_names(head: bytes, limit: int = 32) -> list[str]:
    names: list[str] = []
    offset = 0
    while len(names) < limit and offset + 30 <= len(head):
        if head[offset : offset + 4] != _ZIP_LOCAL:
            offset = head.find(_ZIP_LOCAL, offset + 1)
            if offset < 0:
                break
            continue
        name_len, extra_len = struct.unpack_from("<HH", head, offset + 26)
        name = head[offset + 30 : offset + 30 + name_len]
        names.append(name.decode("utf-8", "replace"))
        flags, _, csize = struct.unpack_from("<HH8xI", head, offset + 6)
        skip = 30 + name_len + extra_len
        if flags & 0x08 or csize == 0xFFFFFFFF:
            offset = head.find(_ZIP_LOCAL, offset + skip)  # sizes follow the data: search
            if offset < 0:
                break
        else:
            offset += skip + csize
    return names


def _zip_kind(head: bytes) -> str:
    names = _zip_names(head)
    for name in names:
        if name.startswith("word/"):
            return "docx"
        if name.startswith("xl/"):
            return "xlsx"
        if name.startswith("ppt/"):
            return "pptx"
        if name.upper().startswith("XACTDOC"):
            return "esx"
    if names and names[0] == "mimetype":
        kind = filetype.guess(head)
        if kind is not None and kind.extension in ZIP_FAMILY:
            return kind.extension
    if "[Content_Types].xml" in names:
        return "ooxml"
    return "zip"


def _ole_kind(head: bytes) -> str:
    names = _ole_directory_names(head)
    if "WordDocument" in names:
        return "doc"
    if "Workbook" in names or "Book" in names:
        return "xls"
    if "PowerPoint Document" in names:
        return "ppt"
    if any(n.startswith("__substg1.0_") for n in names):
        return "msg"
    kind = filetype.guess(head)
    if kind is not None and kind.extension in OLE_FAMILY:
        return kind.extension
    return "ole2"


def _ole_directory_names(head: bytes) -> set[str]:
    if len(head) < 512:
        return set()
    sector_shift, first_dir = struct.unpack_from("<H", head, 30)[0], struct.unpack_from("<I", head, 48)[0]
    if sector_shift not in (9, 12) or first_dir >= 0xFFFFFFFA:
        return set()
    size = 1 << sector_shift
    start = (first_dir + 1) * size
    sector = head[start : start + size]
    names: set[str] = set()
    for entry in range(0, len(sector) - 127, 128):
        length = struct.unpack_from("<H", sector, entry + 64)[0]
        if 2 <= length <= 64:
            names.add(sector[entry : entry + length - 2].decode("utf-16-le", "replace"))
    return names


def _is_heif(head: bytes) -> bool:
    if len(head) < 16 or head[4:8] != b"ftyp":
        return False
    box = min(int.from_bytes(head[0:4], "big"), len(head))
    major = head[8:12].decode("latin-1")
    compatible = {head[i : i + 4].decode("latin-1") for i in range(16, box - 3, 4)}
    if major in _HEIF_BRANDS:
        return True
    return major in _HEIF_GENERIC and bool(compatible & _HEIF_BRANDS)


def _decode_text(head: bytes) -> str | None:
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if head.startswith(bom):
            body = head[len(bom) :]
            if codec != "utf-8":
                body = body[: len(body) - len(body) % 2]
            return _decode_prefix(body, codec)
    if b"\x00" in head:
        return None
    return _decode_prefix(head, "utf-8") or _decode_prefix(head, "cp1252")


def _decode_prefix(data: bytes, codec: str) -> str | None:
    # The sniffed bytes may end inside a multi-byte character: allow a cut of up to 3 bytes.
    for cut in range(0, 4):
        try:
            return data[: len(data) - cut].decode(codec)
        except UnicodeDecodeError:
            continue
    return None


def _text_kind(head: bytes) -> str | None:
    text = _decode_text(head)
    if not text:
        return None
    if _BINARY_CONTROLS.search(text):
        return None
    start = text.lstrip().lower()[:512]
    if start.startswith(("<!doctype html", "<html", "<head", "<body", "<script", "<iframe")):
        return "html"
    if start.startswith("<svg") or (start.startswith("<?xml") and "<svg" in start):
        return "svg"
    if start.startswith("<?xml"):
        return "xml"
    return "txt"


def type_from_path(path: str) -> str | None:
    """The type a URL path's extension claims, or None."""
    segment = unquote(path.rsplit("/", 1)[-1]).strip().lower()
    _, dot, ext = segment.rpartition(".")
    return EXTENSIONS.get(ext) if dot else None


def type_from_content_type(content_type: str | None) -> str | None:
    """The type a Content-Type header claims, or None (absent, generic or unknown)."""
    if not content_type:
        return None
    return CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def _agree(detected: str, claimed: str) -> str | None:
    """The reconciled type, or None on a mismatch."""
    if detected == claimed:
        return detected
    if detected in GENERIC_CLAIMS.get(claimed, ()):
        return detected
    if claimed in REFINABLE.get(detected, ()):
        return claimed
    return None


def check_type(
    first_bytes: bytes,
    url_path: str,
    content_type: str | None,
    allowed: Iterable[str],
    *,
    also_paths: Iterable[str] = (),
) -> str:
    """The file type of a body, or :class:`ValidationError` (see the module's policy)."""
    detected = detect_type(first_bytes)
    if detected is None:
        raise ValidationError("empty body" if not first_bytes else "unrecognised file type")
    claims: list[tuple[str, str]] = []
    for path in (url_path, *also_paths):
        ext_type = type_from_path(path)
        if ext_type and ("extension", ext_type) not in claims:
            claims.append(("extension", ext_type))
    ct_type = type_from_content_type(content_type)
    if ct_type:
        claims.append(("Content-Type", ct_type))
    current = detected
    for source, claimed in claims:
        agreed = _agree(current, claimed)
        if agreed is None:
            raise ValidationError(f"file type mismatch: content is {current}, {source} says {claimed}")
        current = agreed
    final = FINAL_NAME.get(current, current)
    if final not in set(allowed):
        raise ValidationError(f"file type {final} not allowed")
    return final
