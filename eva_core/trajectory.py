"""Trajectory execution at the control rate, independent of ROS.

`Trajectory`: timed joint positions (time of point i = stamp + times[i]), linearly interpolated.
`TrajectoryFollower`: what controller_node runs every tick, in the spirit of ros2_control's
JointTrajectoryController:
- sample the active trajectory at the current time (points already in the past are skipped);
- replace it smoothly: a new trajectory takes over *from the current time*, and the gap between
  the running command (position and velocity) and the new trajectory decays over `blend_time`
  with a cubic Hermite, so the reference is continuous in position and velocity;
- with no trajectory (none yet, finished, or cleared) hold the last reference;
- shape the reference with a tracking filter (the same SafetyFilter algorithm) at reduced
  limits (`velocity_scale`, `acceleration_scale`, a wider `position_margin`), so the stream
  handed to the final safety filter is feasible with headroom: the final filter passes a feasible
  stream unchanged, so it should never need to clip (each clip is counted by the controller as
  a limit violation and points at a bug or a fault, not at normal replanning).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eva_core.config import Section, param
from eva_core.safety import SafetyConfig, SafetyFilter, SafetyReport, nonfinite_dims


@dataclass
class Trajectory:
    stamp: float              # absolute time of times == 0 (s)
    times: np.ndarray         # (N,) strictly increasing, >= 0
    positions: np.ndarray     # (N, D) action units
    chunk_id: int = -1

    def __post_init__(self):
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64)
        if self.positions.ndim != 2 or self.positions.shape[0] != self.times.shape[0] or self.times.size == 0:
            raise ValueError(f"trajectory: {self.times.shape[0]} times for positions of shape {self.positions.shape}")
        if not (np.all(np.isfinite(self.positions)) and np.all(np.isfinite(self.times)) and np.isfinite(self.stamp)):
            raise ValueError(f"trajectory: non-finite values (dims {nonfinite_dims(self.positions)})")
        if np.any(np.diff(self.times) <= 0) or self.times[0] < 0:
            raise ValueError("trajectory: times must start >= 0 and increase strictly")

    @property
    def start_time(self) -> float:
        return self.stamp + float(self.times[0])

    @property
    def end_time(self) -> float:
        return self.stamp + float(self.times[-1])

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Position and velocity at absolute time t (held constant outside the time range)."""
        rel = t - self.stamp
        if rel <= self.times[0]:
            return self.positions[0].copy(), np.zeros(self.positions.shape[1])
        if rel >= self.times[-1]:
            return self.positions[-1].copy(), np.zeros(self.positions.shape[1])
        i = int(np.searchsorted(self.times, rel, side="right")) - 1
        t0, t1 = self.times[i], self.times[i + 1]
        vel = (self.positions[i + 1] - self.positions[i]) / (t1 - t0)
        return self.positions[i] + vel * (rel - t0), vel


def hermite_decay(e0: np.ndarray, ev0: np.ndarray, tau: float, duration: float) -> np.ndarray:
    """Cubic h with h(0)=e0, h'(0)=ev0, h(T)=h'(T)=0, evaluated at tau (0 after T)."""
    if duration <= 0 or tau >= duration:
        return np.zeros_like(e0)
    s = max(tau, 0.0) / duration
    h00 = 2 * s**3 - 3 * s**2 + 1
    h10 = s**3 - 2 * s**2 + s
    return h00 * e0 + h10 * duration * ev0


@dataclass
class FollowerConfig(Section):
    """Trajectory follower options (checked by eva_core.config: typed, finite, ranged)."""

    blend_time: float = param(0.2, "time over which a replaced trajectory's gap decays", unit="s", ge=0, le=5)
    velocity_scale: float = param(0.9, "tracking-filter velocity limit, fraction of the embodiment's", gt=0, le=1)
    acceleration_scale: float = param(0.5, "tracking-filter acceleration limit, fraction of the embodiment's",
                                      gt=0, le=1)
    position_margin: float = param(0.02, "kept by the tracking filter from the limits (final filter: 0.01)",
                                   unit="rad", ge=0)


class TrajectoryFollower:
    """Per-tick trajectory execution with smooth replacement and hold. Not thread-safe by itself."""

    def __init__(self, embodiment, dt: float, config: FollowerConfig | None = None):
        self.emb = embodiment
        self.dt = float(dt)
        self.config = config or FollowerConfig()
        c = self.config
        self.shaper = SafetyFilter(embodiment, dt, SafetyConfig(
            position_margin=c.position_margin, velocity_scale=c.velocity_scale,
            acceleration_scale=c.acceleration_scale))
        self.trajectory: Trajectory | None = None
        self._hold: np.ndarray | None = None
        self._blend = None  # (t0, e0, ev0)
        self.counts = {"accepted": 0, "expired": 0, "finished": 0}

    @property
    def ready(self) -> bool:
        return self._hold is not None

    @property
    def active(self) -> bool:
        return self.trajectory is not None

    def reset(self, position, velocity=None) -> None:
        """Start (or restart after e-stop) from a measured state, holding it."""
        self.shaper.reset(position, velocity)
        self._hold = self.shaper.position
        self.trajectory, self._blend = None, None

    def clear(self) -> None:
        """Drop the active trajectory and hold where the command is now."""
        if self.ready:
            self._hold = self.shaper.position
        self.trajectory, self._blend = None, None

    def replace(self, traj: Trajectory, now: float) -> bool:
        """Make `traj` the active trajectory from time `now`. False if it ended already."""
        if not self.ready:
            raise RuntimeError("TrajectoryFollower.replace before reset()")
        if traj.positions.shape[1] != self.emb.dof:
            raise ValueError(f"trajectory has {traj.positions.shape[1]} dims, embodiment {self.emb.dof}")
        if traj.end_time <= now:
            self.counts["expired"] += 1
            return False
        q_new, v_new = traj.sample(now)
        self._blend = (now, self.shaper.position - q_new, self.shaper.velocity - v_new)
        self.trajectory = traj
        self.counts["accepted"] += 1
        return True

    def reference(self, now: float) -> np.ndarray:
        """The (unshaped) target at `now`; finishing a trajectory switches to holding its end."""
        if self.trajectory is None:
            return self._hold.copy()
        q, _ = self.trajectory.sample(now)
        if self._blend is not None:
            t0, e0, ev0 = self._blend
            q = q + hermite_decay(e0, ev0, now - t0, self.config.blend_time)
        if now >= self.trajectory.end_time:
            self._hold = q
            self.trajectory, self._blend = None, None
            self.counts["finished"] += 1
        return q

    def step(self, now: float) -> tuple[np.ndarray, SafetyReport]:
        """One control tick: the shaped command for `now` (feed it to the final safety filter)."""
        return self.shaper.step(self.reference(now))
