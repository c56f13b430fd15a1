"""Arm backends: what controller_node drives.

`ArmBackend` is the interface (connect / read_state / send_positions / estop / enable / close),
in eva_core units: the embodiment's action layout, joints in rad, grippers normalised [0, 1].
`ArmState.enabled=False` or a non-empty `ArmState.error` while commanding is a latched fault of
the controller (eva_core.control.ControlLoop): no command until /eva/enable.
`LoopbackArm` is the ideal arm: every command is integrated with the embodiment's position and
velocity limits, so the joint state behaves like a perfect servo. It is the reference backend
for the closed loop without hardware; `SimArm` (sim_arm.py) also drives the MuJoCo twin;
`PiperArm` (piper.py) talks CAN through piper_sdk.
"""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass

import numpy as np

from eva_core.config import Section, param


@dataclass
class ArmState:
    positions: np.ndarray    # (dof,) action units (rad; grippers 0..1)
    velocities: np.ndarray   # (dof,) per second
    stamp: float             # time of the measurement (time.time() clock)
    enabled: bool = True     # motors enabled and not e-stopped (False: the backend reports itself disabled)
    error: str = ""          # non-empty: the hardware reports a fault, named ("left arm: joint 3 over limit")


LIMIT_TOL = 1e-9  # float slack on the position limits


class UnsafeCommandError(ValueError):
    """A command that must not reach an arm (non-finite or outside the position limits)."""


class ArmFault(RuntimeError):
    """The arm refused or failed to enable; one line naming the arm and the likely cause."""


class ArmBackend(abc.ABC):
    """A bimanual arm (or its stand-in). Thread-safe: read_state may race send_positions."""

    def __init__(self, embodiment):
        self.emb = embodiment

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the bus/device and enable the motors."""

    @abc.abstractmethod
    def read_state(self) -> ArmState | None:
        """The newest feedback, or None if none has arrived yet. A stale `stamp` = lost feedback."""

    def send_positions(self, positions: np.ndarray) -> None:
        """Command absolute positions (dof,), already safety-filtered by the caller.

        A last guard every backend inherits: a non-finite command, or one outside the
        embodiment's position limits, raises `UnsafeCommandError` and never reaches the arm.
        """
        q = np.asarray(positions, dtype=float)
        if q.shape != (self.emb.dof,) or not np.all(np.isfinite(q)):
            raise UnsafeCommandError(f"{type(self).__name__}: need {self.emb.dof} finite positions, got {q}")
        names = self.emb.limit_violations(q, LIMIT_TOL)  # the embodiment's one limit check
        if names:
            bad = [self.emb.joint_names.index(n) for n in names]
            raise UnsafeCommandError(f"{type(self).__name__}: command outside the position limits for {names}: "
                                     f"{q[bad]} not in [{self.emb.pos_lower[bad]}, {self.emb.pos_upper[bad]}]")
        self._send_positions(q)

    @abc.abstractmethod
    def _send_positions(self, positions: np.ndarray) -> None:
        """Backend-specific send of a checked (dof,) command."""

    @abc.abstractmethod
    def estop(self) -> None:
        """Stop now; ignore position commands until `enable()`. Thread-safe, callable from any
        thread at any time (the e-stop service and the control thread both call it)."""

    @abc.abstractmethod
    def enable(self) -> None:
        """Leave e-stop / re-enable the motors (position commands accepted again). Blocks until
        the arm confirms, or raises `ArmFault` (one line naming the arm and the likely cause)."""

    def close(self) -> None:
        """Disable and release the hardware (idempotent)."""

    def report(self) -> dict:
        """What the backend has to say in the controller's report (eva-bringup --report): {} here."""
        return {}

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()


class LoopbackArm(ArmBackend):
    """Ideal arm: tracks each command at most at `vel_max`, clipped to the position limits.

    Integration happens lazily on every read/send with the elapsed time, so it runs at whatever
    rate the controller calls it. `simulate_feedback_loss(True)` freezes the feedback stamp
    (a pulled cable), which the controller's watchdog must detect.
    """

    @dataclass
    class Options(Section):
        initial_positions: list[float] | None = param(
            None, "start pose (action units, one per dim); none: the middle of every range")

    def __init__(self, embodiment, options: "LoopbackArm.Options | dict | None" = None, *, clock=time.time):
        super().__init__(embodiment)
        self.options = opts = options if isinstance(options, Section) else type(self).Options.from_dict(options)
        dof = embodiment.dof
        lo, hi = np.asarray(embodiment.pos_lower, float), np.asarray(embodiment.pos_upper, float)
        # default home: the middle of every range (inside all safety margins)
        init = (lo + hi) / 2.0 if opts.initial_positions is None else np.asarray(opts.initial_positions, float)
        if init.shape != (dof,):
            opts.error("initial_positions", f"needs {dof} values (the embodiment's dims), got {init.size}")
        self._lo, self._hi = lo, hi
        self._vmax = np.asarray(embodiment.vel_max, float)
        self._pos = np.clip(init, lo, hi)
        self._vel = np.zeros(dof)
        self._target = self._pos.copy()
        self._clock = clock
        self._t = None
        self._estopped = False
        self._connected = False
        self._feedback_lost = False
        self._frozen_state: ArmState | None = None
        self._lock = threading.Lock()
        self.commands_received = 0
        self.commands_ignored = 0

    def connect(self) -> None:
        with self._lock:
            self._t = self._clock()
            self._connected = True

    def _advance(self, now: float) -> None:
        dt = max(0.0, now - self._t)
        self._t = now
        if dt == 0.0:
            return
        step = np.clip(self._target - self._pos, -self._vmax * dt, self._vmax * dt)
        new = np.clip(self._pos + step, self._lo, self._hi)
        self._vel = (new - self._pos) / dt
        self._pos = new

    def read_state(self) -> ArmState | None:
        with self._lock:
            if not self._connected:
                return None
            self._advance(self._clock())
            state = ArmState(self._pos.copy(), self._vel.copy(), self._t, not self._estopped)
            if self._feedback_lost:
                return self._frozen_state
            self._frozen_state = state
            return state

    def _send_positions(self, q: np.ndarray) -> None:
        with self._lock:
            if not self._connected:
                raise RuntimeError("LoopbackArm.send_positions before connect()")
            self._advance(self._clock())
            if self._estopped:
                self.commands_ignored += 1
                return
            self._target = np.clip(q, self._lo, self._hi)
            self.commands_received += 1

    def estop(self) -> None:
        with self._lock:
            if self._connected:
                self._advance(self._clock())
            self._estopped = True
            self._target = self._pos.copy()
            self._vel = np.zeros_like(self._vel)

    def enable(self) -> None:
        with self._lock:
            if self._connected:
                self._advance(self._clock())
            self._target = self._pos.copy()
            self._estopped = False

    def simulate_feedback_loss(self, lost: bool = True) -> None:
        with self._lock:
            self._feedback_lost = bool(lost)

    def close(self) -> None:
        with self._lock:
            self._connected = False
