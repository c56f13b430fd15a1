"""Piper arms over CAN through piper_sdk (`C_PiperInterface_V2`): the real robot's `ArmBackend`.

One SDK interface per arm of the embodiment's `arms` table (Cobot Magic: `can_left`,
`can_right`), each on a thread-safe python-can bus (piper_sdk issue #67: a plain bus shared by
the SDK's reader thread and our sender makes the arm jitter). `can_interface: virtual` talks to
`eva_core.sim.piper_emulator.PiperEmulator` in the same process.

- `connect()` opens the buses, waits up to `connect_timeout` for feedback and logs each arm's
  firmware. It never enables the motors.
- `enable()` resumes from an e-stop or error (0x150 resume), waits until the drivers report
  disabled after a recent disable (a re-enable inside the ~0.7 s switch-off window leaves a limp
  arm that said "enabled"), enables all motors, selects CAN control + joint mode, and returns
  only when every arm's per-motor status confirms it; otherwise `ArmFault` naming the arm and
  the likely cause, within `enable_timeout`.
- `read_state()` fills the action-layout state from the joint and gripper feedback. An arm
  that never sent joint frames reads as zeros at 0 Hz in the SDK (piper_sdk #101): here its
  positions are NaN, never zeros, and `ArmState.error` names the arm and the likely cause.
  Stale feedback, `isOk()` False, a frame rate below `min_feedback_hz` for 1 s, a status error code
  (named, e.g. "joint 3 over its angle limit (err_code 0x0400)") or drivers that dropped out
  set `error` / `enabled=False`, which the control loop latches as a fault.
- `send_positions()` refuses (ArmFault, nothing sent to any arm) unless every arm has fresh,
  error-free feedback and is enabled, and refuses a step larger than `max_step_factor` x the
  velocity limit from the previous command (or, first, from the measured state).
- `estop()` sends the e-stop frame (0x150, 0x01) to every arm, from any thread; `close()`
  disables the motors.

SDK quirks handled here: the interface is a singleton per can_name (we own each name once per
process and drop the cached instance on close, so a reconnect gets fresh state), its joint-limit
manager is process-wide (we leave the SDK limits off and check the embodiment's own limits per
arm), and every SDK send of one arm goes through one lock (the SDK encodes into one shared
message object, so concurrent sends from two threads could mix frames).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from eva_core import units
from eva_core.config import Section, param
from eva_core.piper import protocol as P
from eva_core.piper.layout import PiperArmLayout, piper_arms
from eva_ros.backends.arm import ArmBackend, ArmFault, ArmState

log = logging.getLogger("eva_ros.piper")


class CanBusError(ArmFault, OSError):
    """A CAN bus that cannot be opened (no interface, link down, channel taken): an ArmFault, and
    an OSError so that a node or CLI start-up reports it as one line (eva_core.cli)."""

SEND_TIMEOUT = 0.05   # s; a send never blocks the control loop or the e-stop longer than this
POLL = 0.01           # s between status checks while waiting for the arm
RATE_GRACE = 1.0      # s a low feedback rate must last to be an error (the SDK measures 0.1 s windows)

_owners_lock = threading.Lock()
_owners: dict[str, object] = {}   # can_name -> the PiperChannel that owns the SDK singleton


def _bus_class():
    import can

    class PiperBus(can.ThreadSafeBus):
        """ThreadSafeBus whose `state` takes no lock and whose send never blocks unbounded.

        The SDK checks `bus.state` before every send; ThreadSafeBus guards it with the receive
        lock too, which the SDK's reader holds for up to 1 s in `recv(1)` on a silent bus, so an
        e-stop could wait a second. The bus state is a plain attribute read.
        """

        @property
        def state(self):
            return self.__wrapped__.state

        def send(self, msg, timeout=None):
            return super().send(msg, timeout=SEND_TIMEOUT if timeout is None else timeout)

    return PiperBus


def _likely_silent_cause(interface: str) -> str:
    if interface == "virtual":
        return "no emulator on this channel, or the arm is missing"
    return ("bus down or wrong bitrate (needs 1 Mbit/s), arm powered off or unplugged, wrong can_left/can_right "
            "mapping, or a leader (master) arm, which stays silent until moved")


class PiperChannel:
    """One Piper arm on one CAN channel: the SDK interface plus our checks (thread-safe)."""

    def __init__(self, layout: PiperArmLayout, channel: str, options: "PiperArm.Options"):
        self.layout, self.channel, self.opt = layout, channel, options
        self.label = f"{layout.name} arm ({channel})"
        self.sdk = None
        self.lock = threading.Lock()   # serialises every SDK send of this arm
        self.firmware = ""
        self._slow_since = None

    # -- open / close -------------------------------------------------------------------------
    def open(self) -> None:
        from piper_sdk import C_PiperInterface_V2

        with _owners_lock:
            if self.channel in _owners:
                raise CanBusError(f"{self.label}: already opened by another Piper backend in this process "
                               "(piper_sdk keeps one interface per CAN name)")
            C_PiperInterface_V2._instances.pop(self.channel, None)   # a fresh interface, not a closed one
            _owners[self.channel] = self
        try:
            socketcan = self.opt.can_interface == "socketcan"
            sdk = C_PiperInterface_V2(self.channel, judge_flag=False, can_auto_init=False,
                                      start_sdk_joint_limit=False, start_sdk_gripper_limit=False)
            if socketcan:
                self._check_socketcan()
            sdk.CreateCanBus(self.channel, bustype=self.opt.can_interface, judge_flag=False)
            port = sdk.GetCanBus()
            port._shutdown_buses()   # replace the SDK's two plain buses with one thread-safe bus
            bus = _bus_class()(channel=self.channel, interface=self.opt.can_interface)   # bitrate: set by `ip link`
            port.recv_bus = port.send_bus = bus
            sdk.ConnectPort()   # reader + monitor threads; queries limits and firmware
            self.sdk = sdk
        except ArmFault:
            self._release()
            raise
        except Exception as exc:  # noqa: BLE001 - one line naming the arm
            self._release()
            raise CanBusError(f"{self.label}: cannot open the CAN bus: {exc}") from exc

    def _check_socketcan(self) -> None:
        from pathlib import Path

        state = Path(f"/sys/class/net/{self.channel}/operstate")
        if not state.exists():
            raise CanBusError(f"{self.label}: no CAN interface {self.channel!r}; plug the USB-CAN adapter in and "
                           "check the udev rule that names it (docs/hardware.md)")
        flags = Path(f"/sys/class/net/{self.channel}/flags")
        up = flags.exists() and int(flags.read_text().strip(), 16) & 0x1
        if not up:
            raise CanBusError(f"{self.label}: CAN interface is down; run "
                           f"'sudo ip link set {self.channel} up type can bitrate 1000000'")

    def close(self, disable: bool = True) -> None:
        sdk = self.sdk
        if sdk is not None and disable:
            try:
                with self.lock:
                    sdk.DisableArm(7)
            except Exception as exc:  # noqa: BLE001 - closing: report, go on
                log.warning("%s: disable on close failed: %s", self.label, exc)
        if sdk is not None:
            try:
                sdk.DisconnectPort()
                # DisconnectPort leaves the SDK's monitor and frame-rate threads running
                getattr(sdk, "_C_PiperInterface_V2__can_monitor_stop_event").set()
                getattr(sdk, "_C_PiperInterface_V2__fps_counter").stop()
            except Exception as exc:  # noqa: BLE001
                log.warning("%s: disconnect failed: %s", self.label, exc)
        self._release()

    def _release(self) -> None:
        from piper_sdk import C_PiperInterface_V2

        with _owners_lock:
            if _owners.get(self.channel) is self:
                del _owners[self.channel]
                C_PiperInterface_V2._instances.pop(self.channel, None)
        self.sdk = None

    # -- commands (each under the arm's lock) -------------------------------------------------
    def send(self, fn: str, *args) -> None:
        sdk = self.sdk
        if sdk is None:
            raise ArmFault(f"{self.label}: not connected")
        with self.lock:
            port = sdk.GetCanBus()
            if port is None or port.send_bus is None:
                raise ArmFault(f"{self.label}: CAN bus closed")
            getattr(sdk, fn)(*args)

    # -- feedback -----------------------------------------------------------------------------
    def read(self, now: float) -> dict:
        """This arm's newest feedback (SI, action units) and what is wrong with it ('' = nothing)."""
        sdk = self.sdk
        out = {"positions": None, "velocities": None, "stamp": 0.0, "error": "", "enabled": False,
               "fps": 0.0, "joint_hz": 0.0, "ctrl_mode": -1, "arm_status": -1, "err_code": 0,
               "motors_enabled": [False] * 6}
        if sdk is None:
            out["error"] = f"{self.label}: not connected"
            return out
        js, st = sdk.GetArmJointMsgs(), sdk.GetArmStatus()
        fps, ok = float(sdk.GetCanFps()), bool(sdk.isOk())
        out.update(fps=fps, joint_hz=float(getattr(js, "Hz", 0.0)), stamp=float(js.time_stamp),
                   motors_enabled=list(sdk.GetArmEnableStatus()))
        if js.time_stamp == 0:   # never a joint frame: the SDK's zeros are not a position (#101)
            out["error"] = (f"{self.label}: no CAN frames; likely cause: {_likely_silent_cause(self.opt.can_interface)}"
                            if fps == 0 else
                            f"{self.label}: {fps:.0f} CAN frames/s but no joint feedback (0x2A5-0x2A7); likely cause: "
                            "a leader (master) arm or a firmware/mode mismatch")
            return out
        j = js.joint_state
        q = units.sdk_joint_to_rad(np.array([j.joint_1, j.joint_2, j.joint_3, j.joint_4, j.joint_5, j.joint_6], float))
        hs = sdk.GetArmHighSpdInfoMsgs()
        v = units.sdk_speed_to_rad_s(np.array([getattr(hs, f"motor_{k}").motor_speed for k in range(1, 7)], float))
        gripper_missing = False
        if self.layout.gripper_dim is not None:
            g = sdk.GetArmGripperMsgs()
            gripper_missing = g.time_stamp == 0   # its zero is not a stroke either
            q = np.append(q, np.nan if gripper_missing else
                          units.gripper_sdk_to_norm(g.gripper_state.grippers_angle, self.layout.stroke_m))
            v = np.append(v, 0.0)
        out.update(positions=q, velocities=v)
        s = st.arm_status
        out.update(ctrl_mode=int(s.ctrl_mode), arm_status=int(s.arm_status), err_code=int(s.err_code))
        age = now - js.time_stamp
        fault = P.describe_fault(int(s.arm_status), int(s.err_code)) if st.time_stamp else ""
        if age > self.opt.feedback_timeout or not ok:
            out["error"] = (f"{self.label}: feedback lost ({age:.3f} s old, {fps:.0f} frames/s); likely cause: "
                            "cable unplugged, CAN bus-off after a power dip, or the arm powered off")
        elif self._slow(now, out["joint_hz"]):
            out["error"] = (f"{self.label}: joint feedback below min_feedback_hz {self.opt.min_feedback_hz:g} for "
                            f"{RATE_GRACE:g} s (now {out['joint_hz']:.0f} Hz); likely cause: an overloaded bus or adapter")
        elif gripper_missing:
            out["error"] = (f"{self.label}: no gripper feedback (0x2A8); likely cause: the gripper stroke not "
                            "configured yet (piper_sdk Q&A: gripper feedback stays 0 until it is) or no gripper fitted")
        elif fault and not (int(s.arm_status) == 0x01 and int(s.err_code) == 0):
            out["error"] = f"{self.label}: {fault}"
        out["enabled"] = all(out["motors_enabled"]) and int(s.ctrl_mode) == P.CTRL_CAN and int(s.arm_status) == 0
        return out

    def _slow(self, now: float, hz: float) -> bool:
        """The SDK's rate (0.1 s windows) below min_feedback_hz for RATE_GRACE s on end."""
        if hz >= self.opt.min_feedback_hz:
            self._slow_since = None
            return False
        if self._slow_since is None:
            self._slow_since = now
        return now - self._slow_since >= RATE_GRACE

    def query_firmware(self) -> str:
        v = self.sdk.GetPiperFirmwareVersion() if self.sdk is not None else -0x4AF
        self.firmware = v if isinstance(v, str) else ""
        return self.firmware


