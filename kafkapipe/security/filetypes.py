"""File types from the first bytes, cross-checked against the URL and Content-Type.

Detection (:func:`detect_type`, on the first :data:`SNIFF_BYTES` of the body)
goes by the **leading** magic; a signature found further in never overrides it:

0. Executables first: PE/MZ → exe, ELF → elf, Mach-O (thin or fat) →
   macho, a Windows shortcut → lnk, a ``#!`` line → script.
1. ZIP containers (``PK\\x03\\x04`` …) are told apart by the names of their
   first local file headers: ``word/`` → docx, ``xl/`` → xlsx, ``ppt/`` →
   pptx (OOXML puts ``[Content_Types].xml`` first; seen without a part name
   the container is ``ooxml``), an ``XACTDOC`` entry → esx (an Xactimate
   project is a ZIP container), OpenDocument by its ``mimetype`` entry;
   anything else is ``zip``. An OOXML package with a ``vbaProject.bin`` part,
   or whose ``[Content_Types].xml`` names a macro-enabled or VBA part, is
   docm/xlsm/pptm.
2. OLE2 compound files (``D0 CF 11 E0 A1 B1 1A E1``) are told apart by the
   stream names in their first directory sector when it lies inside the
   sniffed bytes: ``WordDocument`` → doc, ``Workbook``/``Book`` → xls,
   ``PowerPoint Document`` → ppt, ``__substg1.0_*`` → msg; otherwise the
   ``filetype`` library's guess, otherwise the generic ``ole2``. A VBA
   storage (``_VBA_PROJECT``, ``Macros``) named anywhere in the sniffed bytes
   makes doc/xls/ppt ``doc-macro``/``xls-macro``/``ppt-macro``.
3. ISO-BMFF ``ftyp`` boxes with a HEIF brand (heic, heix, hevc, hevx, heim,
   heis; or mif1/msf1 with one of those beside it) → heic.
4. ``%PDF-`` at the start → pdf. Tolerance: PDF readers accept up to 1024
   bytes before the header, and some document systems prepend a text banner,
   so ``%PDF-`` within the first 1024 bytes still counts when everything
   before it is plain text (no binary bytes, nothing active). A binary
   prefix (an ``MZ`` stub, an image) never becomes a PDF.
5. Everything else: the maintained ``filetype`` library (jpg, png, gif, tiff
   as ``tiff``, …).
6. Text, when nothing matched: UTF-8 (or UTF-16 with a BOM, or cp1252) with
   no control characters other than tab, LF, CR, FF and SUB → ``txt``;
   text that starts like HTML, XML or SVG is ``html``/``xml``/``svg``, so an
   error page served with status 200 is never taken for a document. Markup
   anywhere in the first KiBs (``<script``, ``<hta:application``,
   ``<iframe`` …) is html, and text with the marks of a shell, batch,
   PowerShell, VBScript or JScript program is ``script``.

Cross-check policy (:func:`check_type`):

- Executables and active content (:data:`ACTIVE_TYPES`, and SVG or XML
  carrying script, ``foreignObject``, ``javascript:`` or event handlers
  anywhere in the sniffed bytes) are refused first, whatever the
  configuration, the name or the Content-Type say; the check runs again on
  the type a claim refines the detection to (``txt`` named ``.svg``).
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
  Refusals name the detected type and every claim.

The stored file's extension is :func:`canonical_extension` of the final type,
never the URL's, so nothing is stored under a runnable name.
"""

from __future__ import annotations

import codecs
import re
import struct
import zlib
from collections.abc import Iterable
from urllib.parse import unquote

import filetype

from kafkapipe.errors import ValidationError

SNIFF_BYTES = 64 * 1024

