"""Chunk decoding: generated frames + chunk metadata + joint-state history -> trajectory | rejection.

A chunk is T frames at `fps` generated from one observation; frame 0 belongs to the
observation's capture time `stamp`. `ChunkDecoder.decode` runs, in order:
1. checks: the metadata ranges (`ChunkMeta`), the frames' shape, dtype, range and finiteness;
2. the batched IDM (eva_core.idm): (T, 3, H, W) in [0, 1] -> (T, dof) actions; NaN/inf rejected,
   and so are actions beyond a joint's position limits by more than `action_limit_tolerance` x
   its range (an IDM far off: rejected, not clipped; closer ones the safety filter clips);
3. the executability reward (eva_core.reward) of the T actions; with a `reward_threshold`
   set, a chunk scoring below it is rejected and a replan asked for;
4. the joint state nearest to `stamp` (`JointStateHistory`); none within `max_state_age`
   rejects the chunk (e.g. the controller died: nothing to start the trajectory from);
5. actions 0..n_exec (at 1/fps) resampled to the control dt and passed through the safety
   filter from that state. Point i of the result is at stamp + i*dt, in action units.
Every rejection names its kind (the diagnostic event) and a one-line reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from eva_core.events import Reject  # one home of the event kinds; re-exported here
from eva_core.safety import SafetyConfig, SafetyFilter, SafetyReport, nonfinite_dims, out_of_limits
from eva_core.timeseries import StampedHistory

CHUNK_ANCHORS = ("observation", "arrival")   # what point 0 of a chunk's trajectory runs at
FPS_MAX = 1000.0            # frames per second of a chunk: (0, FPS_MAX]
MAX_CHUNK_DURATION = 30.0   # s: n_exec / fps, the executed span of one chunk (EVA: ~1.5 of 3 s)
MAX_CHUNK_FRAMES = 1000     # T (EVA: 49); the IDM resizes every frame, so a message of tiny frames
                            # must not ask for unbounded work


COUNTERS = {Reject.BAD_CHUNK: "rejected_frames", Reject.NONFINITE_FRAMES: "rejected_frames",
            Reject.NONFINITE_ACTIONS: "rejected_actions", Reject.LOW_REWARD: "rejected_reward",
            Reject.NO_JOINT_STATE: "no_state", Reject.STALE_JOINT_STATE: "no_state",
            Reject.SAFETY_REJECTED: "rejected_safety", Reject.ACTIONS_OUT_OF_LIMITS: "rejected_limits"}


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass(frozen=True)
class ChunkMeta:
    """Typed, ranged metadata of one chunk. Invalid values raise ValueError("<field>: <problem>")."""
    chunk_id: int
    frames: int            # 2 <= T <= MAX_CHUNK_FRAMES
    fps: float             # (0, FPS_MAX]
    n_exec: int            # 1 <= n_exec <= T - 1 (action i needs frames 0..i)
    stamp: float           # capture time of the observation (frame 0), s since epoch
    t_plan: float | None = None  # publish time of the chunk (latency accounting)
    anchor: str = "observation"  # point 0 runs at `stamp`, or ("arrival") when its trajectory is published

    def __post_init__(self):
        if self.anchor not in CHUNK_ANCHORS:
            raise ValueError(f"anchor: one of {CHUNK_ANCHORS}, got {self.anchor!r}")
        for key in ("chunk_id", "frames", "n_exec"):
            if not _is_int(getattr(self, key)):
                raise ValueError(f"{key}: must be an integer, got {getattr(self, key)!r}")
        for key in ("fps", "stamp", "t_plan"):
            v = getattr(self, key)
            if v is None and key == "t_plan":
                continue
            if _is_int(v):
                object.__setattr__(self, key, float(v))
            elif not isinstance(v, (float, np.floating)) or not math.isfinite(v):
                raise ValueError(f"{key}: must be a finite number, got {v!r}")
        if not 2 <= self.frames <= MAX_CHUNK_FRAMES:
            raise ValueError(f"frames: a chunk has 2 to {MAX_CHUNK_FRAMES} frames, got {self.frames}")
        if not 0.0 < self.fps <= FPS_MAX:
            raise ValueError(f"fps: must be in (0, {FPS_MAX:g}], got {self.fps}")
        if not 1 <= self.n_exec <= self.frames - 1:
            raise ValueError(f"n_exec: must be in [1, frames - 1 = {self.frames - 1}], got {self.n_exec}")
        if self.exec_duration > MAX_CHUNK_DURATION:
            raise ValueError(f"n_exec: n_exec / fps = {self.exec_duration:.3g} s exceeds the "
                             f"{MAX_CHUNK_DURATION:g} s bound on one chunk")

    @property
    def exec_duration(self) -> float:
        return self.n_exec / self.fps

    @classmethod
    def from_fields(cls, fields: Mapping[str, str], stamp: float) -> "ChunkMeta":
        """Parse the text key=value fields of the encoding (id, frames, fps, n_exec[, t_plan])."""
        def get(key, conv, kind):
            if key not in fields:
                raise ValueError(f"{key}: missing")
            try:
                return conv(fields[key])
            except (TypeError, ValueError):
                raise ValueError(f"{key}: not {kind}: {fields[key]!r}") from None
        t_plan = get("t_plan", float, "a number") if "t_plan" in fields else None
        return cls(chunk_id=get("id", int, "an integer"), frames=get("frames", int, "an integer"),
                   fps=get("fps", float, "a number"), n_exec=get("n_exec", int, "an integer"),
                   stamp=float(stamp), t_plan=t_plan, anchor=fields.get("anchor", "observation"))

    def to_fields(self) -> dict:
        out = {"id": self.chunk_id, "frames": self.frames, "fps": repr(float(self.fps)), "n_exec": self.n_exec}
        if self.t_plan is not None:
            out["t_plan"] = f"{self.t_plan:.6f}"
        if self.anchor != "observation":   # the default is left out: older readers parse the rest
            out["anchor"] = self.anchor
        return out


class JointStateHistory(StampedHistory):
    """Measured joint states (positions, velocities in action units) of the last `horizon` s."""

    def __init__(self, dof: int, horizon: float = 5.0):
        super().__init__(horizon)
        self.dof = int(dof)

    def add(self, stamp: float, positions, velocities=None, now: float | None = None) -> None:
        """Raises ValueError naming the field for a wrong shape, NaN/inf values or (with the
        receiver's clock `now`) a stamp far in the future."""
        q = np.asarray(positions, dtype=np.float64).reshape(-1)
        v = np.zeros(self.dof) if velocities is None else np.asarray(velocities, dtype=np.float64).reshape(-1)
        for name, x in (("position", q), ("velocity", v)):
            if x.shape != (self.dof,):
                raise ValueError(f"{name}: {x.size} values, expected {self.dof}")
            if not np.all(np.isfinite(x)):
                raise ValueError(f"{name}: NaN/inf in dims {nonfinite_dims(x[None])}")
        try:
            super().add(stamp, (q, v), now)
        except ValueError as exc:
            raise ValueError(f"header.stamp: {exc}") from None


@dataclass
class DecodedChunk:
    meta: ChunkMeta
    positions: np.ndarray   # (N, dof) safety-filtered targets, action units; point i at stamp + i*dt
    dt: float
    score: float
    safety: SafetyReport


@dataclass
class Rejection:
    kind: Reject
    message: str
    score: float | None = None   # the reward, when it was computed before the rejection
    replan: bool = False         # ask the planner for a new chunk now


def resample(actions: np.ndarray, fps: float, n_exec: int, dt: float) -> np.ndarray:
    """Actions 0..n_exec at spacing 1/fps -> positions at spacing dt over n_exec/fps seconds."""
    n = min(n_exec, actions.shape[0] - 1)
    src_t = np.arange(n + 1) / fps
    dst_t = np.arange(int(np.floor(src_t[-1] / dt + 1e-9)) + 1) * dt
    return np.stack([np.interp(dst_t, src_t, actions[: n + 1, j]) for j in range(actions.shape[1])], axis=1)


def frames_problem(frames: np.ndarray, meta: ChunkMeta) -> tuple[Reject, str] | None:
    """The first problem of a (T, H, W, 3) frame stack, or None."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape) < 1:
        return Reject.BAD_CHUNK, f"frames: shape {frames.shape}, expected (T, H, W, 3)"
    if frames.shape[0] != meta.frames:
        return Reject.BAD_CHUNK, f"frames: {frames.shape[0]} frames, metadata says {meta.frames}"
    if frames.dtype == np.uint8:
        return None
    if frames.dtype not in (np.float32, np.float64):
        return Reject.BAD_CHUNK, f"frames: dtype {frames.dtype}, expected uint8 or float32 in [0, 1]"
    if not np.all(np.isfinite(frames)):
        return Reject.NONFINITE_FRAMES, "frames: NaN/inf pixels"
    if frames.min() < 0.0 or frames.max() > 1.0:
        return Reject.BAD_CHUNK, f"frames: float pixels in [{frames.min():.3g}, {frames.max():.3g}], expected [0, 1]"
    return None


def load_or_build_idm(checkpoint: str, variant: str, fusion: str | None, action_dim: int):
    """The IDM of `checkpoint` (our safetensors dir or an EVA .pt), else a fresh `variant`."""
    from eva_core.idm import IDMConfig, build_idm, load_idm

    if checkpoint:
        return load_idm(checkpoint)
    return build_idm(IDMConfig(variant=variant, fusion=fusion, action_dim=action_dim))


class ChunkDecoder:
    """Frames -> trajectory, ROS-free. One caller at a time (the node's work callback group)."""

    def __init__(self, embodiment, idm, dt: float, *, safety: SafetyConfig | None = None,
                 reward_threshold: float | None = None, max_state_age: float = 0.25,
                 batch_size: int = 16, precision: str = "float32", reward_config=None,
                 action_limit_tolerance: float = 1.0):
        from eva_core.idm import resolve_precision
        from eva_core.reward import RewardConfig

        if idm.config.action_dim != embodiment.dof:
            raise ValueError(f"IDM predicts {idm.config.action_dim}-D actions; the embodiment has "
                             f"{embodiment.dof} DOF")
        if not (math.isfinite(max_state_age) and max_state_age > 0):
            raise ValueError(f"max_state_age: must be > 0 s, got {max_state_age}")
        self.emb = embodiment
        self.idm = idm
        self.dt = float(dt)
        self.filter = SafetyFilter(embodiment, self.dt, safety or SafetyConfig())
        self.reward_threshold = reward_threshold   # None: the reward is reported, never gates
        self.max_state_age = float(max_state_age)
        if not (math.isfinite(action_limit_tolerance) and action_limit_tolerance >= 0):
            raise ValueError(f"action_limit_tolerance: must be >= 0, got {action_limit_tolerance}")
        self.action_tolerance = float(action_limit_tolerance) * (embodiment.pos_upper - embodiment.pos_lower)
        self.batch_size = max(1, int(batch_size))
        self.precision = resolve_precision(precision, idm.action_mean.device)
        self.reward_config = reward_config or RewardConfig.from_embodiment(embodiment)
        self.counts = {"chunks": 0, "trajectories": 0, "rejected_frames": 0, "rejected_actions": 0,
                       "rejected_reward": 0, "rejected_safety": 0, "rejected_limits": 0, "no_state": 0, "safety_modified": 0}
        self.scores: list[float] = []   # the reward of every chunk that got that far
        self.last_timing: dict[str, float] = {}   # s per stage of the last decode that ran it: idm, reward, safety

    # -- the stages -----------------------------------------------------------------------
    def predict(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 or float in [0, 1] -> (T, dof) float64 actions (batched IDM)."""
        import torch

        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        video = video.float() / 255.0 if frames.dtype == np.uint8 else video.float()
        with torch.inference_mode():
            actions = self.idm.predict(video, batch_size=self.batch_size, precision=self.precision)
        return actions.numpy().astype(np.float64)

    def score(self, actions: np.ndarray, fps: float) -> float:
        from eva_core.reward import executability_reward

        return float(executability_reward(actions, fps=fps, config=self.reward_config).score)

    def warmup(self) -> None:
        """Pay the first-call costs (allocator, lazy init) now, not on the first chunk."""
        self.score(self.predict(np.zeros((4, 64, 64, 3), np.uint8)), 16.0)

    # -- the pipeline ---------------------------------------------------------------------
    def reject(self, kind: Reject, message: str, score: float | None = None, replan: bool = False) -> Rejection:
        self.counts[COUNTERS[kind]] += 1
        return Rejection(kind, message, score, replan)

    def bad_chunk(self, message: str) -> Rejection:
        """A chunk whose message could not be parsed: counted, rejected."""
        self.counts["chunks"] += 1
        return self.reject(Reject.BAD_CHUNK, message)

    def decode(self, frames: np.ndarray, meta: ChunkMeta, states: JointStateHistory) -> DecodedChunk | Rejection:
        self.counts["chunks"] += 1
        self.last_timing = {}
        cid = meta.chunk_id
        problem = frames_problem(np.asarray(frames), meta)
        if problem:
            return self.reject(problem[0], f"chunk {cid}: {problem[1]}; no trajectory")
        t0 = time.perf_counter()
        actions = self.predict(frames)
        self.last_timing["idm"] = time.perf_counter() - t0
        if not np.all(np.isfinite(actions)):
            return self.reject(Reject.NONFINITE_ACTIONS, f"chunk {cid}: IDM produced NaN/inf actions; no trajectory")
        beyond = out_of_limits(self.emb, actions, self.action_tolerance)
        if beyond:
            return self.reject(Reject.ACTIONS_OUT_OF_LIMITS, f"chunk {cid}: IDM action {beyond}; no trajectory")
        t0 = time.perf_counter()
        score = self.score(actions, meta.fps)
        self.last_timing["reward"] = time.perf_counter() - t0
        self.scores.append(score)
        if self.reward_threshold is not None and score < self.reward_threshold:
            return self.reject(Reject.LOW_REWARD, f"chunk {cid}: reward {score:.3f} < {self.reward_threshold}; "
                               "replanning", score, replan=True)
        state = states.nearest(meta.stamp)
        if state is None:
            return self.reject(Reject.NO_JOINT_STATE, f"chunk {cid}: no joint state yet; no trajectory", score)
        age = abs(state[0] - meta.stamp)
        if age > self.max_state_age:
            return self.reject(Reject.STALE_JOINT_STATE, f"chunk {cid}: nearest joint state is {age:.2f} s from the "
                               f"observation (> max_state_age {self.max_state_age} s); no trajectory", score)
        q, v = state[1]
        t0 = time.perf_counter()
        targets = resample(actions, meta.fps, meta.n_exec, self.dt)
        positions, rep = self.filter.filter_chunk(targets, q, v)
        self.last_timing["safety"] = time.perf_counter() - t0
        if rep.rejected:
            return self.reject(Reject.SAFETY_REJECTED, f"chunk {cid}: {rep.reason}", score)
        self.counts["safety_modified"] += int(rep.modified)
        self.counts["trajectories"] += 1
        return DecodedChunk(meta, positions, self.dt, score, rep)
