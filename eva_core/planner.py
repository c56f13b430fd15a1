"""Receding-horizon planning logic, independent of ROS.

One chunk = T frames generated from one observation (capture time `obs_stamp`). Frame 0 belongs
to `obs_stamp`, so the chunk's actions i run at `obs_stamp + i / fps`; the controller executes
the first `n_exec` of them, i.e. the chunk covers [obs_stamp, obs_stamp + n_exec / fps].

Asynchronous replanning: generation of chunk k+1 starts from the newest observation while
chunk k executes, early enough that k+1 arrives before k runs out:
    start when  now >= exec_end(k) - expected_latency - lead_margin
where expected_latency is a running estimate of observation -> trajectory time. Policies:
- "lead" (default): the rule above; at most one generation at a time.
- "continuous": start again as soon as the previous generation finished.
- "on_demand": only when asked (`request_replan`, e.g. the /eva/replan service).
Stale observations (older than `max_obs_age`) are rejected: planning from them would execute
actions for a scene that has moved on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from eva_core.timeseries import StampedHistory, nearest_index

POLICIES = ("lead", "continuous", "on_demand")


@dataclass
class PlannerConfig:
    n_exec: int = 8                # actions of each chunk to execute before the next takes over
    max_obs_age: float = 0.5       # s; observations older than this are rejected
    policy: str = "lead"
    lead_margin: float = 0.1       # s of slack so chunk k+1 lands before chunk k ends
    initial_latency: float = 0.5   # s; latency guess before the first measurement
    latency_smoothing: float = 0.3  # EMA weight of a new latency sample

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"planner policy {self.policy!r} not in {POLICIES}")
        if self.n_exec < 1:
            raise ValueError(f"n_exec must be >= 1, got {self.n_exec}")
        if self.max_obs_age <= 0:
            raise ValueError(f"max_obs_age must be > 0, got {self.max_obs_age}")


@dataclass
class Chunk:
    chunk_id: int
    obs_stamp: float          # capture time of the observation (s)
    instruction: str
    fps: float
    n_exec: int
    started: float            # generation start time
    finished: float | None = None
    status: str = "generating"  # generating | done | failed
    reason: str = ""
    timing: dict = field(default_factory=dict)

    @property
    def exec_duration(self) -> float:
        return self.n_exec / self.fps

    @property
    def exec_end(self) -> float:
        return self.obs_stamp + self.exec_duration

    @property
    def generation_latency(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


class RecedingHorizonPlanner:
    """Chunk bookkeeping and the replanning decision. Thread-safe; no ROS, no model."""

    def __init__(self, config: PlannerConfig, fps: float, num_frames: int):
        if not (0 < fps < float("inf")) or num_frames < 2:  # NaN fails too
            raise ValueError(f"planner needs fps > 0 and num_frames >= 2, got {fps}, {num_frames}")
        self.config = config
        self.fps = float(fps)
        self.num_frames = int(num_frames)
        self.n_exec = min(config.n_exec, num_frames - 1)  # action i needs frames 0..i
        self.expected_latency = config.initial_latency
        self.current: Chunk | None = None      # generating now
        self.last_done: Chunk | None = None    # newest published chunk
        self._next_id = 0
        self._replan_requested = False
        self._lock = threading.Lock()
        self.counts = {"planned": 0, "failed": 0, "stale_rejected": 0, "replan_requests": 0}

    # -- observations --------------------------------------------------------------------
    def check_observation(self, obs_stamp: float | None, now: float) -> tuple[bool, str]:
        """Is this observation fresh enough to plan from? Returns (ok, reason)."""
        if obs_stamp is None:
            return False, "no observation yet"
        age = now - obs_stamp
        if age > self.config.max_obs_age:
            return False, f"observation is {age:.3f} s old (max_obs_age {self.config.max_obs_age} s)"
        return True, ""

    def reject_stale(self) -> None:
        with self._lock:
            self.counts["stale_rejected"] += 1

    # -- replanning decision --------------------------------------------------------------
    def request_replan(self) -> None:
        with self._lock:
            self._replan_requested = True
            self.counts["replan_requests"] += 1

    def should_start(self, now: float) -> tuple[bool, str]:
        """Should a new generation start now? Returns (yes, why)."""
        with self._lock:
            if self.current is not None:
                return False, "busy"
            if self._replan_requested:
                return True, "replan requested"
            if self.config.policy == "on_demand":
                return False, "waiting for a replan request"
            if self.last_done is None:
                return True, "first chunk"
            if self.config.policy == "continuous":
                return True, "continuous"
            start_at = self.last_done.exec_end - self.expected_latency - self.config.lead_margin
            if now >= start_at:
                return True, "lead time reached"
            return False, f"next start in {start_at - now:.3f} s"

    # -- chunk lifecycle ------------------------------------------------------------------
    def begin(self, obs_stamp: float, instruction: str, now: float) -> Chunk:
        with self._lock:
            if self.current is not None:
                raise RuntimeError(f"chunk {self.current.chunk_id} is still generating")
            chunk = Chunk(self._next_id, obs_stamp, instruction, self.fps, self.n_exec, started=now)
            self._next_id += 1
            self._replan_requested = False
            self.current = chunk
            return chunk

    def finish(self, chunk: Chunk, now: float, timing: dict | None = None) -> Chunk:
        """Mark `chunk` generated; updates the latency estimate (observation -> now)."""
        with self._lock:
            self._check_current(chunk)
            chunk.finished, chunk.status, chunk.timing = now, "done", dict(timing or {})
            a = self.config.latency_smoothing
            self.expected_latency = (1 - a) * self.expected_latency + a * (now - chunk.obs_stamp)
            self.current, self.last_done = None, chunk
            self.counts["planned"] += 1
            return chunk

    def fail(self, chunk: Chunk, now: float, reason: str) -> Chunk:
        with self._lock:
            self._check_current(chunk)
            chunk.finished, chunk.status, chunk.reason = now, "failed", reason
            self.current = None
            self.counts["failed"] += 1
            return chunk

    def _check_current(self, chunk: Chunk) -> None:
        if self.current is not chunk:
            raise RuntimeError(f"chunk {chunk.chunk_id} is not the one generating")


class FrameHistory:
    """Recent camera frames, to give the world model its history at the chunk's frame rate.

    `select(stamp, n, fps)` returns up to n frames, oldest first, the ones captured nearest to
    stamp - k/fps for k = n..1 (only frames older than `stamp`; none -> []).
    """

    def __init__(self, horizon: float = 2.0):
        self._history = StampedHistory(horizon)

    @property
    def horizon(self) -> float:
        return self._history.horizon

    def add(self, stamp: float, frame) -> None:
        self._history.add(stamp, frame)

    def __len__(self) -> int:
        return len(self._history)

    def select(self, stamp: float, n: int, fps: float) -> list:
        stamps, frames = self._history.before(stamp)
        if n <= 0 or not stamps:
            return []
        return [frames[nearest_index(stamps, stamp - k / fps)] for k in range(n, 0, -1)]
