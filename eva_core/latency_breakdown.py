"""Where a chunk's camera-to-plan latency goes, per chunk and per stage (ROS-free, torch-free).

The planner splits each chunk's camera-to-plan time (frame capture stamp -> chunk published)
into parts that add up to it exactly:

    camera_to_plan = frame_age + worker_wait + generate + executor

- frame_age:   the newest frame's age when the planner decides to plan (camera, transport, the
               planner's image callback and the worker's poll); `frame_transport` (capture ->
               the planner's image callback) is its first part, reported beside it;
- worker_wait: planning decided -> the model starts (history selection, a hand-off to a worker);
- generate:    the world model's own time (`last_timing["total"]`; encode / denoise / decode
               reported beside it), or the wall time of the call for a model without timing;
               beside it, `generate_wait`: the call's wall time minus the CPU time of the thread
               that ran it (time.thread_time): waiting for the GIL behind other Python threads of
               the process, or for a core behind other processes;
- executor:    the rest: the call's time outside the model's own, the checks after it, the
               publish call; Python work and GIL waits of whatever shares the interpreter.

The IDM node adds, per chunk: `transport` (the chunk's t_plan -> its callback), `idm`, `reward`
and `safety` (ChunkDecoder.last_timing) and `idm_total` (callback -> trajectory published).
`BreakdownStats` keeps a window of per-chunk records and summarises each stage in ms.
"""

from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np

PLANNER_PARTS = ("frame_age", "worker_wait", "generate", "executor")   # sum = camera_to_plan
PLANNER_DETAIL = ("frame_transport", "encode", "denoise", "decode", "generate_wait")   # parts of frame_age / generate
IDM_PARTS = ("transport", "idm", "reward", "safety", "idm_total")
TOLERANCE_S = 1e-3   # the parts of one chunk add up to its camera_to_plan within this


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def planner_breakdown(stamp: float, t_recv: float | None, t_begin: float, t_gen_start: float,
                      t_gen_end: float, t_plan: float, timing: dict | None = None,
                      cpu: float | None = None) -> dict:
    """One chunk's planner-side breakdown in seconds (see the module docstring). `timing`: the
    model's last_timing; without a finite `total` the call's wall time stands for generate.
    `cpu`: the generating thread's CPU seconds during the call (-> generate_wait)."""
    timing = timing or {}
    wall = t_gen_end - t_gen_start
    generate = float(timing["total"]) if _finite(timing.get("total")) else wall
    out = {"camera_to_plan": t_plan - stamp, "frame_age": t_begin - stamp, "worker_wait": t_gen_start - t_begin,
           "generate": generate}
    out["executor"] = out["camera_to_plan"] - out["frame_age"] - out["worker_wait"] - generate
    if t_recv is not None:
        out["frame_transport"] = t_recv - stamp
    for key in ("encode", "denoise", "decode"):
        if _finite(timing.get(key)):
            out[key] = float(timing[key])
    if _finite(timing.get("wait")):   # a model in its own process measured its own (eva_core.model_process)
        out["generate_wait"] = float(timing["wait"])
    elif _finite(cpu):
        out["generate_wait"] = max(0.0, wall - cpu)
    return out


def idm_breakdown(t_plan: float | None, t_recv: float, t_done: float, timing: dict | None = None) -> dict:
    """One chunk's IDM-side breakdown in seconds: transport (absent without t_plan), the
    decoder's stages that ran (`timing`: ChunkDecoder.last_timing) and idm_total."""
    out = {"idm_total": t_done - t_recv}
    if t_plan is not None:
        out["transport"] = t_recv - t_plan
    for key in ("idm", "reward", "safety"):
        if _finite((timing or {}).get(key)):
            out[key] = float(timing[key])
    return out


def unexplained(record: dict) -> float:
    """camera_to_plan minus the sum of its parts (0 up to rounding for a planner record)."""
    return record["camera_to_plan"] - sum(record[k] for k in PLANNER_PARTS)


class BreakdownStats:
    """Thread-safe window of per-chunk breakdown records (seconds); summaries in ms."""

    def __init__(self, maxlen: int = 1000):
        self._records: deque[dict] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, record: dict) -> None:
        clean = {k: float(v) for k, v in record.items() if _finite(v)}
        with self._lock:
            self._records.append(clean)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def last(self) -> dict:
        with self._lock:
            return dict(self._records[-1]) if self._records else {}

    def summary(self) -> dict:
        """{stage: {count, p50_ms, p90_ms, max_ms, last_ms}} for every stage seen."""
        with self._lock:
            records = list(self._records)
        keys = {k for r in records for k in r}
        out = {}
        for key in sorted(keys):
            x = np.asarray([r[key] for r in records if key in r], dtype=float) * 1e3
            p50, p90 = np.percentile(x, [50, 90])
            out[key] = {"count": int(x.size), "p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3),
                        "max_ms": round(float(x.max()), 3), "last_ms": round(float(x[-1]), 3)}
        return out

    def values(self, prefix: str = "latency.") -> dict:
        """Flat diagnostic values: the last chunk's ms per stage."""
        return {f"{prefix}{k}_ms": round(v * 1e3, 3) for k, v in self.last.items()}


def merge(*summaries: dict) -> dict:
    """One breakdown from the planner's and the IDM node's summaries (disjoint stage names)."""
    out = {}
    for s in summaries:
        out.update(s or {})
    return out