ZIP_FAMILY = frozenset(
    {"zip", "ooxml", "docx", "xlsx", "pptx", "docm", "xlsm", "pptm", "esx", "odt", "ods", "odp", "epub"}
)
OLE_FAMILY = frozenset({"ole2", "doc", "xls", "ppt", "msg", "doc-macro", "xls-macro", "ppt-macro"})
# Refused whatever allowed_file_types says: a double-click runs them.
ACTIVE_TYPES = frozenset({"exe", "elf", "macho", "lnk", "script", "html"})
# Never the extension of a stored file, whatever type a configuration allows.
RUNNABLE_EXTENSIONS = frozenset({
    "exe", "dll", "scr", "com", "cpl", "pif", "msi", "msp", "lnk", "url", "reg", "bat", "cmd", "ps1", "psm1",
    "vbs", "vbe", "js", "jse", "wsf", "wsh", "hta", "htm", "html", "xhtml", "mht", "sh", "bash", "py", "pl",
    "jar", "app", "apk", "elf", "macho", "script", "chm", "scf", "application", "appref-ms", "gadget",
})
# A type whose stored extension is not its own name.
CANONICAL = {"doc-macro": "doc", "xls-macro": "xls", "ppt-macro": "ppt", "ooxml": "zip"}
TEXT_FAMILY = frozenset({"txt", "html", "xml", "svg"})
# generic detection → the specific types a claim may refine it to
REFINABLE = {
    "zip": frozenset({"docx", "xlsx", "pptx", "esx"}),
    "ooxml": frozenset({"docx", "xlsx", "pptx"}),
    "ole2": frozenset({"doc", "xls", "ppt", "msg"}),
    "txt": frozenset({"html", "xml", "svg"}),
}
# generic claim → the detected types it agrees with
GENERIC_CLAIMS = {
    "zip": ZIP_FAMILY,
    "ole2": OLE_FAMILY,
    "txt": TEXT_FAMILY,
    "doc": frozenset({"doc-macro"}),
    "xls": frozenset({"xls-macro"}),
    "ppt": frozenset({"ppt-macro"}),
}
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
    "docm": "docm",
    "xlsm": "xlsm",
    "pptm": "pptm",
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
    "scr": "exe",
    "com": "exe",
    "elf": "elf",
    "hta": "html",
    "ps1": "script",
    "bat": "script",
    "cmd": "script",
    "sh": "script",
    "vbs": "script",
    "vbe": "script",
    "js": "script",
    "jse": "script",
    "wsf": "script",
    "lnk": "lnk",
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
    "application/vnd.ms-word.document.macroenabled.12": "docm",
    "application/vnd.ms-excel.sheet.macroenabled.12": "xlsm",
    "application/vnd.ms-powerpoint.presentation.macroenabled.12": "pptm",
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
    "application/x-msdos-program": "exe",
    "application/x-executable": "elf",
    "application/x-mach-binary": "macho",
    "application/hta": "html",
    "application/javascript": "script",
    "text/javascript": "script",
    "application/x-sh": "script",
    "text/x-shellscript": "script",
    "application/x-bat": "script",
    "text/vbscript": "script",
}

