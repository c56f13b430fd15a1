"""The control loop: what controller_node runs every tick, without ROS.

`ControlLoop` owns the `TrajectoryFollower`, the final `SafetyFilter` and the controller's
states (`State`). Once per control tick the adapter reads the arm and calls
`tick(arm_state, now)`; the returned `Decision` says what to do:
- `Kind.COMMAND`: send `positions` (the final filter's output) to the arm;
- `Kind.HOLD`: send nothing (disabled, e-stopped, waiting for feedback); the arm holds itself;
- `Kind.FAULT`: send nothing; a fault is latched (`reason`) and the backend was e-stopped.

States: DISABLED (start; after `disable()`), ENABLING (the backend confirmed `enable()`; the
first command starts from the next fresh measured state), RUNNING, ESTOPPED (`estop()`),
FAULT (latched until `enable()`). Faults, each reported by ONE event however long they last:
- feedback older than `feedback_timeout` or a failed read (in any state), none once running;
- the arm reports itself disabled (`ArmState.enabled=False`) or an error (`ArmState.error`)
  while commanding (a power glitch, the teach button, a firmware fault);
- the final filter rejects a command (it is never sent);
- `fail(reason)`: the adapter's tick raised, a send failed, or the executor stopped;
- no `beat()` for `heartbeat_timeout` s of ticks once beating (the adapter's executor died).
  Counted in ticks, not wall time, so a stall of the whole process is not mistaken for it.
No trajectory for `trajectory_timeout` (after a first one) keeps holding the last safe target
and reports one `watchdog_trajectory_timeout` event. `replace()` rejects a trajectory of the
wrong size, longer than `max_trajectory_duration`, or whose stamp is more than
`max_stamp_offset` s from now (a stamp 1 h ahead would otherwise hold point 0 for an hour and
silence the trajectory watchdog). A trajectory with a point beyond the position limits by more
than `limit_tolerance` is rejected whole (a `rejected_trajectory` event with reason
`out_of_limits`, naming the point, joint, value and limit; the arm holds), as MoveIt rejects one; within the tolerance the follower and
the final filter clip it, and such a trajectory is counted (`trajectories_clamped`).

The backend is any object with thread-safe `enable()` and `estop()` (an `ArmBackend`); the loop
never sends positions itself. Events leave the loop as data (`take_events()`), so the adapter
only publishes them. All public methods are thread-safe: services call `estop()` from another
thread, and `estop()` calls the backend before taking the loop's lock, so a tick stuck in I/O
cannot delay it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import NamedTuple

import numpy as np

from eva_core.events import EventKind, TrajectoryRejection  # one home of the event kinds; re-exported here
from eva_core.safety import SafetyConfig, SafetyFilter, out_of_limits
from eva_core.trajectory import FollowerConfig, Trajectory, TrajectoryFollower


class State(str, Enum):
    DISABLED = "disabled"
    ENABLING = "enabling"
    RUNNING = "running"
    ESTOPPED = "estopped"
    FAULT = "fault"


class Kind(str, Enum):
    COMMAND = "command"
    HOLD = "hold"
    FAULT = "fault"


class Level(IntEnum):   # the same values as diagnostic_msgs/DiagnosticStatus
    OK = 0
    WARN = 1
    ERROR = 2


class Event(NamedTuple):
    kind: EventKind
    message: str
    level: Level
    reason: str = ""   # a rejected_trajectory's TrajectoryRejection value


@dataclass(slots=True)
class Decision:
    kind: Kind
    positions: np.ndarray | None = None   # (dof,) action units, only for COMMAND
    reason: str = ""
    tick: int = 0                         # command index; a gap after each enable
    latency: float | None = None          # s from a trajectory's publication to its first command


# counts a fault of each kind increments (besides "faults")
_FAULT_COUNTS = {EventKind.WATCHDOG_FEEDBACK: "watchdog_feedback_timeout", EventKind.BACKEND_FAULT: "backend_faults",
                 EventKind.REJECTED_COMMAND: "rejected_commands", EventKind.CONTROL_ERROR: "control_errors",
                 EventKind.EXECUTOR_STOPPED: "executor_stopped"}


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"control loop: {name} must be a positive finite number, got {value}")
    return value


class ControlLoop:
    # keyword options, named as in the controller's config section
    OPTIONS = ("feedback_timeout", "trajectory_timeout", "max_stamp_offset", "max_trajectory_duration",
               "heartbeat_timeout", "limit_tolerance", "follower", "safety")

    def __init__(self, embodiment, dt: float, backend, *, feedback_timeout: float = 0.1,
                 trajectory_timeout: float = 0.5, max_stamp_offset: float = 10.0,
                 max_trajectory_duration: float = 60.0, heartbeat_timeout: float = 2.0,
                 limit_tolerance: float = 0.005, follower: FollowerConfig | None = None, safety: SafetyConfig | None = None, clock=time.time):
        self.emb = embodiment
        self.dt = _positive("dt", dt)
        self.backend = backend
        self.feedback_timeout = _positive("feedback_timeout", feedback_timeout)
        self.trajectory_timeout = _positive("trajectory_timeout", trajectory_timeout)
        self.max_stamp_offset = _positive("max_stamp_offset", max_stamp_offset)
        self.max_trajectory_duration = _positive("max_trajectory_duration", max_trajectory_duration)
        self.heartbeat_timeout = _positive("heartbeat_timeout", heartbeat_timeout)
        self.limit_tolerance = float(limit_tolerance)
        if not (0 <= self.limit_tolerance < math.inf):
            raise ValueError(f"control loop: limit_tolerance must be a finite number >= 0, got {limit_tolerance}")
        self._ticks_since_beat: int | None = None   # None until the first beat
        self.follower = TrajectoryFollower(embodiment, self.dt, follower)
        self.final = SafetyFilter(embodiment, self.dt, safety or SafetyConfig())
        self.clock = clock
        self._lock = threading.Lock()
        self.state, self.reason = State.DISABLED, "not enabled yet"
        self._generation = 0          # bumped by every stop, so a slow enable() cannot undo it
        self._enabled_at = -math.inf
        self._pending: tuple[Trajectory, float | None] | None = None
        self._first_wait: tuple[Trajectory, float] | None = None
        self._hold_since: float | None = None
        self._starving_reported = False
        self._had_trajectory = False
        self._tick = 0
        self._events: list[Event] = []
        self.counts = {"commands_sent": 0, "limit_violations": 0, "rejected_commands": 0,
                       "trajectories_received": 0, "trajectories_rejected": 0, "trajectories_ignored": 0,
                       "trajectories_out_of_limits": 0, "trajectories_clamped": 0,
                       "watchdog_trajectory_timeout": 0, "watchdog_feedback_timeout": 0, "backend_faults": 0,
                       "control_errors": 0, "executor_stopped": 0, "faults": 0, "estops": 0}
        self.violation_dims = np.zeros(embodiment.dof, dtype=np.int64)

    # -- requests (any thread) ----------------------------------------------------------------
    def enable(self) -> tuple[bool, str]:
        """Enable the backend (blocks until it confirms); commanding starts at the next fresh
        state. From any state, FAULT included. Returns (ok, message)."""
        with self._lock:
            if self.state in (State.RUNNING, State.ENABLING):
                return True, f"already {self.state.value}"
            generation = self._generation
        try:
            self.backend.enable()
        except Exception as exc:  # noqa: BLE001 - an ArmFault or a bus error: report, stay stopped
            message = f"backend enable failed: {exc}"
            with self._lock:
                self._event(EventKind.ENABLE_FAILED, message, Level.ERROR)
            return False, message
        with self._lock:
            stopped = self._generation != generation
            if not stopped:
                self.state, self.reason = State.ENABLING, "enabled; starting from the next measured state"
                self._enabled_at = self.clock()
            reason = self.reason
        if stopped:   # an e-stop or fault raced the backend's enable: leave the backend stopped
            self._backend_estop()
            return False, f"not enabled: {reason} while enabling"
        return True, "enabled"

    def estop(self, reason: str = "e-stop requested") -> tuple[bool, str]:
        """Stop commanding and e-stop the backend now (the backend first, without the lock)."""
        error = self._backend_estop()
        with self._lock:
            self._stop(State.ESTOPPED, reason)
            self.counts["estops"] += 1
            self._event(EventKind.ESTOP, f"{reason}; commands stopped" + error, Level.ERROR if error else Level.WARN)
        return not error, "e-stopped" + error

    def disable(self) -> tuple[bool, str]:
        """Stop commanding (the arm holds where it is; no e-stop). A fault or an e-stop stays."""
        with self._lock:
            if self.state in (State.RUNNING, State.ENABLING, State.DISABLED):
                self._stop(State.DISABLED, "disabled on request")
            return True, self.state.value

    def fail(self, reason: str, kind: EventKind = EventKind.CONTROL_ERROR, unsent: bool = False) -> None:
        """Latch a fault from outside the loop (a tick that raised, a failed send, a dead
        executor). Repeated calls while faulted count but report nothing new."""
        with self._lock:
            if unsent:
                self.counts["commands_sent"] -= 1
                if self.state is not State.RUNNING:   # stopped between tick and send: expected
                    return
            self._latch(kind, reason)

    def beat(self) -> None:
        """A heartbeat of the thread that serves the services (the executor): once beating,
        `heartbeat_timeout` s of ticks (ticks x dt) without a beat latch EXECUTOR_STOPPED."""
        self._ticks_since_beat = 0

    def reject(self, reason: str, why: TrajectoryRejection = TrajectoryRejection.MALFORMED) -> None:
        """Count and report a trajectory the adapter could not even parse (`why`: see
        `trajectory_msg_rejection`)."""
        with self._lock:
            self._reject(reason, why)

    def replace(self, traj: Trajectory, *, sent_at: float | None = None, now: float | None = None) -> tuple[bool, str]:
        """Queue `traj` to replace the running trajectory at the next tick. `sent_at`: its
        publication time, for the trajectory-to-first-command latency."""
        now = self.clock() if now is None else now
        with self._lock:
            if traj.positions.shape[1] != self.emb.dof:
                return self._reject(f"{traj.positions.shape[1]} dims, the embodiment has {self.emb.dof}",
                                    TrajectoryRejection.WRONG_SIZE)
            offset = traj.start_time - now
            if abs(offset) > self.max_stamp_offset:
                return self._reject(f"stamp {offset:+.3f} s from now, beyond max_stamp_offset "
                                    f"{self.max_stamp_offset} s (clock or stamp wrong)",
                                    TrajectoryRejection.STAMP_OFFSET)
            if traj.times[-1] - traj.times[0] > self.max_trajectory_duration:
                return self._reject(f"lasts {traj.times[-1] - traj.times[0]:.1f} s, beyond "
                                    f"max_trajectory_duration {self.max_trajectory_duration} s",
                                    TrajectoryRejection.TOO_LONG)
            beyond = out_of_limits(self.emb, traj.positions, self.limit_tolerance)
            if beyond:
                self.counts["trajectories_out_of_limits"] += 1
                return self._reject(f"chunk {traj.chunk_id}: {beyond}; limit_tolerance {self.limit_tolerance}",
                                    TrajectoryRejection.OUT_OF_LIMITS)
            if np.any((traj.positions < self.final.lower) | (traj.positions > self.final.upper)):
                self.counts["trajectories_clamped"] += 1   # within the tolerance: clipped to the margin
            self.counts["trajectories_received"] += 1
            if self.state not in (State.RUNNING, State.ENABLING):
                self.counts["trajectories_ignored"] += 1
                return False, f"not executed: controller {self.state.value}"
            self._pending = (traj, sent_at)
        return True, "queued"

    # -- the tick (control thread) ------------------------------------------------------------
    def tick(self, arm, now: float, read_error: str = "") -> Decision:
        """One control tick from the newest `ArmState` (None: none yet or the read failed)."""
        with self._lock:
            if self._ticks_since_beat is not None:
                self._ticks_since_beat += 1
                if self._ticks_since_beat * self.dt > self.heartbeat_timeout:
                    self._latch(EventKind.EXECUTOR_STOPPED, f"executor stopped: no heartbeat for "
                                f"{self._ticks_since_beat} control ticks ({self._ticks_since_beat * self.dt:.1f} s)")
            if arm is None or not abs(now - arm.stamp) <= self.feedback_timeout:
                return self._no_feedback(arm, now, read_error)
            if self.state in (State.DISABLED, State.ESTOPPED, State.FAULT):
                return self._idle()
            if self.state is State.ENABLING and arm.stamp < self._enabled_at:
                return Decision(Kind.HOLD, reason="waiting for feedback after enable")
            if arm.error or not arm.enabled:
                what = f"reports an error: {arm.error}" if arm.error else "reports itself disabled"
                return self._latch(EventKind.BACKEND_FAULT, f"arm {what}")
            if self.state is State.ENABLING:
                self._start(arm)
            return self._command(now)

    def _no_feedback(self, arm, now: float, read_error: str) -> Decision:
        if arm is None and not read_error and self.state is not State.RUNNING:
            return self._idle() if self.state is State.FAULT else Decision(Kind.HOLD, reason="no feedback yet")
        age = f"read failed: {read_error}" if read_error else \
            "none" if arm is None else f"{now - arm.stamp:+.3f} s old"
        return self._latch(EventKind.WATCHDOG_FEEDBACK, f"backend feedback lost ({age})")

    def _idle(self) -> Decision:
        return Decision(Kind.FAULT if self.state is State.FAULT else Kind.HOLD, reason=self.reason)

    def _start(self, arm) -> None:
        """The first command starts from the measured state, at rest."""
        zero = np.zeros(self.emb.dof)
        self.follower.reset(arm.positions, zero)
        self.final.reset(arm.positions, zero)
        self._tick += 1   # a gap: commands before and after an enable are not consecutive
        self._hold_since, self._starving_reported = None, False
        self.state, self.reason = State.RUNNING, "running"

    def _command(self, now: float) -> Decision:
        if self._pending is not None:
            (traj, sent_at), self._pending = self._pending, None
            if self.follower.replace(traj, now):
                self._had_trajectory = True
                self._first_wait = (traj, sent_at) if sent_at is not None else None
            else:   # counted by the follower (counts["expired"])
                self._event(EventKind.TRAJECTORY_EXPIRED, f"chunk {traj.chunk_id} ended before it arrived", Level.WARN)
        target, _ = self.follower.step(now)
        cmd, rep = self.final.step(target)
        if rep.rejected or not np.isfinite(cmd).all():
            return self._latch(EventKind.REJECTED_COMMAND, f"final safety filter rejected the command "
                               f"({rep.reason or 'non-finite output'}); not sent")
        if rep.modified:
            self.counts["limit_violations"] += 1
            self.violation_dims += (rep.position_clipped + rep.velocity_limited + rep.acceleration_limited) > 0
        self.counts["commands_sent"] += 1
        self._tick += 1
        latency = None
        if self._first_wait is not None and self.follower.trajectory is self._first_wait[0]:
            latency, self._first_wait = now - self._first_wait[1], None
        self._watch_trajectory(now)
        return Decision(Kind.COMMAND, cmd, "tracking" if self.follower.active else "holding", self._tick, latency)

    def _watch_trajectory(self, now: float) -> None:
        if self.follower.active or not self._had_trajectory:
            self._hold_since, self._starving_reported = None, False
            return
        if self._hold_since is None:
            self._hold_since = now
        elif not self._starving_reported and now - self._hold_since > self.trajectory_timeout:
            self._starving_reported = True
            self.counts["watchdog_trajectory_timeout"] += 1
            self._event(EventKind.WATCHDOG_TRAJECTORY, f"no trajectory for {now - self._hold_since:.2f} s; "
                        "holding the last safe target", Level.WARN)

    # -- helpers (call with the lock held) ---------------------------------------------------
    def _latch(self, kind: EventKind, reason: str) -> Decision:
        if self.state is State.FAULT:   # already latched: one fault, one event
            if kind is EventKind.CONTROL_ERROR:
                self.counts["control_errors"] += 1
            return self._idle()
        error = self._backend_estop()
        self._stop(State.FAULT, reason + error)
        self.counts["faults"] += 1
        self.counts[_FAULT_COUNTS[kind]] += 1
        self.counts["estops"] += not error
        self._event(kind, f"{self.reason}; e-stopped, enable to resume", Level.ERROR)
        return self._idle()

    def _stop(self, state: State, reason: str) -> None:
        self._generation += 1
        self.state, self.reason = state, reason
        self._pending = self._first_wait = None
        self.follower.clear()

    def _backend_estop(self) -> str:
        try:
            self.backend.estop()
        except Exception as exc:  # noqa: BLE001 - reported with the reason; nothing else to do
            return f"; backend e-stop failed: {exc!r}"
        return ""

    def _reject(self, reason: str, why: TrajectoryRejection) -> tuple[bool, str]:
        self.counts["trajectories_rejected"] += 1
        self._event(EventKind.REJECTED_TRAJECTORY, f"{why.value}: {reason}; not executed", Level.WARN, why.value)
        return False, reason

    def _event(self, kind: EventKind, message: str, level: Level, reason: str = "") -> None:
        self._events.append(Event(kind, message, level, reason))

    # -- reporting ----------------------------------------------------------------------------
    def take_events(self) -> list[Event]:
        """The events since the last call, oldest first."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def status(self) -> tuple[Level, str]:
        with self._lock:
            state, reason = self.state, self.reason
        level = {State.FAULT: Level.ERROR, State.ESTOPPED: Level.WARN}.get(state, Level.OK)
        return level, f"{state.value}: {reason}" if state is not State.RUNNING else "running"

    def report(self) -> dict:
        with self._lock:
            out = {**self.counts, "trajectories_executed": self.follower.counts["accepted"],
                   "trajectories_expired": self.follower.counts["expired"], "state": self.state.value,
                   "reason": self.reason, "holding": not self.follower.active,
                   "limit_violation_dims": self.violation_dims.tolist()}
        out["watchdog_events"] = out["watchdog_trajectory_timeout"] + out["watchdog_feedback_timeout"]
        return out


def trajectory_msg_rejection(names, names_out, positions) -> TrajectoryRejection:
    """Why a trajectory message that failed to parse is rejected: its joint names against the
    embodiment's `names_out` (duplicate, unknown, missing), then its (ragged) `positions` rows
    (NaN/inf), else malformed (no points, timing, metadata). The parser's message says the rest."""
    names = list(names)
    if len(set(names)) != len(names):
        return TrajectoryRejection.DUPLICATE_JOINT
    if set(names) - set(names_out):
        return TrajectoryRejection.UNKNOWN_JOINT
    if set(names_out) - set(names):
        return TrajectoryRejection.MISSING_JOINT
    if not all(math.isfinite(x) for row in positions for x in row):
        return TrajectoryRejection.NONFINITE
    return TrajectoryRejection.MALFORMED
