"""Receding-horizon planning logic, independent of ROS.

One chunk = T frames generated from one observation (capture time `obs_stamp`). Frame 0 belongs
to `obs_stamp`, so the chunk's actions i run at `obs_stamp + i / fps`; the controller executes
the first `n_exec` of them, i.e. the chunk covers [obs_stamp, obs_stamp + n_exec / fps].

Asynchronous replanning: generation of chunk k+1 starts from the newest observation while
chunk k executes, early enough that k+1 arrives before k runs out:
    start when  now >= exec_end(k) - expected_latency - lead_margin
where expected_latency is a running estimate of observation -> trajectory time. Policies:
- "lead" (default): the rule above; at most one generation at a time. When planning is slower
  than a chunk (a chunk was late, or the expected latency reaches n_exec / fps - lead_margin)
  every chunk would end before it arrives, so with `sync_fallback` it plans as "sync" below
  until the latency fits again.
- "sync": plan only while the arm stands still (`settle_time` after the last chunk ends), and
  execute the chunk from its arrival (`anchor = "arrival"`), since the arm has not moved since
  its observation. Slower than "lead" (the arm waits while the model plans) but never late.
- "continuous": start again as soon as the previous generation finished.
- "on_demand": only when asked (`request_replan`, e.g. the /eva/replan service).
A chunk is anchored at its observation (`anchor = "observation"`, the default) unless the arm
was still when it was observed and the chunk was planned synchronously or finished too late to
run from its observation: then at its arrival. "Late" and the lead time count the IDM's decode
too (`decode_latency`, measured from the trajectories the planner hears). Lead enters the
synchronous fallback at once and leaves it only when the latency is under SYNC_EXIT_FRACTION of
the chunk, so it does not flip between the two on every chunk.
Stale observations (older than `max_obs_age`) are rejected: planning from them would execute
actions for a scene that has moved on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from eva_core.chunk_decoding import MAX_CHUNK_DURATION
from eva_core.config import Section, param
from eva_core.timeseries import StampedHistory, nearest_index

POLICIES = ("lead", "sync", "continuous", "on_demand")
SYNC_EXIT_FRACTION = 0.5    # lead leaves synchronous planning once the latency is under half a chunk
                            # (3/4 flip-flopped on a host whose latency jitters by +-40 %)


@dataclass
class PlannerConfig(Section):
    """The replanning policy's settings (the planner node's `planner` section extends it)."""

    n_exec: int = param(8, "frames of each chunk executed before the next one", ge=1)
    max_obs_age: float = param(0.5, "an observation older than this is rejected", unit="s", gt=0, le=60)
    policy: str = param("lead", "when to start the next chunk", choices=POLICIES)
    lead_margin: float = param(0.1, "policy lead: start this much before the running chunk's end", unit="s", ge=0,
                                 le=10)
    initial_latency: float = param(0.5, "generation latency assumed before the first measurement", unit="s", ge=0,
                                      le=600)
    latency_smoothing: float = param(0.3, "EMA weight of a new latency sample (0 keeps initial_latency)", ge=0, le=1)
    sync_fallback: bool = param(True, "policy lead: plan synchronously while generation is slower than a chunk")
    settle_time: float = param(0.3, "synchronous planning: wait this long after a chunk's end", unit="s", ge=0,
                                 le=10)


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
    anchor: str = "observation"   # chunk_decoding.CHUNK_ANCHORS: point 0 runs at obs_stamp, or at its arrival (`finished`)
    late: bool = False            # finished after its window from obs_stamp (minus lead_margin) had passed

    @property
    def exec_duration(self) -> float:
        return self.n_exec / self.fps

    @property
    def exec_start(self) -> float:
        """When point 0 runs (for an arrival anchor, the planner's publish time: the IDM adds its decode)."""
        return self.finished if self.anchor == "arrival" and self.finished is not None else self.obs_stamp

    @property
    def exec_end(self) -> float:
        return self.exec_start + self.exec_duration

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
        self.motion_end = float("-inf")        # when the last chunk that can run ends (arm still after)
        self.decode_latency = 0.0              # s, EMA of plan -> trajectory (the IDM), heard on its topic
        self._fallback = False                 # lead is planning synchronously
        self.counts = {"planned": 0, "failed": 0, "stale_rejected": 0, "replan_requests": 0,
                       "synchronous": 0, "late": 0}

    @property
    def synchronous(self) -> bool:
        """Plan only while the arm is still: policy sync, or lead while generation is slower than a chunk."""
        return self.config.policy == "sync" or self._fallback

    @property
    def total_latency(self) -> float:
        """Expected observation -> trajectory time: generation plus the IDM's decode."""
        return self.expected_latency + self.decode_latency

    # -- observations --------------------------------------------------------------------
    def check_observation(self, obs_stamp: float | None, now: float) -> tuple[bool, str]:
        """Is this observation fresh enough to plan from? Returns (ok, reason)."""
        if obs_stamp is None:
            return False, "no observation yet"
        age = now - obs_stamp
        if age > self.config.max_obs_age:
            return False, f"observation is {age:.3f} s old (max_obs_age {self.config.max_obs_age} s)"
        return True, ""

    def observed_still(self, obs_stamp: float) -> bool:
        """Was this frame taken after the arm stopped? Synchronous planning waits for one, since a
        chunk from a frame of the moving arm cannot run from its arrival."""
        with self._lock:
            return not self.synchronous or obs_stamp >= self.motion_end

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
            if self.synchronous:   # from a frame taken after the arm stopped
                start_at = self.motion_end + self.config.settle_time
                if now >= start_at:
                    return True, "arm still (synchronous)"
                return False, f"synchronous: next start in {start_at - now:.3f} s"
            start_at = self.last_done.exec_end - self.total_latency - self.config.lead_margin
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
        """Mark `chunk` generated; updates the latency estimate (observation -> now) and sets its
        anchor: a chunk too late to run from its observation runs from its arrival if the arm had
        stopped before it was observed (policy sync always, lead with `sync_fallback`)."""
        with self._lock:
            self._check_current(chunk)
            chunk.finished, chunk.status, chunk.timing = now, "done", dict(timing or {})
            c = self.config
            late = chunk.late = now + self.decode_latency + c.lead_margin >= chunk.exec_end
            arm_was_still = chunk.obs_stamp >= self.motion_end
            if arm_was_still and (self.synchronous or (late and c.policy == "lead" and c.sync_fallback)):
                chunk.anchor = "arrival"
                self.counts["synchronous"] += 1
            elif late:   # it ends before it can arrive; the arm keeps doing what it did
                self.counts["late"] += 1
            if chunk.anchor == "arrival" or not late:
                self.motion_end = max(self.motion_end, chunk.exec_end)
            a = c.latency_smoothing
            self.expected_latency = (1 - a) * self.expected_latency + a * (now - chunk.obs_stamp)
            if c.policy == "lead" and c.sync_fallback:   # enter at once; leave with a margin (no flip-flop)
                budget = chunk.exec_duration - c.lead_margin
                if late or self.total_latency >= budget:
                    self._fallback = True
                elif self.total_latency < SYNC_EXIT_FRACTION * budget:
                    self._fallback = False
            self.current, self.last_done = None, chunk
            self.counts["planned"] += 1
            return chunk

    def trajectory_published(self, end_time: float, now: float, chunk_id: int | None = None,
                             t_traj: float | None = None) -> None:
        """A decoded trajectory runs until `end_time` (its stamp + duration): the arm is not still
        before then. Refines the estimate from `finish`, which cannot see the IDM's decode time;
        for the newest chunk, its publish time `t_traj` also measures that decode time.
        ValueError for an end beyond one chunk's bound (it would hold synchronous planning off)."""
        end_time = float(end_time)
        if not end_time - now <= MAX_CHUNK_DURATION:   # NaN fails too
            raise ValueError(f"trajectory ends {end_time - now:.3g} s from now, beyond the "
                             f"{MAX_CHUNK_DURATION:g} s bound on one chunk; ignored")
        with self._lock:
            if end_time > now:   # one that ended already expires at the controller: the arm does not run it
                self.motion_end = max(self.motion_end, end_time)
            last = self.last_done
            if last is not None and chunk_id == last.chunk_id and t_traj is not None:
                decode = float(t_traj) - last.finished
                if 0.0 <= decode <= MAX_CHUNK_DURATION:
                    a = self.config.latency_smoothing
                    self.decode_latency = (1 - a) * self.decode_latency + a * decode

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
