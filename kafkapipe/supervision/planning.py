"""What to spawn and what to retire so a stage converges on its target: scaling and rolling reloads."""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen
class SlotView:
    """What the planner needs to know about one worker."""

    pid: int
    age: int
    generation: int
    ready: bool
    retiring: bool = False


@attrs.frozen
class Plan:
    spawn: int = 0
    retire: tuple[int, ...] = ()


def plan_stage(slots: Iterable[SlotView], target: int, generation: int) -> Plan:
    """What to do next for one stage so it converges on ``target`` workers of ``generation``.

    Steady state: spawn what is missing, retire the oldest extras (TTOU).
    After a reload (workers of an older generation exist) replace one at a
    time: wait while a new worker is not ready yet or an old one is still
    draining; then retire an old worker if there are more than ``target``,
    else start one new worker. Ready workers never drop below min(before, ``target``):
    a one-worker stage is never empty during a reload.
    """
    slots = list(slots)
    active = [s for s in slots if not s.retiring]
    new = [s for s in active if s.generation >= generation]
    old = sorted((s for s in active if s.generation < generation), key=lambda s: s.age)
    if old:
        if any(s.retiring for s in slots) or not all(s.ready for s in new):
            return Plan()
        if len(new) + len(old) > target:
            return Plan(retire=(old[0].pid,))
        if len(new) < target:
            return Plan(spawn=1)
        return Plan()
    if len(new) < target:
        return Plan(spawn=target - len(new))
    extras = sorted(new, key=lambda s: s.age)[: len(new) - target]
    return Plan(retire=tuple(s.pid for s in extras))
