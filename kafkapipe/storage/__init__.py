"""Where attachments are written: an interface and its backends."""

from __future__ import annotations

from kafkapipe.config import Config
from kafkapipe.storage.base import BlobWriter, Storage


def open_storage(config: Config) -> Storage:
    """The configured backend; imported lazily so local-only users need no Azure code."""
    if config.storage.backend == "azure_blob":
        from kafkapipe.storage.azure_blob import AzureBlobStorage

        return AzureBlobStorage.from_config(config.storage.azure)
    from kafkapipe.storage.local import LocalStorage

    return LocalStorage(config.storage.root)


__all__ = ["BlobWriter", "Storage", "open_storage"]
