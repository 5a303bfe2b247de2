"""Presigned-URL expiry: S3 SigV4/SigV2, Azure SAS, GCS V2/V4, with clock skew."""

from __future__ import annotations

import calendar

import pytest

from kafkapipe.errors import ExpiredError
from kafkapipe.security.presigned import check_expiry, presigned_expiry

T0 = float(calendar.timegm((2026, 11, 25, 19, 9, 22, 0, 0, 0)))  # 2026-11-25T19:09:22Z


def sigv4(date: str = "20261125T190922Z", expires: str = "3600") -> str:
    return (
        "https://bucket.s3.eu-west-1.amazonaws.com/claims/a.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAEXAMPLE%2F20261125%2Feu-west-1%2Fs3%2Faws4_request"
        f"&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host&X-Amz-Signature=feedface"
    )


def sas(se: str) -> str:
    return f"https://acct.blob.core.windows.net/c/a.pdf?sv=2023-11-03&sr=b&sp=r&se={se}&sig=abc%3D"


def gcs_v4(date: str = "20261125T190922Z", expires: str = "900") -> str:
    return (
        "https://storage.googleapis.com/bucket/a.pdf?X-Goog-Algorithm=GOOG4-RSA-SHA256"
        f"&X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F20261125%2Fauto%2Fstorage%2Fgoog4_request"
        f"&X-Goog-Date={date}&X-Goog-Expires={expires}&X-Goog-SignedHeaders=host&X-Goog-Signature=00ff"
    )


@pytest.mark.parametrize(
    ("url", "form", "expiry"),
    [
        (sigv4(), "S3 SigV4", T0 + 3600),
        (sigv4().replace("X-Amz-Date", "x-amz-date").replace("X-Amz-Expires", "X-AMZ-EXPIRES"), "S3 SigV4", T0 + 3600),
        (f"https://b.s3.amazonaws.com/a.pdf?AWSAccessKeyId=AKIA&Expires={int(T0)}&Signature=x%2B", "S3 SigV2", T0),
        (f"https://storage.googleapis.com/b/a.pdf?GoogleAccessId=x&Expires={int(T0)}&Signature=y", "GCS V2", T0),
        (gcs_v4(), "GCS V4", T0 + 900),
        (sas("2026-11-25T19:09:22Z"), "Azure SAS", T0),
        (sas("2026-11-25T19%3A09%3A22Z"), "Azure SAS", T0),
        (sas("2026-11-25T19:09Z"), "Azure SAS", T0 - 22),
        (sas("2026-11-25T19:09:22.5000000Z"), "Azure SAS", T0 + 0.5),
        (sas("2026-11-25"), "Azure SAS", T0 - (19 * 3600 + 9 * 60 + 22)),
        (sas("2026-11-25T20:09:22%2B01:00"), "Azure SAS", T0),
    ],
)
def test_forms_are_recognised(url: str, form: str, expiry: float) -> None:
    assert presigned_expiry(url) == (form, pytest.approx(expiry))


@pytest.mark.parametrize(
    "url",
    [
        "https://files.example.com/a.pdf",
        "https://files.example.com/a.pdf?Expires=1",  # an Expires parameter alone is not a signature
        "https://files.example.com/a.pdf?se=2000-01-01",  # nor is se without sig
        "https://files.example.com/a.pdf?X-Amz-Date=20000101T000000Z",  # no X-Amz-Expires
        sigv4(date="2026-11-25"),  # malformed: left to the server
        sigv4(expires="-5"),
        sigv4(expires="soon"),
        sigv4(date="20261345T190922Z"),
        sas("yesterday"),
        sas("2026-11-25T19:09:22"),  # no zone: ambiguous
        "not a url at all",
    ],
)
def test_unrecognised_or_malformed_forms_give_no_verdict(url: str) -> None:
    assert presigned_expiry(url) is None
    assert check_expiry(url, now=T0 + 10**9) is None


@pytest.mark.parametrize(
    "url",
    [
        sigv4(),
        f"https://b.s3.amazonaws.com/a.pdf?AWSAccessKeyId=AKIA&Expires={int(T0) + 3600}&Signature=x",
        gcs_v4(expires="3600"),
        sas("2026-11-25T20:09:22Z"),
    ],
)
def test_expiry_boundary_with_clock_skew(url: str) -> None:
    expiry = T0 + 3600
    assert check_expiry(url, now=expiry, skew=0) == pytest.approx(expiry)
    assert check_expiry(url, now=expiry + 60, skew=60) == pytest.approx(expiry)
    with pytest.raises(ExpiredError):
        check_expiry(url, now=expiry + 60.5, skew=60)
    with pytest.raises(ExpiredError):
        check_expiry(url, now=expiry + 0.001, skew=0)


def test_not_yet_expired_url_passes_and_returns_its_expiry() -> None:
    assert check_expiry(sigv4(expires="604800"), now=T0 + 86400) == T0 + 604800


def test_message_names_the_form_and_time_but_never_the_query() -> None:
    with pytest.raises(ExpiredError) as caught:
        check_expiry(sigv4(), now=T0 + 7200)
    message = caught.value.message
    assert "S3 SigV4" in message and "2026-11-25T20:09:22Z" in message
    assert "feedface" not in message and "AKIA" not in message and "X-Amz" not in message
    assert caught.value.category == "expired"


def test_first_occurrence_of_a_parameter_counts() -> None:
    url = sigv4() + "&X-Amz-Expires=999999"
    assert presigned_expiry(url) == ("S3 SigV4", T0 + 3600)


def test_default_clock_is_now() -> None:
    with pytest.raises(ExpiredError):
        check_expiry(sigv4(date="20000101T000000Z", expires="60"))
    assert check_expiry(sas("2999-01-01T00:00:00Z")) is not None
