"""File-type detection from the first bytes, and the extension / Content-Type cross-check policy."""

from __future__ import annotations

import io
import random
import struct
import zipfile

import pytest

from kafkapipe.config import DEFAULT_FILE_TYPES
from kafkapipe.errors import ValidationError
from kafkapipe.security.filetypes import (
    SNIFF_BYTES,
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
