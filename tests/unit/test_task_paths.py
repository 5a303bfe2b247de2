"""A task's blob_path is re-derived, never trusted; storage backends refuse paths that leave their root."""

from __future__ import annotations

import posixpath
import re
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import unquote

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkapipe import paths
from kafkapipe.errors import ValidationError
from kafkapipe.messages import DownloadTask, make_task_id
from kafkapipe.security.tasks import check_task

WHEN = datetime(2026, 11, 25, 19, 9, 22, tzinfo=UTC)
URL = "https://files.example.com/claims/invoice.pdf?X-Amz-Signature=abc"


def task(**changes: object) -> DownloadTask:
    task_id = make_task_id("trace-1", URL)
    good = DownloadTask(
        task_id=task_id, trace_id="trace-1", attachment_url=URL,
        blob_path=paths.blob_path(task_id, "trace-1", URL, "xact", WHEN),
        event_type="t", event_subtype="s", source_system="xact", original_timestamp=WHEN, created_at=WHEN,
    )
    return attrs.evolve(good, **changes)


HOSTILE_PATHS = [
    "../../x",
    "/tmp/x",
    "xact/2026/11/25/trace-1/../../../../inventory.sqlite3",
    "xact/2026/11/25/trace-1/%2e%2e/%2e%2e/x",
    "xact\\2026\\11\\25\\x.pdf",
    "..\\..\\x",
    "xact/2026/11/25/trace-1/x\x00.pdf",
    "xact/2026/11/25/trace-1/" + "a" * 1100,
    "xact//2026/x",
    "xact/./2026/x",
    "",
    "xact/2026/11/25/trace-1/invoice\u202efdp.exe",
]


def test_a_task_from_ingest_passes() -> None:
    check_task(task())


@pytest.mark.parametrize("hostile", HOSTILE_PATHS)
def test_a_hostile_blob_path_is_refused(hostile: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_task(task(blob_path=hostile))
    assert caught.value.category == "validation"


@pytest.mark.parametrize(
    "changes",
    [
        {"blob_path": "xact/2026/11/25/trace-1/other.pdf"},  # well formed, but not this task's
        {"source_system": "other"},
        {"original_timestamp": datetime(2025, 1, 1, tzinfo=UTC)},
        {"attachment_url": "https://files.example.com/claims/other.pdf",
         "task_id": make_task_id("trace-1", "https://files.example.com/claims/other.pdf")},
    ],
)
def test_a_blob_path_that_is_not_what_the_fields_derive_is_refused(changes: dict) -> None:
    with pytest.raises(ValidationError, match="blob_path refused"):
        check_task(task(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"attachment_url": "https://files.example.com/claims/other.pdf"},
        {"trace_id": "trace-2"},
        {"task_id": "../../etc"},
    ],
)
def test_a_task_id_that_is_not_what_the_fields_derive_is_refused(changes: dict) -> None:
    with pytest.raises(ValidationError, match="task_id refused"):
        check_task(task(**changes))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_other_blob_path_is_refused(text: str) -> None:
    candidate = task(blob_path=text)
    if text == task().blob_path:
        check_task(candidate)
    else:
        with pytest.raises(ValidationError):
            check_task(candidate)


@pytest.mark.parametrize("hostile", [*HOSTILE_PATHS, "a/b/", "a/%2e%2e/b"])
def test_check_relative_refuses_what_could_leave_a_root(hostile: str) -> None:
    with pytest.raises(ValidationError, match="storage path refused"):
        paths.check_relative(hostile)


def test_check_relative_gives_the_segments_of_a_good_path() -> None:
    assert paths.check_relative("xact/2026/11/25/t-a.pdf") == ["xact", "2026", "11", "25", "t-a.pdf"]


@pytest.mark.parametrize(
    ("blob_path", "extension", "stored"),
    [
        ("x/t-invoice.scr", "pdf", "x/t-invoice.pdf"),
        ("x/t-run.ps1", "txt", "x/t-run.txt"),
        ("x/t-claim.hta", "pdf", "x/t-claim.pdf"),
        ("x/t-photo.jpeg", "jpg", "x/t-photo.jpg"),
        ("x/t-invoice.pdf.exe", "pdf", "x/t-invoice_pdf.pdf"),
        ("x/t-download", "pdf", "x/t-download.pdf"),
        ("t-a.pdf", "pdf", "t-a.pdf"),
    ],
)
def test_the_stored_name_takes_the_detected_types_extension(blob_path: str, extension: str, stored: str) -> None:
    assert paths.stored_path(blob_path, extension) == stored


@pytest.mark.parametrize("extension", ["", "p/df", "..", "PDF", "toolongext"])
def test_stored_path_takes_only_a_plain_extension(extension: str) -> None:
    with pytest.raises(ValueError):
        paths.stored_path("x/t-a.pdf", extension)


