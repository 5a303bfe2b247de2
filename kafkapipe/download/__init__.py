"""Downloads: an SSRF-safe HTTP client and the streaming fetch built on it."""

from kafkapipe.download.fetch import Fetcher, FetchOutcome

__all__ = ["FetchOutcome", "Fetcher"]