_FILETYPE_NAMES = {"tif": "tiff", "jpx": "jp2"}
_HEIF_BRANDS = frozenset({"heic", "heix", "hevc", "hevx", "heim", "heis"})
_HEIF_GENERIC = frozenset({"mif1", "msf1"})  # also used by AVIF: needs a HEVC brand beside it
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_LOCAL = b"PK\x03\x04"
_BINARY_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x19\x1b-\x1f\x7f]")
_EXECUTABLE_MAGIC = (
    (b"MZ", "exe"),
    (b"\x7fELF", "elf"),
    (b"\xfe\xed\xfa\xce", "macho"),
    (b"\xfe\xed\xfa\xcf", "macho"),
    (b"\xce\xfa\xed\xfe", "macho"),
    (b"\xcf\xfa\xed\xfe", "macho"),
    (b"\xca\xfe\xba\xbe", "macho"),  # fat binary (a Java class file shares it: refused as well)
    (b"L\x00\x00\x00\x01\x14\x02\x00", "lnk"),
    (b"#!", "script"),
)
_PDF_TOLERANCE = 1024
# Markup that makes a text body a page a browser (or mshta) would run, wherever it appears early on.
_ACTIVE_MARKUP = re.compile(r"<\s*(script|hta:application|iframe|object|embed|html|body|frameset|meta\s+http-equiv)\b")
# Marks of programs: one is enough; each is rare in claim notes and CSV exports.
_SCRIPT_MARKS = re.compile(
    r"(?im)^\s*@?echo\s+off\b"  # batch
    r"|^\s*(?:cmd(?:\.exe)?\s+/[ck]|powershell(?:\.exe)?\s+-)"
    r"|\b(?:invoke-expression|invoke-webrequest|start-process|set-executionpolicy|add-type|"
    r"downloadstring|downloadfile|frombase64string|-encodedcommand)\b"  # PowerShell
    r"|\biex\s*[($]|\$env:\w|new-object\s+(?:-typename\s+)?(?:system\.)?net\.webclient"
    r"|\bwscript\.|\bcreateobject\s*\(|^\s*on\s+error\s+resume\s+next\b"  # VBScript / WSH
    r"|\bactivexobject\b|\beval\s*\(|\bnew\s+function\s*\(|\bdocument\.write\b"  # JScript
    r"|\brequire\s*\(\s*['\"]child_process"
)
# Anywhere in an SVG or XML body's sniffed bytes; a namespace prefix (``<html:script``) counts too.
_SVG_ACTIVE = re.compile(
    r"(?i)<\s*(?:[a-z0-9_.-]+:)?(?:script|foreignobject|iframe|handler)\b|\bon[a-z]+\s*=|javascript:"
)
_MARKUP_TYPES = frozenset({"svg", "xml"})
_VBA_NAMES = tuple(name.encode("utf-16-le") for name in ("_VBA_PROJECT", "Macros\0", "VBA\0"))
_MACRO_PARTS = re.compile(rb"(?i)vbaproject|macroenabled|vbadata")


def detect_type(head: bytes) -> str | None:
    """The type the first bytes show, or None when nothing recognises them."""
    if not head:
        return None
    for magic, kind in _EXECUTABLE_MAGIC:
        if head.startswith(magic):
            return kind
    if head.startswith(_ZIP_LOCAL):
        return _zip_kind(head)
    if head.startswith((b"PK\x05\x06", b"PK\x07\x08")):
        return "zip"
    if head.startswith(_OLE_MAGIC):
        return _ole_kind(head)
    if _is_heif(head):
        return "heic"
    pdf = _pdf_kind(head)
    if pdf is not None:
        return pdf
    kind = filetype.guess(head)
    if kind is not None:
        return _FILETYPE_NAMES.get(kind.extension, kind.extension)
    return _text_kind(head)


def _pdf_kind(head: bytes) -> str | None:
    """pdf when ``%PDF-`` leads, or follows a short plain-text prefix; that prefix's type when it is active."""
    at = head.find(b"%PDF-", 0, _PDF_TOLERANCE)
    if at < 0:
        return None
    prefix = head[:at].removeprefix(codecs.BOM_UTF8)
    if not prefix.strip():
        return "pdf"
    if b"\x00" in prefix:
        return None
    kind = _text_kind(prefix)
    if kind in ACTIVE_TYPES:
        return kind
    return "pdf" if kind == "txt" else None


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
    macros = _has_macros(head, names)
    for name in names:
        if name.startswith("word/"):
            return "docm" if macros else "docx"
        if name.startswith("xl/"):
            return "xlsm" if macros else "xlsx"
        if name.startswith("ppt/"):
            return "pptm" if macros else "pptx"
        if name.upper().startswith("XACTDOC"):
            return "esx"
    if names and names[0] == "mimetype":
        kind = filetype.guess(head)
        if kind is not None and kind.extension in ZIP_FAMILY:
            return kind.extension
    if "[Content_Types].xml" in names:
        return "ooxml"
    return "zip"


def _has_macros(head: bytes, names: list[str]) -> bool:
    """An OOXML package with a VBA part, seen by its part names or by its [Content_Types].xml."""
    if any(_MACRO_PARTS.search(name.encode("utf-8", "replace")) for name in names):
        return True
    return bool(_MACRO_PARTS.search(_zip_member(head, "[Content_Types].xml")))