def _channels(embodiment, opt) -> list["PiperChannel"]:
    """One PiperChannel per Piper arm of the embodiment, on its CAN name (can_left/can_right override)."""
    out = []
    for lay in piper_arms(embodiment):
        override = getattr(opt, f"can_{lay.name}", None) if lay.name in ("left", "right") else None
        out.append(PiperChannel(lay, override or lay.can, opt))
    return out


def _open_all(channels, disable_on_failure: bool) -> None:
    """Open every channel or none: a failure closes the ones already open, then re-raises."""
    opened = []
    try:
        for ch in channels:
            ch.open()
            opened.append(ch)
    except Exception:
        for ch in opened:
            ch.close(disable=disable_on_failure)
        raise


class PiperArm(ArmBackend):
    """The embodiment's Piper arms (one CAN channel each) as one ArmBackend in action units."""

    @dataclass
    class Options(Section):
        can_interface: str = param("socketcan", "python-can interface: socketcan on the robot, virtual for the "
                                   "emulator (same process)", choices=("socketcan", "virtual"))
        can_left: str | None = param(None, "CAN channel of the left arm; none: the embodiment's arms table (can_left)")
        can_right: str | None = param(None, "CAN channel of the right arm; none: the embodiment's arms table "
                                      "(can_right)")
        speed_percent: int = param(100, "firmware speed limit in CAN joint mode (MotionCtrl_2)", unit="%",
                                   ge=1, le=100)
        enable_timeout: float = param(3.0, "enable() gives up (ArmFault naming the arm) after this", unit="s", gt=0,
                                       le=30)
        disable_timeout: float = param(2.0, "wait at most this for the drivers to report disabled after a "
                                       "disable or reset, before re-enabling", unit="s", gt=0, le=30)
        connect_timeout: float = param(1.0, "connect() waits this long for first feedback (never fails on it)",
                                       unit="s", ge=0, le=30)
        gripper_effort: float = param(1.0, "gripper force limit (GripperCtrl effort)", unit="N*m", ge=0.0, le=5.0)
        collision_level: int | None = param(None, "firmware collision-protection level 0-8 written at connect "
                                            "(0 = off); none: leave the arm's setting", ge=0, le=8)
        feedback_timeout: float = param(0.1, "joint feedback older than this is an error (at most 2 s)", unit="s",
                                        gt=0, le=2)
        min_feedback_hz: float = param(20.0, "joint feedback rate below this is an error (nominal 200 Hz)",
                                       unit="Hz", ge=0.0)
        max_step_factor: float = param(2.0, "refuse a command moving a dim more than this x vel_max x "
                                       "max(dt, min_period) from the previous command", gt=1.0)
        min_period: float = param(0.005, "the shortest command period assumed by the step guard", unit="s", gt=0,
                                   le=0.1)

    def __init__(self, embodiment, options: "PiperArm.Options | dict | None" = None):
        super().__init__(embodiment)
        self.options = opt = options if isinstance(options, Section) else type(self).Options.from_dict(options)
        self.channels = _channels(embodiment, opt)
        names = [c.channel for c in self.channels]
        if len(set(names)) != len(names):
            raise ValueError(f"PiperArm: two arms on one CAN channel: {names}")
        self._lock = threading.Lock()      # our state; never held while waiting on the arm
        self._enabled = False
        self._estopped = False
        self._connected = False
        self._last_cmd: np.ndarray | None = None
        self._last_cmd_t = 0.0
        self._disabled_at = 0.0
        self._estops = 0                   # e-stops so far: one during enable() aborts it
        self.commands_sent = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def connect(self) -> None:
        _open_all(self.channels, disable_on_failure=True)
        self._connected = True
        deadline = time.monotonic() + self.options.connect_timeout
        while time.monotonic() < deadline and any(c.read(time.time())["error"] for c in self.channels):
            time.sleep(POLL)   # first feedback, and its rate settled
        for ch in self.channels:
            if self.options.collision_level is not None:
                ch.send("CrashProtectionConfig", *([self.options.collision_level] * 6))
            state = ch.read(time.time())
            fw = ch.query_firmware()
            if state["error"]:
                log.warning("%s", state["error"])
            else:
                log.info("%s: firmware %s, %.0f CAN frames/s", ch.label, fw or "unknown (no 0x4AF reply)", state["fps"])

    def close(self) -> None:
        with self._lock:
            self._enabled = False
            self._connected = False
        for ch in self.channels:
            ch.close()

    # -- state ----------------------------------------------------------------------------------
    def arm_reports(self) -> list[dict]:
        now = time.time()
        return [dict(ch.read(now), arm=ch.layout.name, channel=ch.channel, firmware=ch.firmware) for ch in self.channels]

    def read_state(self) -> ArmState | None:
        if not self._connected:
            return None
        reports = self.arm_reports()
        dof = self.emb.dof
        q, v = np.full(dof, np.nan), np.zeros(dof)
        for ch, r in zip(self.channels, reports):
            if r["positions"] is not None:
                dims = list(ch.layout.joint_dims) + ([ch.layout.gripper_dim] if ch.layout.gripper_dim is not None else [])
                q[dims], v[dims] = r["positions"], r["velocities"]
        errors = [r["error"] for r in reports if r["error"]]
        with self._lock:
            enabled = self._enabled and not self._estopped and all(r["enabled"] for r in reports)
        stamp = min(r["stamp"] for r in reports)
        return ArmState(q, v, stamp, enabled=enabled, error="; ".join(errors))

    # -- commands -------------------------------------------------------------------------------
    def _send_positions(self, positions: np.ndarray) -> None:
        now = time.time()
        reports = self.arm_reports()
        for r in reports:   # one arm not fit to move: nothing reaches either arm
            if r["error"] or not r["enabled"]:
                raise ArmFault(f"{r['error'] or r['arm'] + ' arm (' + r['channel'] + '): drivers not enabled'}; "
                               "command not sent to any arm")
        with self._lock:   # checked and sent under the lock an e-stop takes: no command after an e-stop
            if not self._enabled or self._estopped:
                raise ArmFault("Piper: command while " + ("e-stopped" if self._estopped else "not enabled")
                               + "; not sent; enable first")
            if self._last_cmd is None:
                ref, dt = self._measured(reports), self.options.min_period
            else:
                ref, dt = self._last_cmd, max(now - self._last_cmd_t, self.options.min_period)
            bound = self.options.max_step_factor * np.asarray(self.emb.vel_max) * dt + 1e-6
            bad = np.flatnonzero(np.abs(positions - ref) > bound)
            if bad.size:
                names = [self.emb.joint_names[i] for i in bad]
                raise ArmFault(f"Piper: command jumps {names} by {np.abs(positions - ref)[bad].round(4).tolist()} "
                               f"(bound {bound[bad].round(4).tolist()}); not sent to any arm")
            self._last_cmd, self._last_cmd_t = positions.copy(), now
            for ch, r in zip(self.channels, reports):
                lay = ch.layout
                if r["ctrl_mode"] != P.CTRL_CAN:
                    ch.send("MotionCtrl_2", P.CTRL_CAN, P.MOVE_J, self.options.speed_percent, 0x00)
                ch.send("JointCtrl", *(int(x) for x in units.rad_to_sdk_joint(positions[list(lay.joint_dims)])))
                if lay.gripper_dim is not None:
                    ch.send("GripperCtrl", int(units.gripper_norm_to_sdk(positions[lay.gripper_dim], lay.stroke_m)),
                            self._effort(), P.GRIPPER_ENABLE_CODE, 0)
            self.commands_sent += 1

    def _effort(self) -> int:
        return int(units.nm_to_sdk_effort(self.options.gripper_effort))

    def _measured(self, reports) -> np.ndarray:
        q = np.full(self.emb.dof, np.nan)
        for ch, r in zip(self.channels, reports):
            dims = list(ch.layout.joint_dims) + ([ch.layout.gripper_dim] if ch.layout.gripper_dim is not None else [])
            q[dims] = r["positions"]
        return q

    def estop(self) -> None:
        """E-stop frame to every arm now (any thread); commands are refused until enable()."""
        with self._lock:
            self._estopped, self._enabled = True, False
            self._last_cmd = None
            self._estops += 1
        for ch in self.channels:
            try:
                ch.send("EmergencyStop", P.ESTOP)
            except Exception as exc:  # noqa: BLE001 - the other arm must still get its e-stop
                log.error("%s: e-stop send failed: %s", ch.label, exc)

    def disable(self) -> None:
        """Disable every arm's motors (they go limp: support the arm first)."""
        with self._lock:
            self._enabled, self._last_cmd = False, None
            self._disabled_at = time.monotonic()
        for ch in self.channels:
            ch.send("DisableArm", P.ALL_MOTORS)

    def enable(self) -> None:
        """Resume if needed, enable every motor, select CAN joint mode; confirm from feedback."""
        if not self._connected:
            raise ArmFault("Piper: enable before connect()")
        opt = self.options
        deadline = time.monotonic() + opt.enable_timeout
        reports = self.arm_reports()
        for r in reports:
            if r["positions"] is None or not np.all(np.isfinite(r["positions"])) or "feedback lost" in r["error"]:
                raise ArmFault(f"{r['error']}; not enabled")   # never enable what has not reported
        with self._lock:   # frames sent under the lock an e-stop takes: an e-stop is never undone
            estops = self._estops
            resume = self._estopped or any(r["error"] or r["arm_status"] not in (0, -1) for r in reports)
            self._enabled, self._last_cmd = False, None
            if resume:   # 0x150 resume/reset clears the e-stop and errors; the drivers switch off
                for ch in self.channels:
                    ch.send("EmergencyStop", P.RESUME)
                self._disabled_at = time.monotonic()
        if time.monotonic() - self._disabled_at < opt.disable_timeout:
            self._wait(lambda r: not any(r["motors_enabled"]), min(deadline, self._disabled_at + opt.disable_timeout),
                       "drivers still report enabled after the disable/reset; re-enabling now would leave a limp arm")
        sent = 0.0
        while True:
            reports = self.arm_reports()
            todo = [(ch, r) for ch, r in zip(self.channels, reports) if not r["enabled"] or r["error"]]
            with self._lock:
                if self._estops != estops:
                    raise ArmFault("Piper: e-stopped while enabling; not enabled")
                if not todo:   # confirmed: enabled under the same lock an e-stop takes
                    self._enabled, self._estopped, self._last_cmd = True, False, None
                    return
            if time.monotonic() > deadline:
                ch, r = todo[0]
                off = [i + 1 for i, on in enumerate(r["motors_enabled"]) if not on]
                why = r["error"] or (f"motors {off} still disabled" if off else
                                     f"control mode {P.CTRL_MODE_NAMES.get(r['ctrl_mode'], r['ctrl_mode'])}, "
                                     f"status {P.ARM_STATUS_NAMES.get(r['arm_status'], r['arm_status'])}")
                raise ArmFault(f"{ch.label}: enable refused: {why} after {opt.enable_timeout:g} s; likely cause: "
                               "a latched fault or collision (power-cycle the arm), the teach button, or the "
                               "arm still in a leader (master) mode")
            if time.monotonic() - sent > 0.1:   # repeat: a single enable frame can be lost
                sent = time.monotonic()
                with self._lock:
                    if self._estops != estops:
                        raise ArmFault("Piper: e-stopped while enabling; not enabled")
                    for ch, r in todo:
                        if not all(r["motors_enabled"]):
                            ch.send("EnableArm", P.ALL_MOTORS)
                        ch.send("MotionCtrl_2", P.CTRL_CAN, P.MOVE_J, opt.speed_percent, 0x00)
                        if (ch.layout.gripper_dim is not None and r["positions"] is not None
                                and np.isfinite(r["positions"][-1])):
                            stroke = units.gripper_norm_to_sdk(r["positions"][-1], ch.layout.stroke_m)
                            ch.send("GripperCtrl", int(stroke), self._effort(), P.GRIPPER_ENABLE_CODE, 0)
            time.sleep(POLL)

    def _wait(self, cond, deadline: float, problem: str) -> None:
        while True:
            reports = self.arm_reports()
            bad = [(ch, r) for ch, r in zip(self.channels, reports) if not cond(r)]
            if not bad:
                return
            if time.monotonic() > deadline:
                raise ArmFault(f"{bad[0][0].label}: {problem}")
            time.sleep(POLL)

    def diagnostic_values(self) -> dict:
        """Per-arm health for /diagnostics (frames/s, firmware, status, error)."""
        out = {}
        for r in self.arm_reports():
            k = r["arm"]
            out[f"{k}_fps"] = round(r["fps"], 1)
            out[f"{k}_firmware"] = r["firmware"]
            out[f"{k}_enabled"] = r["enabled"]
            out[f"{k}_err_code"] = f"0x{r['err_code']:04X}"
            out[f"{k}_error"] = r["error"]
        return out


