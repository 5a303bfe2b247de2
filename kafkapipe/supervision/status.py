"""How many workers each stage has, and the one-line summary systemd shows."""

from __future__ import annotations

from collections.abc import Mapping

import attrs


@attrs.frozen
class StageCount:
    expected: int
    alive: int
    ready: int
    pids: tuple[int, ...] = ()


def status_line(counts: Mapping[str, StageCount], state: str, restarts: int) -> str:
    """One line for ``systemctl status``: ``running; ingest 1/1, download 2/2 ready; 0 restarts``."""
    parts = ", ".join(f"{stage} {c.ready}/{c.expected}" for stage, c in counts.items())
    return f"{state}; {parts} ready; {restarts} restarts"
