"""Per-chunk world-model costs for the planner's diagnostics and report (torch-free).

    stats = StageStats()
    stats.add(wm.last_timing)        # after each chunk: {"encode", "denoise", "decode", "total" (s),
                                     #                    "transformer_calls", ...}
    stats.values()                   # flat: latest chunk + p50 over the window (diagnostics)
    stats.summary()                  # nested: per stage {count, p50, p90, max, last} (report JSON)

Only the keys a model reports are kept: a kind without `last_timing` leaves the stats empty.
"""

from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np

SECONDS = ("encode", "denoise", "decode", "total")   # WorldModel.last_timing, seconds
COUNTS = ("transformer_calls",)                      # per chunk, counted by a hook


class StageStats:
    def __init__(self, maxlen: int = 1000):
        self._window = {k: deque(maxlen=maxlen) for k in SECONDS + COUNTS}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, timing: dict | None) -> None:
        with self._lock:
            for key, window in self._window.items():
                value = (timing or {}).get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    window.append(float(value))
                    self._last[key] = float(value)

    def summary(self) -> dict:
        """{stage: {count, p50, p90, max, last}} for every stage seen ("_s" suffix: seconds)."""
        with self._lock:
            data = {k: np.asarray(w, dtype=float) for k, w in self._window.items() if w}
            last = dict(self._last)
        out = {}
        for key, x in data.items():
            p50, p90 = np.percentile(x, [50, 90])
            name = f"{key}_s" if key in SECONDS else key
            out[name] = {"count": int(x.size), "p50": round(float(p50), 6), "p90": round(float(p90), 6),
                         "max": round(float(x.max()), 6), "last": round(last[key], 6)}
        return out

    def values(self) -> dict:
        """Flat diagnostic values: `<stage>_last` and `<stage>_p50` per stage seen."""
        flat = {}
        for name, s in self.summary().items():
            flat[f"{name}_last" if not name.endswith("_s") else f"{name[:-2]}_last_s"] = s["last"]
            flat[f"{name}_p50" if not name.endswith("_s") else f"{name[:-2]}_p50_s"] = s["p50"]
        return flat