def _zip_member(head: bytes, wanted: str, limit: int = 256 * 1024) -> bytes:
    """The (inflated, at most ``limit`` bytes) content of a member lying wholly inside ``head``; b"" if not."""
    offset = head.find(_ZIP_LOCAL)
    while offset >= 0 and offset + 30 <= len(head):
        flags, method, _, _, _, csize, _, name_len, extra_len = struct.unpack_from("<HHHHIIIHH", head, offset + 6)
        start = offset + 30 + name_len + extra_len
        if head[offset + 30 : offset + 30 + name_len].decode("utf-8", "replace") == wanted and not flags & 0x08:
            data = head[start : start + csize]
            if method == 0:
                return data[:limit]
            if method == 8:
                try:
                    return zlib.decompressobj(-15).decompress(data, limit)
                except zlib.error:
                    return b""
            return b""
        offset = head.find(_ZIP_LOCAL, offset + 4)
    return b""


def _ole_kind(head: bytes) -> str:
    kind = _ole_base_kind(head)
    if kind in ("doc", "xls", "ppt") and any(name in head for name in _VBA_NAMES):
        return f"{kind}-macro"
    return kind


def _ole_base_kind(head: bytes) -> str:
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
    early = text[:8192].lower()
    if start.startswith(("<!doctype html", "<html", "<head", "<body", "<script", "<iframe")):
        return "html"
    if start.startswith("<svg") or (start.startswith(("<?xml", "<!doctype svg", "<!--")) and "<svg" in text.lower()):
        return "svg"
    if _ACTIVE_MARKUP.search(early):
        return "html"
    if _SCRIPT_MARKS.search(early):
        return "script"
    if start.startswith("<?xml"):
        return "xml"
    return "txt"


def active_content(detected: str, head: bytes) -> bool:
    """Whether a body of this type runs something when opened: refused whatever is allowed."""
    if detected in ACTIVE_TYPES:
        return True
    if detected not in _MARKUP_TYPES:
        return False
    text = _decode_text(head)
    if text is None:
        text = head.decode("utf-8", "replace")
    return bool(_SVG_ACTIVE.search(text))


def canonical_extension(file_type: str) -> str:
    """The extension a stored file of ``file_type`` gets; ValidationError for a runnable one."""
    ext = CANONICAL.get(file_type, file_type)
    if not re.fullmatch(r"[a-z0-9]{1,8}", ext) or ext in RUNNABLE_EXTENSIONS:
        raise ValidationError(f"file type {file_type} cannot be stored: no safe extension")
    return ext


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
    paths = (url_path, *also_paths)
    detected = detect_type(first_bytes)
    if detected is None:
        what = "empty body" if not first_bytes else "unrecognised file type"
        raise ValidationError(f"{what}: content is unknown{_claimed(paths, content_type)}")
    if active_content(detected, first_bytes):
        raise ValidationError(
            f"file type {detected} not allowed, executable or active content: "
            f"content is {detected}{_claimed(paths, content_type)}"
        )
    claims: list[tuple[str, str]] = []
    for path in paths:
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
    if current != detected and active_content(current, first_bytes):  # a claim refined txt to svg, xml, html
        raise ValidationError(
            f"file type {current} not allowed, executable or active content: "
            f"content is {detected} read as {current}{_claimed(paths, content_type)}"
        )
    final = FINAL_NAME.get(current, current)
    if final not in set(allowed):
        raise ValidationError(f"file type {final} not allowed: content is {detected}{_claimed(paths, content_type)}")
    return final


def _claimed(paths: Iterable[str], content_type: str | None) -> str:
    """The claims as sent, shortened and printable: for the refusal message."""
    parts = []
    for path in paths:
        segment = unquote(path.rsplit("/", 1)[-1])
        _, dot, ext = segment.rpartition(".")
        if dot and ext:
            parts.append(f", extension says {_printable(ext, 16)}")
    if content_type:
        parts.append(f", Content-Type says {_printable(content_type, 64)}")
    return "".join(parts)


def _printable(text: str, limit: int) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