class PiperLeader:
    """The leader (master) arms of teleoperation: their positions from the control frames they send.

    A leader arm sends its joint angles as 0x155-0x157 and its gripper as 0x159 (what a linked
    follower would obey) and stays silent until it is first moved (piper_sdk #112). Nothing is
    ever sent to it. `read()` returns (positions in action units, stamp) once every arm has sent
    frames within `feedback_timeout`, else (None, one line naming the silent arm).
    """

    def __init__(self, embodiment, options: "PiperArm.Options | dict | None" = None):
        self.emb = embodiment
        self.options = opt = options if isinstance(options, Section) else PiperArm.Options.from_dict(options)
        self.channels = _channels(embodiment, opt)
        for ch in self.channels:
            ch.label = f"leader {ch.layout.name} arm ({ch.channel})"

    def connect(self) -> None:   # nothing is ever sent to a leader arm, not even a disable
        _open_all(self.channels, disable_on_failure=False)

    def read(self, now: float | None = None):
        now = time.time() if now is None else now
        q = np.full(self.emb.dof, np.nan)
        stamps = []
        for ch in self.channels:
            jc, gc = ch.sdk.GetArmJointCtrl(), ch.sdk.GetArmGripperCtrl()
            if jc.time_stamp == 0:
                return None, f"{ch.label}: no leader frames yet; move the arm (a leader arm is silent until moved)"
            if now - jc.time_stamp > self.options.feedback_timeout:
                return None, f"{ch.label}: leader frames stopped {now - jc.time_stamp:.2f} s ago"
            j = jc.joint_ctrl
            q[list(ch.layout.joint_dims)] = units.sdk_joint_to_rad(
                np.array([j.joint_1, j.joint_2, j.joint_3, j.joint_4, j.joint_5, j.joint_6], float))
            if ch.layout.gripper_dim is not None:
                q[ch.layout.gripper_dim] = (units.gripper_sdk_to_norm(gc.gripper_ctrl.grippers_angle, ch.layout.stroke_m)
                                            if gc.time_stamp else np.nan)
            stamps.append(jc.time_stamp)
        if not np.all(np.isfinite(q)):
            return None, "leader gripper frames (0x159) missing"
        return q, min(stamps)

    def close(self) -> None:
        for ch in self.channels:
            ch.close(disable=False)
