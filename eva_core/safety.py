"""Safety filter: the only path from proposed joint targets to arm commands.

Per control tick (dt) and per dimension it enforces, in priority order:
1. finite input (a NaN/inf target rejects the whole chunk; the arm holds),
2. position limits minus a margin (targets clipped; a braking bound keeps the commanded
   position inside the limits without ever exceeding the acceleration limit),
3. |velocity| <= vel_max and |velocity change| <= acc_max * dt.
Grippers are clamped to their [0, 1] range the same way. Every change is counted per dimension.
The limits must be finite and ordered (checked when the filter is built), and an output that is
not finite is rejected (the arm holds its last position), never passed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eva_core.config import Section, param
from eva_core.embodiment import Embodiment


def nonfinite_dims(a: np.ndarray) -> list[int]:
    """Dimensions (columns) of a (T, D) array holding any NaN/inf."""
    return np.flatnonzero(~np.isfinite(a).all(axis=0)).tolist()


def out_of_limits(embodiment: Embodiment, positions, tolerance) -> str:
    """"" if every point of a (T, D) array (action units) lies within the embodiment's position
    limits widened by `tolerance` (a scalar or one value per dim), else one line naming the first
    offending point, joint, value and limit (MoveIt's trajectory check: such a plan is rejected
    whole, never clamped). NaN counts as outside."""
    q = np.asarray(positions, dtype=np.float64).reshape(-1, embodiment.dof)
    tol = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), (embodiment.dof,))
    lo, hi = embodiment.pos_lower - tol, embodiment.pos_upper + tol
    bad = ~((q >= lo) & (q <= hi))
    if not bad.any():
        return ""
    k, j = np.argwhere(bad)[0]
    v = q[k, j]
    side, limit = ("lower", embodiment.pos_lower[j]) if v < lo[j] else ("upper", embodiment.pos_upper[j])
    return (f"point {k}: {embodiment.joint_names[j]} = {v:.6g} is beyond its {side} limit {limit:.6g} "
            f"by more than {tol[j]:.3g} ({int(bad.any(axis=1).sum())} of {len(q)} points outside)")


@dataclass
class SafetyConfig(Section):
    """Safety filter options (checked by eva_core.config: typed, finite, ranged)."""

    position_margin: float = param(0.01, "kept away from the hard joint limits", unit="rad", ge=0)
    gripper_margin: float = param(0.0, "kept away from the gripper range ends", unit="normalised", ge=0)
    velocity_scale: float = param(1.0, "fraction of the embodiment's vel_max", gt=0, le=1)
    acceleration_scale: float = param(1.0, "fraction of the embodiment's acc_max", gt=0, le=1)


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


@dataclass
class SafetyReport:
    """What the filter changed. Counts are per dimension, summed over ticks."""

    dof: int
    rejected: bool = False
    reason: str = ""
    ticks: int = 0
    position_clipped: np.ndarray = None
    velocity_limited: np.ndarray = None
    acceleration_limited: np.ndarray = None

    def __post_init__(self):
        for name in ("position_clipped", "velocity_limited", "acceleration_limited"):
            if getattr(self, name) is None:
                setattr(self, name, _zeros(self.dof))

    @property
    def modified(self) -> bool:
        return self.rejected or bool(
            self.position_clipped.any() or self.velocity_limited.any() or self.acceleration_limited.any()
        )

    def merge(self, other: "SafetyReport") -> None:
        self.ticks += other.ticks
        self.position_clipped += other.position_clipped
        self.velocity_limited += other.velocity_limited
        self.acceleration_limited += other.acceleration_limited
        if other.rejected:
            self.rejected, self.reason = True, other.reason

    def as_dict(self) -> dict:
        return {
            "rejected": self.rejected, "reason": self.reason, "ticks": self.ticks,
            "position_clipped": self.position_clipped.tolist(),
            "velocity_limited": self.velocity_limited.tolist(),
            "acceleration_limited": self.acceleration_limited.tolist(),
        }


def _changed(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Which dims a limit changed: |new - old| > 1e-12 (finite values; the same test as
    ~np.isclose(new, old, rtol=0, atol=1e-12) at a tenth of its cost, twice per control tick)."""
    return np.abs(new - old) > 1e-12