URL_PARTS = st.sampled_from(["http", "HTTPS", "x-y+z.a", "1http", "", ":", "//", "/", "?", "#", "[", "]", "::1", "@",
                             "h.example.com", "ü", " ", "\t", "\x00", "\x7f", "%2e%2e", "a b", "invoice.pdf", ":80"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(URL_PARTS, max_size=10).map("".join) | st.text(max_size=40))
def test_url_path_is_what_urlsplit_says(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        expected = urlsplit(url).path
    except ValueError:
        expected = ""
    assert paths.url_path(url) == expected


@pytest.mark.parametrize("year", [1, 999, 1000, 2026, 9999])
def test_day_folder_spelled_as_strftime(year: int) -> None:
    day = datetime(year, 2, 3, tzinfo=UTC)
    assert paths.blob_path("t", "trace", URL, "xact", day).split("/")[1:4] == f"{day:%Y/%m/%d}".split("/")


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZ09._-/ \u00e9%"), max_size=12), st.integers(1, 8))
def test_safe_segment_fast_path_changes_nothing(text: str, limit: int) -> None:
    cleaned = paths._DOTS.sub(".", paths._UNSAFE.sub("_", text)).lstrip(".-")[:limit].rstrip(".")
    assert paths.safe_segment(text, limit) == (cleaned or "_")


# --- the fast paths give what the rules they stand for give ---


def _is_valid_by_the_rules(path: str) -> bool:
    return (
        bool(re.fullmatch(r"[A-Za-z0-9._/-]+", path))
        and not path.startswith("/")
        and not {".", ".."} & set(path.split("/"))
        and all(path.split("/"))
        and len(path.encode()) <= paths.MAX_PATH
    )


def _blob_path_by_the_rules(task_id: str, trace_id: str, url: str, source_system: str, when: datetime) -> str:
    day = when.astimezone(UTC)
    folder = f"{day:%Y/%m/%d}" if day.year < 1000 else f"{day.year}/{day.month:02d}/{day.day:02d}"
    name = paths.safe_segment(unquote(posixpath.basename(paths.url_path(url))), 120, "attachment")
    return "/".join((paths.safe_segment(source_system, 64, "unknown"), folder, paths.safe_segment(trace_id, 128),
                     f"{task_id}-{name}"))


PATH_TEXT = (st.lists(st.sampled_from(["a", "Z9", "_", "-", ".", "..", "/", "//", "\n", "é", " ", "%2e", "x" * 300]),
                      max_size=12).map("".join)
             | st.text(max_size=40))


@settings(max_examples=3000, deadline=None)
@given(PATH_TEXT)
def test_is_valid_accepts_what_its_rules_accept(path: str) -> None:
    assert paths.is_valid(path) == _is_valid_by_the_rules(path)


@pytest.mark.parametrize("path", ["a/b\n", "a/\n", "a\n/b", "\n"])
def test_is_valid_refuses_a_newline_anywhere(path: str) -> None:
    assert not paths.is_valid(path)


def test_is_valid_at_the_size_limit() -> None:
    for size in (paths.MAX_PATH - 1, paths.MAX_PATH, paths.MAX_PATH + 1):
        path = "a/" + "b" * (size - 2)
        assert paths.is_valid(path) == _is_valid_by_the_rules(path) == (size <= paths.MAX_PATH)


@settings(max_examples=3000, deadline=None)
@given(st.lists(URL_PARTS, max_size=10).map("".join) | st.text(max_size=40))
def test_file_name_is_the_url_paths_last_segment(url: str) -> None:
    expected = paths.safe_segment(unquote(posixpath.basename(paths.url_path(url))), 120, "attachment")
    assert paths.file_name(url) == expected


ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11)),
                         timezone(timedelta(0))])


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=80), st.lists(URL_PARTS, max_size=10).map("".join) | st.text(max_size=60), st.text(max_size=80),
       st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=ZONES))
def test_blob_path_is_byte_for_byte_what_it_was(trace_id: str, url: str, source: str, when: datetime) -> None:
    task_id = make_task_id(trace_id, url)
    assert paths.blob_path(task_id, trace_id, url, source, when) == _blob_path_by_the_rules(
        task_id, trace_id, url, source, when)


def test_remembered_segments_are_bounded_and_changed_by_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "_REMEMBERED", 4)
    for day in range(1, 29):
        for source in (f"src{day}", "x" * 65 + str(day), "../" + str(day)):
            when = datetime(2026, 2, day, 23, 30, tzinfo=timezone(timedelta(hours=-3)))
            got = paths.blob_path("t", "trace", URL, source, when)
            assert got == _blob_path_by_the_rules("t", "trace", URL, source, when)
            assert len(paths._SOURCE_SEGMENTS) <= 4 and len(paths._DAY_FOLDERS) <= 4
    assert all(len(source) <= 64 for source in paths._SOURCE_SEGMENTS)
