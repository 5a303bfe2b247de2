"""Refusing hostile input before it costs anything: URLs, presigned expiry, file types."""

from kafkapipe.security.filetypes import check_type, detect_type
from kafkapipe.security.presigned import check_expiry
from kafkapipe.security.urls import ParsedUrl, UrlValidator, ValidatedUrl, address_deny_reason

__all__ = [
    "ParsedUrl",
    "UrlValidator",
    "ValidatedUrl",
    "address_deny_reason",
    "check_expiry",
    "check_type",
    "detect_type",
]
