"""Where the command line finds its configuration and its version when not told.

``--config`` wins; then ``$KAFKAPIPE_CONFIG``; then ``/etc/kafkapipe/pipeline.toml``
(docs/contract.md §6). A missing file is an error naming every place looked at, never a silent
fall-back to the built-in defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from kafkapipe.errors import ConfigError

CONFIG_ENV = "KAFKAPIPE_CONFIG"
SYSTEM_CONFIG = Path("/etc/kafkapipe/pipeline.toml")
CONFIG_HELP = f"pipeline TOML file (default: ${CONFIG_ENV}, then {SYSTEM_CONFIG})"


def config_path(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    if given:
        return given
    environ = os.environ if environ is None else environ
    from_env = environ.get(CONFIG_ENV)
    if from_env:
        return from_env
    if SYSTEM_CONFIG.is_file():
        return str(SYSTEM_CONFIG)
    raise ConfigError(f"no configuration: give --config FILE, set ${CONFIG_ENV}, or create {SYSTEM_CONFIG}")


def version() -> str:
    try:
        return metadata.version("kafkapipe")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"
