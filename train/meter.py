"""The throughput meter: optimizer steps per second over the recent steps, and the time the rest will take."""

from __future__ import annotations

import time
from collections import deque


class Throughput:
    """Call :meth:`tick` after every optimizer step. The rate is over the last ``window`` steps, so a slow
    first step (allocator warm-up) or a save fades out of it."""

    def __init__(self, window: int = 20) -> None:
        self._last = time.monotonic()
        self._times: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        """One more step done; returns the steps per second (0 until a step took measurable time)."""
        now = time.monotonic()
        self._times.append(now - self._last)
        self._last = now
        return self.rate

    @property
    def rate(self) -> float:
        total = sum(self._times)
        return len(self._times) / total if total > 0 else 0.0

    def eta_s(self, remaining_steps: int) -> float | None:
        """Seconds the ``remaining_steps`` will take at the current rate (None before there is one)."""
        rate = self.rate
        return round(remaining_steps / rate, 1) if rate else None
