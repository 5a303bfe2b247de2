"""What a stage asks the consume loop to produce."""

from __future__ import annotations

import attrs


@attrs.frozen
class Output:
    topic: str
    key: str | bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = attrs.field(factory=list)