def braking_speed(distance: np.ndarray, acc: np.ndarray, dt: float) -> np.ndarray:
    """Largest speed v from which a discrete stop stays within `distance`.

    Ticks move v*dt, (v-c)*dt, (v-2c)*dt, ... with c = acc*dt, so the stopping distance is
    D(v) = dt * sum_k max(v - k c, 0). We invert D exactly; since D(v) = v dt + D(v - c), the
    bound after one tick at v is exactly v - c: respecting it never needs more than acc_max.
    """
    d = np.maximum(np.asarray(distance, dtype=np.float64), 0.0)
    c = acc * dt
    units = d / (dt * c)  # distance in units of dt*c
    n = np.floor((-1.0 + np.sqrt(1.0 + 8.0 * units)) / 2.0)  # whole decel steps: n(n+1)/2 <= units
    f = (units - n * (n + 1) / 2.0) / (n + 1)
    return (n + np.clip(f, 0.0, 1.0)) * c


def _check_limits(e: Embodiment) -> None:
    """The filter's limits must be finite and ordered, speeds and accelerations positive."""
    arrays = {"pos_lower": e.pos_lower, "pos_upper": e.pos_upper, "vel_max": e.vel_max, "acc_max": e.acc_max}
    for name, a in arrays.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(a, dtype=np.float64)))
        if bad.size:
            raise ValueError(f"safety filter: embodiment {e.name!r}: {name} is not finite for "
                             f"{[e.joint_names[i] for i in bad]}")
    for name, bad in (("pos_lower < pos_upper", ~(e.pos_lower < e.pos_upper)), ("vel_max > 0", ~(e.vel_max > 0)),
                      ("acc_max > 0", ~(e.acc_max > 0))):
        if bad.any():
            raise ValueError(f"safety filter: embodiment {e.name!r}: needs {name} for "
                             f"{[e.joint_names[i] for i in np.flatnonzero(bad)]}")


