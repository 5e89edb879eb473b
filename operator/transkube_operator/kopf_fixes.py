"""One fix to kopf's machinery that matters at catalog scale, applied before kopf starts (main.py).

kopf holds back every handler until its indexes hold the initial listing. It does that with a ToggleSet: one
toggle per object being indexed, and every object's worker waiting on the set's Condition. kopf's ToggleSet
wakes every waiter on every toggle it adds or drops, so a restart with N objects costs O(N²) wake-ups: with
3,300 objects (1,700 TranscodeJobs, their Jobs and pods) the operator was blind for ~60 s, and it grows with
the square (minutes at 10,000, which a standby taking over would pay too).

The fix keeps kopf's semantics: a waiter waits for the set's state (on/off), and adding or dropping a toggle
wakes the waiters only when that state flips. A toggle turned on or off itself still notifies as before. If
kopf's ToggleSet no longer looks as expected, the fix is not applied (kopf is then only slower, never wrong).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("transkube.operator")


def apply() -> bool:
    try:
        from kopf._cogs.aiokits import aiotoggles
    except ImportError:
        return False
    cls: Any = aiotoggles.ToggleSet
    if getattr(cls, "_transkube_fixed", False):
        return True
    probe = cls(all)
    if not all(hasattr(probe, a) for a in ("_condition", "_toggles", "_fn", "is_on")) or \
            not all(hasattr(cls, a) for a in ("make_toggle", "drop_toggle", "drop_toggles")):
        log.warning("kopf's ToggleSet changed shape; startup stays O(N^2) in the number of indexed objects")
        return False

    async def make_toggle(self: Any, __val: bool = False, *, name: str | None = None) -> Any:
        toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self: Any, toggle: Any) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.discard(toggle)
            if self.is_on() != before:
                self._condition.notify_all()

    async def drop_toggles(self: Any, toggles: Iterable[Any]) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.difference_update(toggles)
            if self.is_on() != before:
                self._condition.notify_all()

    cls.make_toggle = make_toggle
    cls.drop_toggle = drop_toggle
    cls.drop_toggles = drop_toggles
    cls._transkube_fixed = True
    return True
