"""Time, injected: guards ask a clock so tests can move time instead of sleeping."""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Protocol

import anyio
import anyio.lowlevel


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wall(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class ManualClock:
    """A clock tests advance by hand.

    By default ``sleep`` moves the clock itself: a guard's backoff passes at once, and tests see
    every delay in ``slept``. With ``sleep_waits=True`` a sleeper instead waits until the test has
    advanced time past its deadline. That is the mode for code that sleeps in a loop (an upstream
    supervisor's heartbeat and restart backoff): with sleeps that move time, such a loop would spin
    and push the clock forward on its own.
    """

    def __init__(
        self, start: float = 1_000.0, wall_start: float = 1_700_000_000.0, *, sleep_waits: bool = False
    ) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self.sleep_waits = sleep_waits
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            heapq.heappop(self._sleepers)[2].set()

    @property
    def sleepers(self) -> int:
        """How many tasks wait for the test to move time (``sleep_waits`` mode)."""
        return len(self._sleepers)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if not self.sleep_waits:
            self.advance(max(0.0, seconds))
            await anyio.lowlevel.checkpoint()
            return
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        woken = anyio.Event()
        entry = (self._now + seconds, next(self._order), woken)
        heapq.heappush(self._sleepers, entry)
        try:
            await woken.wait()
        finally:
            if not woken.is_set():  # cancelled: forget the sleeper
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)
