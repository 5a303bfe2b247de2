"""``kafkapipe url-check``: the download stage's URL checks, one verdict a line.

Runs exactly what a download does before it connects — the static checks,
presigned expiry, then DNS and the address checks — and prints
``ALLOW <url>`` or ``DENY <url> <reason>``. URLs are printed redacted (no
userinfo, query or fragment) with non-printable characters escaped, so
neither a signature nor a terminal escape sequence reaches the output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TextIO

from kafkapipe.config import Config, DownloadConfig
from kafkapipe.errors import PipelineError
from kafkapipe.log import redact_url
from kafkapipe.printable import printable
from kafkapipe.security.presigned import check_expiry
from kafkapipe.security.urls import Resolver, UrlValidator


def _shown(url: str) -> str:
    try:
        return printable(redact_url(url), spaces=False)
    except (TypeError, AttributeError):
        return "<not a string>"


def url_check(
    config: Config | DownloadConfig,
    urls: Iterable[str],
    out: TextIO,
    *,
    resolver: Resolver | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Print a verdict per URL; 1 if any URL is denied, else 0."""
    download = config.download if isinstance(config, Config) else config
    validator = UrlValidator(download, resolver)
    denied = False
    for url in urls:
        try:
            parsed = validator.check_static(url)
            check_expiry(url, now=clock(), skew=download.clock_skew)
            validator.resolve(parsed)
        except PipelineError as exc:
            denied = True
            out.write(f"DENY {_shown(url)} {printable(exc.message)}\n")
            continue
        out.write(f"ALLOW {_shown(url)}\n")
    return 1 if denied else 0
