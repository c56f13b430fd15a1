"""A Piper arm CAN emulator: what the real Piper backend talks to without hardware.

`PiperEmulator(emb, channels={"left": "can_left", "right": "can_right"})` opens one python-can
bus per arm (`interface="virtual"`: same process only) and runs one 200 Hz thread that, per arm:
- answers the host's commands in the protocol of piper_sdk V2 (eva_core/piper/protocol.py):
  enable/disable (0x471) with per-motor status, CAN/joint mode (0x151), joint and gripper
  targets (0x155-0x157, 0x159), e-stop / resume (0x150), firmware and limit queries;
- applies the targets through a `plant` (default `KinematicPlant`: the embodiment's position
  and velocity limits) and streams status 0x2A1, joints 0x2A5-0x2A7, gripper 0x2A8 and motor
  speed 0x251-0x256 at `rate_hz`, motor driver status 0x261-0x266 every `low_speed_every` cycles
  (about the real arm's ~3040 frames/s at the defaults).

A plant is any object with `set_targets(action)` and `read() -> (positions, velocities)` in the
embodiment's action units (rad, grippers 0..1); the physics twin provides one.

Fault switches (methods, thread-safe): `silence(arm)` (no frames at all), `set_error(arm,
err_code, arm_status)`, `refuse_enable(arm)`, `no_joint_frames(arm)` (driver frames but no
0x2Ax: piper_sdk reads zeros at 0 Hz), `no_gripper_frames(arm)` (no 0x2A8), `leader(arm)` (a leader arm: silent until `move_leader`,
then it streams its position as 0x155-0x157/0x159 control frames), and a missing arm is one left
out of `channels`. Like the firmware, the emulator ignores motion while an arm is disabled,
e-stopped, in error or not in CAN joint mode, and an enable sent while the drivers are still
switching off (`disable_delay`) is lost (the limp-arm trap of a too early re-enable).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import can
import numpy as np

from eva_core import units
from eva_core.piper import protocol as P
from eva_core.piper.layout import PiperArmLayout, piper_arms

FIRMWARE_VERSION = "S-V1.6-3"


class KinematicPlant:
    """Ideal servo: each dim moves toward its target at most at `vel_max`, inside the position limits.

    Integrates lazily on every call with the elapsed `clock()` time.
    """

    def __init__(self, emb, initial=None, clock=time.monotonic):
        self._lo, self._hi = np.asarray(emb.pos_lower, float), np.asarray(emb.pos_upper, float)
        self._vmax = np.asarray(emb.vel_max, float)
        init = (self._lo + self._hi) / 2.0 if initial is None else np.asarray(initial, float)
        self._q = np.clip(init, self._lo, self._hi)
        self._v = np.zeros_like(self._q)
        self._target = self._q.copy()
        self._clock = clock
        self._t = clock()
        self._lock = threading.Lock()

    def _advance(self):
        now = self._clock()
        dt, self._t = now - self._t, now
        if dt <= 0:
            return
        step = np.clip(self._target - self._q, -self._vmax * dt, self._vmax * dt)
        new = np.clip(self._q + step, self._lo, self._hi)
        self._v, self._q = (new - self._q) / dt, new

    def set_targets(self, action) -> None:
        with self._lock:
            self._advance()
            self._target = np.clip(np.asarray(action, float), self._lo, self._hi)

    def read(self):
        with self._lock:
            self._advance()
            return self._q.copy(), self._v.copy()


@dataclass
class EmulatedArm:
    """One arm's firmware state (read it for assertions; change it through the emulator's switches)."""
    layout: PiperArmLayout
    bus: can.BusABC | None = None
    ctrl_mode: int = P.CTRL_STANDBY
    move_mode: int = 0
    speed_percent: int = 0
    arm_status: int = 0
    err_code: int = 0
    estopped: bool = False
    motors: list = field(default_factory=lambda: [False] * 7)      # 6 joints + gripper driver
    switching_off_until: float = 0.0
    collision_levels: tuple = (0,) * 6
    # fault switches
    silent: bool = False
    refuse: bool = False
    joint_frames: bool = True
    gripper_frames: bool = True
    is_leader: bool = False
    leader_moved: bool = False
    leader_q: np.ndarray | None = None
    # counters / last values seen
    commands: dict = field(default_factory=dict)   # can id -> frames received
    last_feedback_sent: float = 0.0                # time.time() of the newest joint feedback frame
    latencies: deque = field(default_factory=lambda: deque(maxlen=100_000))  # joint command - newest feedback (s)
    command_times: deque = field(default_factory=lambda: deque(maxlen=100_000))  # 0x155-0x157 arrival times

    @property
    def enabled(self) -> bool:
        return all(self.motors[:6])

    def accepts_motion(self) -> bool:
        return (self.enabled and not self.estopped and self.err_code == 0 and self.ctrl_mode == P.CTRL_CAN
                and self.move_mode == P.MOVE_J and self.arm_status == 0)


class PiperEmulator:
    def __init__(self, embodiment, channels: dict | None = None, plant=None, interface: str = "virtual",
                 rate_hz: float = 200.0, low_speed_every: int = 5, disable_delay: float = 0.2,
                 initial=None, firmware: str = FIRMWARE_VERSION):
        self.emb = embodiment
        layouts = {a.name: a for a in piper_arms(embodiment)}
        channels = {a.name: a.can for a in layouts.values()} if channels is None else dict(channels)
        unknown = set(channels) - set(layouts)
        if unknown:
            raise ValueError(f"PiperEmulator: arms {sorted(unknown)} not in the embodiment's arms {sorted(layouts)}")
        self.arms = {name: EmulatedArm(PiperArmLayout(name, ch, layouts[name].joint_dims, layouts[name].gripper_dim,
                                                      layouts[name].stroke_m))
                     for name, ch in channels.items()}
        self.plant = plant if plant is not None else KinematicPlant(embodiment, initial)
        q, _ = self.plant.read()
        self._targets = np.asarray(q, float).copy()
        self.interface = interface
        self.period = 1.0 / float(rate_hz)
        self.low_speed_every = max(1, int(low_speed_every))
        self.disable_delay = float(disable_delay)
        self.firmware = firmware
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None
        self.cycles = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "PiperEmulator":
        for arm in self.arms.values():
            arm.bus = can.Bus(channel=arm.layout.can, interface=self.interface, receive_own_messages=False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="piper-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for arm in self.arms.values():
            if arm.bus is not None:
                arm.bus.shutdown()
                arm.bus = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- fault switches -------------------------------------------------------------------------
    def _arm(self, name):
        if name not in self.arms:
            raise KeyError(f"PiperEmulator: no arm {name!r}; have {sorted(self.arms)}")
        return self.arms[name]

    def silence(self, arm: str, on: bool = True) -> None:
        with self._lock:
            self._arm(arm).silent = bool(on)

    def set_error(self, arm: str, err_code: int = 0, arm_status: int | None = None) -> None:
        """Report an error code (and arm_status) in 0x2A1; a non-zero code stops the arm."""
        with self._lock:
            a = self._arm(arm)
            a.err_code = int(err_code)
            a.arm_status = int(arm_status if arm_status is not None else (0x09 if err_code else 0))
            if err_code:
                self._hold(a)

    def refuse_enable(self, arm: str, on: bool = True) -> None:
        with self._lock:
            self._arm(arm).refuse = bool(on)

    def no_joint_frames(self, arm: str, on: bool = True) -> None:
        with self._lock:
            self._arm(arm).joint_frames = not on

    def no_gripper_frames(self, arm: str, on: bool = True) -> None:
        """No 0x2A8: the SDK reads the gripper as 0 (a gripper whose stroke was never configured)."""
        with self._lock:
            self._arm(arm).gripper_frames = not on

    def leader(self, arm: str, on: bool = True) -> None:
        """Leader (master) mode: silent on the bus until moved, then it sends control frames."""
        with self._lock:
            a = self._arm(arm)
            a.is_leader, a.leader_moved = bool(on), False

    def move_leader(self, arm: str, positions) -> None:
        """A person moves the leader arm to `positions` (its 6 joints rad [+ gripper 0..1])."""
        with self._lock:
            a = self._arm(arm)
            a.leader_q = np.asarray(positions, float).copy()
            a.leader_moved = True

    # -- inspection -----------------------------------------------------------------------------
    def positions(self) -> np.ndarray:
        return np.asarray(self.plant.read()[0], float)

    def arm_positions(self, arm: str) -> np.ndarray:
        a = self._arm(arm).layout
        dims = list(a.joint_dims) + ([a.gripper_dim] if a.gripper_dim is not None else [])
        return self.positions()[dims]

    # -- the 200 Hz loop ------------------------------------------------------------------------
    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self._cycle()
            except Exception as exc:  # noqa: BLE001 - a closed bus during stop(); never kill the thread silently
                if not self._stop.is_set():
                    print(f"PiperEmulator: cycle failed: {exc!r}", flush=True)
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay < -5 * self.period:   # fell far behind: restart the schedule
                next_t, delay = time.monotonic(), 0.0
            self._stop.wait(max(0.0, delay))

    def _cycle(self) -> None:
        with self._lock:
            for arm in self.arms.values():
                while True:
                    msg = arm.bus.recv(timeout=0.0)
                    if msg is None:
                        break
                    self._handle(arm, msg)
            now = time.monotonic()
            for arm in self.arms.values():
                if arm.switching_off_until and now >= arm.switching_off_until:
                    arm.switching_off_until = 0.0
                    arm.motors = [False] * 7
            self.plant.set_targets(self._targets)
            q, v = self.plant.read()
            low = self.cycles % self.low_speed_every == 0
            self.cycles += 1
            for arm in self.arms.values():
                self._send_feedback(arm, np.asarray(q, float), np.asarray(v, float), low)

    def _hold(self, arm: EmulatedArm) -> None:
        q, _ = self.plant.read()
        dims = list(arm.layout.joint_dims) + ([arm.layout.gripper_dim] if arm.layout.gripper_dim is not None else [])
        self._targets[dims] = np.asarray(q, float)[dims]

    def _handle(self, arm: EmulatedArm, msg: can.Message) -> None:
        cid, data = msg.arbitration_id, bytes(msg.data)
        arm.commands[cid] = arm.commands.get(cid, 0) + 1
        if arm.is_leader:
            return   # a leader arm does not obey the host
        if cid == P.MOTOR_ENABLE:
            motor, flag = P.unpack(cid, data)
            idx = range(7) if motor == P.ALL_MOTORS else [motor - 1] if 1 <= motor <= 6 else []
            if flag == P.ENABLE_FLAG and not arm.refuse and not arm.switching_off_until:
                for i in idx:
                    arm.motors[i] = True
                self._hold(arm)
            elif flag == P.DISABLE_FLAG:
                arm.ctrl_mode = P.CTRL_STANDBY
                if any(arm.motors[i] for i in idx):
                    arm.switching_off_until = time.monotonic() + self.disable_delay
                self._hold(arm)
        elif cid == P.MOTION_CTRL_2:
            ctrl, move, speed, *_ = P.unpack(cid, data)
            arm.ctrl_mode, arm.move_mode, arm.speed_percent = ctrl, move, speed
        elif cid == P.MOTION_CTRL_1:
            estop = P.unpack(cid, data)[0]
            if estop == P.ESTOP:
                arm.estopped, arm.arm_status = True, 0x01
                self._hold(arm)
            elif estop == P.RESUME:   # resume / reset: clears the e-stop and errors, drivers off
                arm.estopped = False
                arm.err_code, arm.arm_status = 0, 0
                arm.ctrl_mode = P.CTRL_STANDBY
                arm.motors = [False] * 7
                self._hold(arm)
        elif cid in P.JOINT_CTRL:
            arm.command_times.append(msg.timestamp)
            if cid == P.JOINT_CTRL[0] and arm.last_feedback_sent:
                arm.latencies.append(msg.timestamp - arm.last_feedback_sent)
            if arm.accepts_motion():
                k = P.JOINT_CTRL.index(cid)
                pair = units.sdk_joint_to_rad(np.asarray(P.unpack(cid, data)))
                for j, val in zip(arm.layout.joint_dims[2 * k:2 * k + 2], pair):
                    self._targets[j] = val
        elif cid == P.GRIPPER_CTRL:
            stroke, _effort, code, _zero = P.unpack(cid, data)
            arm.motors[6] = code == P.GRIPPER_ENABLE_CODE
            if arm.layout.gripper_dim is not None and arm.accepts_motion() and arm.motors[6]:
                self._targets[arm.layout.gripper_dim] = units.gripper_sdk_to_norm(stroke, arm.layout.stroke_m)
        elif cid == P.CRASH_PROTECTION:
            arm.collision_levels = P.unpack(cid, data)[:6]
        elif cid == P.FIRMWARE_QUERY and not arm.silent:
            for chunk in P.firmware_frames(self.firmware):
                self._send(arm, P.FIRMWARE, chunk)
        elif cid == P.MOTOR_QUERY and not arm.silent:
            motor, content = P.unpack(cid, data)
            if 1 <= motor <= 6 and content == 0x01:
                j = arm.layout.joint_dims[motor - 1]
                self._send(arm, P.MOTOR_LIMITS, P.pack(
                    P.MOTOR_LIMITS, motor, int(units.rad_to_sdk_decideg(self.emb.pos_upper[j])),
                    int(units.rad_to_sdk_decideg(self.emb.pos_lower[j])),
                    int(min(units.rad_s_to_sdk_speed(self.emb.vel_max[j]), 65535))))
            elif 1 <= motor <= 6 and content == 0x02:
                j = arm.layout.joint_dims[motor - 1]
                self._send(arm, P.MOTOR_MAX_ACC, P.pack(P.MOTOR_MAX_ACC, motor,
                                                        int(min(units.rad_s2_to_sdk_acc(self.emb.acc_max[j]), 65535))))

    def _send(self, arm: EmulatedArm, cid: int, data: bytes) -> None:
        arm.bus.send(can.Message(arbitration_id=cid, data=data, is_extended_id=False))

    def _send_feedback(self, arm: EmulatedArm, q: np.ndarray, v: np.ndarray, low: bool) -> None:
        lay = arm.layout
        if arm.silent:
            return
        if arm.is_leader:
            if arm.leader_moved:
                self._send_leader(arm)
            return
        mdeg = units.rad_to_sdk_joint(q[list(lay.joint_dims)])
        if arm.joint_frames:
            motion = 0 if np.allclose(self._targets[list(lay.joint_dims)], q[list(lay.joint_dims)], atol=1e-4) else 1
            self._send(arm, P.STATUS, P.pack(P.STATUS, arm.ctrl_mode, arm.arm_status, arm.move_mode, 0, motion, 0,
                                             arm.err_code))
            for k, cid in enumerate(P.JOINT_FEEDBACK):
                self._send(arm, cid, P.pack(cid, int(mdeg[2 * k]), int(mdeg[2 * k + 1])))
            arm.last_feedback_sent = time.time()
            if lay.gripper_dim is not None and arm.gripper_frames:
                stroke = units.gripper_norm_to_sdk(q[lay.gripper_dim], lay.stroke_m)
                self._send(arm, P.GRIPPER_FEEDBACK, P.pack(P.GRIPPER_FEEDBACK, int(stroke), 0,
                                                           P.DRIVER_ENABLED_BIT if arm.motors[6] else 0))
        speed = np.clip(units.rad_s_to_sdk_speed(v[list(lay.joint_dims)]), -32768, 32767)
        for k, cid in enumerate(P.HIGH_SPEED):
            self._send(arm, cid, P.pack(cid, int(speed[k]), 0, int(mdeg[k])))
        if low:
            for k, cid in enumerate(P.LOW_SPEED):
                status = P.DRIVER_ENABLED_BIT if arm.motors[k] else 0
                self._send(arm, cid, P.pack(cid, 240, 30, 30, status, 0))

    def _send_leader(self, arm: EmulatedArm) -> None:
        q = arm.leader_q
        mdeg = units.rad_to_sdk_joint(q[:6])
        for k, cid in enumerate(P.JOINT_CTRL):
            self._send(arm, cid, P.pack(cid, int(mdeg[2 * k]), int(mdeg[2 * k + 1])))
        if len(q) > 6:
            stroke = units.gripper_norm_to_sdk(q[6], arm.layout.stroke_m)
            self._send(arm, P.GRIPPER_CTRL, P.pack(P.GRIPPER_CTRL, int(stroke), int(units.nm_to_sdk_effort(1.0)),
                                                   P.GRIPPER_ENABLE_CODE, 0))
