"""Stamped samples: the one nearest-timestamp lookup and a bounded, thread-safe history.

Used for the joint-state history of chunk decoding (the state at a chunk's observation time)
and the planner's camera-frame history (frames at the chunk's frame rate before an observation).
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import Sequence


def nearest_index(stamps: Sequence[float], t: float) -> int:
    """Index of the stamp closest to `t` in ascending `stamps` (a tie picks the earlier one).

    O(log n). Raises ValueError on an empty sequence."""
    if len(stamps) == 0:
        raise ValueError("nearest_index: no stamps")
    i = bisect.bisect_left(stamps, t)
    if i == 0:
        return 0
    if i == len(stamps):
        return i - 1
    return i - 1 if t - stamps[i - 1] <= stamps[i] - t else i


class StampedHistory:
    """(stamp, item) pairs in stamp order, keeping those within `horizon` s of the newest.

    Out-of-order arrivals are inserted in place. A non-finite stamp, or (given the receiver's
    clock `now`) one more than `horizon` s in the future, is a ValueError: such a stamp would
    become the newest and push every real sample out of the history."""

    def __init__(self, horizon: float):
        if not (math.isfinite(horizon) and horizon > 0):
            raise ValueError(f"history horizon must be a positive number of seconds, got {horizon}")
        self.horizon = float(horizon)
        self._stamps: list[float] = []
        self._items: list = []
        self._lock = threading.Lock()

    def add(self, stamp: float, item, now: float | None = None) -> None:
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be finite, got {stamp}")
        if now is not None and stamp > now + self.horizon:
            raise ValueError(f"stamp is {stamp - now:.3g} s in the future (more than the {self.horizon:g} s history)")
        with self._lock:
            i = bisect.bisect_right(self._stamps, stamp)
            self._stamps.insert(i, stamp)
            self._items.insert(i, item)
            cut = bisect.bisect_left(self._stamps, self._stamps[-1] - self.horizon)
            if cut:
                del self._stamps[:cut], self._items[:cut]

    def nearest(self, t: float):
        """(stamp, item) closest to t, or None when empty."""
        with self._lock:
            if not self._stamps:
                return None
            i = nearest_index(self._stamps, t)
            return self._stamps[i], self._items[i]

    def before(self, t: float) -> tuple[list[float], list]:
        """Copies of the stamps and items strictly older than t."""
        with self._lock:
            k = bisect.bisect_left(self._stamps, t)
            return self._stamps[:k], self._items[:k]

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps)
