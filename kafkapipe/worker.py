"""One stage in one process: the contract between the supervisor and a stage.

The supervisor (or ``kafkapipe worker`` in the foreground) builds a
:class:`WorkerControl`, installs its signal handlers and calls
:func:`run_worker`. Stages poll ``control.stop`` and call
``control.heartbeat()`` from their consume loop, so a wedged loop shows up
as a stale heartbeat, and ``control.ready()`` once they have joined their
consumer group.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable

import attrs

from kafkapipe.config import STAGES, Config
from kafkapipe.exitcodes import EXIT_BOOT_ERROR, EXIT_CONFIG, EXIT_FAILURE, EXIT_OK

log = logging.getLogger(__name__)

# Re-exported: many callers read the exit codes from here.
__all__ = ["EXIT_BOOT_ERROR", "EXIT_CONFIG", "EXIT_FAILURE", "EXIT_OK", "WorkerControl", "run_worker"]


def _noop() -> None:
    return None


@attrs.define
class WorkerControl:
    stop: threading.Event = attrs.Factory(threading.Event)
    on_heartbeat: Callable[[], None] = _noop
    on_ready: Callable[[], None] = _noop
    _ready_sent: bool = False

    def heartbeat(self) -> None:
        self.on_heartbeat()

    def ready(self) -> None:
        if not self._ready_sent:
            self._ready_sent = True
            self.on_ready()

    def install_signal_handlers(self) -> None:
        """TERM/INT ask for a graceful drain; a second one changes nothing (the supervisor KILLs)."""

        def request_stop(signum: int, frame: object) -> None:
            self.stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)


def run_worker(config: Config, stage: str, control: WorkerControl) -> int:
    """Run ``stage`` until ``control.stop`` is set; returns the process exit code."""
    if stage not in STAGES:
        log.error("unknown stage %r (expected one of %s)", stage, ", ".join(STAGES))
        return EXIT_CONFIG
    name_process(stage)
    from kafkapipe.inventory import SchemaMismatch
    from kafkapipe.stages.building import build_stage

    try:
        runner = build_stage(config, stage, control)
    except SchemaMismatch as exc:  # another version's schema: no restart can help, only a migration
        log.error("stage %s cannot start: %s", stage, exc)
        return EXIT_CONFIG
    except Exception:
        log.exception("stage %s failed to boot", stage)
        return EXIT_BOOT_ERROR
    # What boot allocated (modules, config, clients) lives as long as the process: out of the
    # collector's sight, the full collections that per-message garbage triggers stay short.
    gc.freeze()
    from kafkapipe.processmetrics import announce_build

    announce_build()
    return runner.run()


def name_process(stage: str) -> None:
    """Show ``kafkapipe: download worker 2`` in ps and top instead of the supervisor's command line.

    The number is the log's ``worker`` field (bound by the supervisor before this runs), so a
    process in ps and its log lines name each other; a foreground ``kafkapipe worker`` has none.
    """
    from setproctitle import setproctitle

    from kafkapipe.log import current_fields

    number = current_fields().get("worker")
    setproctitle(f"kafkapipe: {stage} worker" + (f" {number}" if number is not None else ""))

