"""The pipeline's metrics, and the one place prometheus_client's mode is chosen.

prometheus_client fixes single- or multi-process mode when it is imported, by
``PROMETHEUS_MULTIPROC_DIR``. This module defers that import to the first use of a metric
(``metrics.MESSAGES_CONSUMED``), so any module may import it at the top: the supervisor
calls :func:`use_directory` before anything uses a metric, its workers inherit the
directory, and a process that never calls it (``kafkapipe worker``, the command line, tests)
gets single-process metrics. Nothing else in kafkapipe imports prometheus_client at import
time (tests/unit/test_layers.py).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kafkapipe.metricdefs import *  # noqa: F403 - the names this module hands out


def use_directory(path: str) -> None:
    """Multiprocess metrics written under ``path``; RuntimeError once prometheus_client is loaded."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before the metrics directory was chosen; "
            "something imported it outside kafkapipe.metrics"
        )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def __getattr__(name: str) -> Any:
    if not name.isupper():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from kafkapipe import metricdefs

    globals().update({key: value for key, value in vars(metricdefs).items() if key.isupper()})
    try:
        return globals()[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