@dataclass
class SafetyFilter:
    embodiment: Embodiment
    dt: float
    config: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self):
        if not (self.dt > 0 and np.isfinite(self.dt)):
            raise ValueError(f"safety filter: dt must be a positive number, got {self.dt}")
        e = self.embodiment
        _check_limits(e)
        margin = np.where(e.is_gripper, self.config.gripper_margin, self.config.position_margin)
        self.lower = e.pos_lower + margin
        self.upper = e.pos_upper - margin
        if np.any(self.lower >= self.upper):
            raise ValueError("safety filter: margins leave no room between the position limits")
        self.vel_max = e.vel_max * self.config.velocity_scale
        self.acc_max = e.acc_max * self.config.acceleration_scale
        self._pos: np.ndarray | None = None
        self._vel = np.zeros(e.dof)
        self._last_target: np.ndarray | None = None

    # -- state -------------------------------------------------------------------------------
    @property
    def dof(self) -> int:
        return self.embodiment.dof

    @property
    def position(self) -> np.ndarray | None:
        return None if self._pos is None else self._pos.copy()

    @property
    def velocity(self) -> np.ndarray:
        return self._vel.copy()

    def reset(self, position, velocity=None) -> None:
        """Start from a measured state. Non-finite state is an error (nothing safe to hold)."""
        p = self._vector(position, "position")
        v = np.zeros(self.dof) if velocity is None else self._vector(velocity, "velocity")
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(v))):
            raise ValueError("safety filter: reset state contains NaN or inf")
        self._pos = np.clip(p, self.embodiment.pos_lower, self.embodiment.pos_upper)
        self._vel = np.clip(v, -self.vel_max, self.vel_max)
        self._last_target = None

    def hold(self) -> np.ndarray:
        """Brake to a stop as fast as acc_max allows, inside the limits (reject / watchdog)."""
        if self._pos is None:
            raise RuntimeError("safety filter: call reset() with the measured state first")
        dv = np.clip(-self._vel, -self.acc_max * self.dt, self.acc_max * self.dt)
        out = self._advance(self._vel + dv)
        if out is None:  # cannot happen with finite limits; never command NaN
            self._vel = np.zeros(self.dof)
            return self._pos.copy()
        return out

    # -- filtering ---------------------------------------------------------------------------
    def step(self, target) -> tuple[np.ndarray, SafetyReport]:
        """One control tick: returns the position to command and what was changed."""
        if self._pos is None:
            raise RuntimeError("safety filter: call reset() with the measured state first")
        rep = SafetyReport(self.dof, ticks=1)
        q = self._vector(target, "target")
        if not np.all(np.isfinite(q)):
            rep.rejected, rep.reason = True, "non-finite target"
            self._last_target = None
            return self.hold(), rep
        return self._step(q, rep), rep

    def _step(self, q: np.ndarray, rep: SafetyReport) -> np.ndarray:
        """One tick towards a finite (D,) target, counting into `rep` (a chunk shares one)."""
        clipped = np.clip(q, self.lower, self.upper)
        rep.position_clipped += clipped != q
        q = clipped

        # Reach the target this tick if possible, but approach it no faster (relative to the
        # target's own velocity u) than a speed that can still stop in time: no overshoot/ringing.
        u = 0.0 if self._last_target is None else (q - self._last_target) / self.dt
        self._last_target = q
        err = q - self._pos
        # one braking_speed call for the three distances (elementwise: the same numbers, a third of the calls)
        bs, up, dn = braking_speed(np.stack((np.abs(err), self.upper - self._pos, self._pos - self.lower)),
                                   self.acc_max, self.dt)
        v = np.clip(err / self.dt, u - bs, u + bs)

        a_lo, a_hi = self._vel - self.acc_max * self.dt, self._vel + self.acc_max * self.dt
        v_acc = np.clip(v, a_lo, a_hi)
        rep.acceleration_limited += _changed(v_acc, v)
        v_lim = np.clip(v_acc, -self.vel_max, self.vel_max)
        rep.velocity_limited += _changed(v_lim, v_acc)
        # position limits: never command a speed from which the limit cannot be held
        v_pos = np.clip(v_lim, -dn, up)
        rep.position_clipped += _changed(v_pos, v_lim)

        out = self._advance(v_pos)
        if out is None:  # a non-finite output is rejected, never passed on
            rep.rejected, rep.reason = True, "non-finite output; holding the last position"
            self._last_target = None
            return self.hold()
        return out

    def _advance(self, v: np.ndarray) -> np.ndarray | None:
        """Move by v*dt inside the limits; None (state unchanged) if the result is not finite."""
        new = np.clip(self._pos + v * self.dt, self.embodiment.pos_lower, self.embodiment.pos_upper)
        if not np.isfinite(new).all():
            return None
        self._vel = (new - self._pos) / self.dt
        self._pos = new
        return new.copy()

    def filter_chunk(self, targets, start_pos, start_vel=None) -> tuple[np.ndarray, SafetyReport]:
        """Filter a whole (T, D) chunk from a start state. A chunk with any NaN/inf, or of the
        wrong shape, is rejected whole: the result holds (brakes to) the start position."""
        self.reset(start_pos, start_vel)
        t = np.asarray(targets, dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != self.dof:
            rep = SafetyReport(self.dof, rejected=True, reason=f"chunk shape {t.shape}, expected (T, {self.dof})")
            return np.empty((0, self.dof)), rep
        if t.shape[0] == 0:
            return np.empty((0, self.dof)), SafetyReport(self.dof, rejected=True, reason="empty chunk")
        total = SafetyReport(self.dof)
        if not np.all(np.isfinite(t)):
            total.rejected, total.reason = True, f"non-finite values in dims {nonfinite_dims(t)}"
            out = [self.hold() for _ in range(t.shape[0])]
            total.ticks = t.shape[0]
            return np.stack(out), total
        out = np.empty_like(t)
        for k in range(t.shape[0]):   # finite and of the right width: checked once for the chunk
            out[k] = self._step(t[k], total)
        total.ticks = t.shape[0]
        return out, total

    # -- helpers -----------------------------------------------------------------------------
    def _vector(self, x, what: str) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64).reshape(-1)
        if a.shape != (self.dof,):
            raise ValueError(f"safety filter: {what} has shape {np.shape(x)}, expected ({self.dof},)")
        return a
