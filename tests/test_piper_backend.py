"""The real Piper backend (piper_sdk) and the control loop against the CAN emulator.

Every test runs the emulator and the backend in this process on python-can `virtual` channels
of its own, and decodes what the backend put on the bus from a third endpoint (a sniffer). No
SDK call is replaced.
"""

from __future__ import annotations

import itertools
import threading
import time

import can
import numpy as np
import pytest

from eva_core import units
from eva_core.control import ControlLoop, Kind, State
from eva_core.embodiment import load_embodiment
from eva_core.piper import protocol as P
from eva_core.piper.layout import piper_arms
from eva_core.sim.piper_emulator import PiperEmulator
from eva_core.trajectory import Trajectory
from eva_ros.backends.piper import ArmFault, PiperArm
from eva_ros.testing import wait_for

pytestmark = pytest.mark.unit

DT = 1.0 / 200
TIMEOUT = 0.25   # feedback_timeout of backend and loop: generous for a loaded 2-core CI machine
_ids = itertools.count()


@pytest.fixture(scope="module")
def emb():
    return load_embodiment("cobot_magic")


class Sniffer:
    """A third endpoint on each channel: every frame either side sent, in order."""

    def __init__(self, channels):
        self.buses = {arm: can.Bus(channel=ch, interface="virtual") for arm, ch in channels.items()}

    def frames(self, arm, ids=None):
        bus, out = self.buses[arm], getattr(self, f"_seen_{arm}", [])
        while (m := bus.recv(timeout=0.0)) is not None:
            out.append(m)
        setattr(self, f"_seen_{arm}", out)
        return [m for m in out if ids is None or m.arbitration_id in ids]

    def joint_commands(self, arm) -> np.ndarray:
        """(N, 6) joint targets in rad, one row per complete 0x155-0x157 triple."""
        rows, cur = [], {}
        for m in self.frames(arm, P.JOINT_CTRL):
            k = P.JOINT_CTRL.index(m.arbitration_id)
            cur[k] = P.unpack(m.arbitration_id, m.data)
            if k == 2 and len(cur) == 3:
                rows.append([v for i in range(3) for v in cur[i]])
                cur = {}
        return units.sdk_joint_to_rad(np.asarray(rows, float).reshape(-1, 6))

    def gripper_commands(self, arm, stroke) -> np.ndarray:
        return np.array([units.gripper_sdk_to_norm(P.unpack(m.arbitration_id, m.data)[0], stroke)
                         for m in self.frames(arm, (P.GRIPPER_CTRL,))])

    def close(self):
        for b in self.buses.values():
            b.shutdown()


class Rig:
    """Emulator + PiperArm + ControlLoop + a 200 Hz driver thread doing what controller_node does."""

    def __init__(self, emb, arms=None, enable_timeout=1.0, before_connect=None, arm_options=None,
                 feedback_timeout=TIMEOUT, **emu_kw):
        n = next(_ids)
        self.emb = emb
        self.channels = {a.name: f"t{n}_{a.name}" for a in piper_arms(emb)}
        self.sniffer = Sniffer(self.channels)
        self.emu = PiperEmulator(emb, {a: self.channels[a] for a in (arms or self.channels)}, **emu_kw)
        if before_connect:
            before_connect(self.emu)
        self.emu.start()
        self.arm = PiperArm(emb, {"can_interface": "virtual", **{f"can_{a}": ch for a, ch in self.channels.items()},
                                  "enable_timeout": enable_timeout, "connect_timeout": 0.5,
                                  "feedback_timeout": feedback_timeout, **(arm_options or {})})
        self.arm.connect()
        self.loop = ControlLoop(emb, DT, self.arm, feedback_timeout=feedback_timeout)
        self.send_errors = []
        self._stop = threading.Event()
        self._thread = None

    def start_loop(self):
        from eva_ros.runtime import run_periodic

        self._thread = threading.Thread(target=run_periodic, args=(DT, self._stop, self._tick, 5 * DT), daemon=True)
        self._thread.start()

    def _tick(self):
        state = self.arm.read_state()
        d = self.loop.tick(state, time.time())
        if d.kind is Kind.COMMAND:
            try:
                self.arm.send_positions(d.positions)
            except Exception as exc:  # noqa: BLE001 - as controller_node: latch, never sent
                self.send_errors.append(str(exc))
                self.loop.fail(f"send failed: {exc}", unsent=True)

    def state(self):
        return wait_for(lambda: (s := self.arm.read_state()) is not None and not s.error and s, 10, what="feedback")

    def trajectory(self, positions, duration):
        t0 = time.time() + 0.05
        pos = np.asarray(positions, float)
        return Trajectory(t0, np.linspace(0.0, duration, len(pos)), pos)

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.arm.close()
        self.emu.stop()
        self.sniffer.close()


@pytest.fixture
def rig(emb):
    made = []

    def make(emb=emb, **kw):
        r = Rig(emb, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def _running(r, timeout=10):
    ok, msg = r.loop.enable()
    assert ok, msg
    wait_for(lambda: r.loop.state is State.RUNNING, timeout, what="running")


def test_trajectory_executes_and_emulated_joints_track_it(rig, emb):
    r = rig(feedback_timeout=1.0)   # about tracking, not the watchdog: a CI stall must not fault it
    r.start_loop()
    _running(r)
    q0 = r.state().positions
    target = q0.copy()
    target[[0, 3, 7, 12]] += [0.3, -0.25, -0.3, 0.4]
    target[[6, 13]] = [0.9, 0.1]
    pts = q0 + (target - q0) * np.linspace(0, 1, 40)[:, None]
    assert r.loop.replace(r.trajectory(pts, 1.5))[0]

    def settled():   # the last decoded command of each arm is the target, and the arms are there
        assert r.loop.state is State.RUNNING, (r.loop.state, r.loop.take_events(), r.send_errors)
        last = all(np.allclose(r.sniffer.joint_commands(a.name)[-1], target[list(a.joint_dims)], atol=1e-3)
                   and abs(r.sniffer.gripper_commands(a.name, a.stroke_m)[-1] - target[a.gripper_dim]) < 1e-3
                   for a in piper_arms(emb))
        return last and np.allclose(r.emu.positions(), target, atol=2e-3)
    wait_for(settled, 20, what="the emulated arms at the target")
    assert r.loop.state is State.RUNNING and not r.send_errors
    assert all(len(r.sniffer.joint_commands(a.name)) > 100 for a in piper_arms(emb))


def test_every_command_frame_is_within_limits_and_rate_limits(rig, emb):
    r = rig()
    r.start_loop()
    _running(r)
    q0 = r.state().positions
    lo, hi = emb.pos_lower, emb.pos_upper
    jump = np.where(q0 - lo > hi - q0, lo, hi)   # full-range jump to the far limit of every dim
    # a plan past every limit by more than the tolerance is refused whole (the arm holds) ...
    assert not r.loop.replace(r.trajectory([q0, jump, hi + 0.5, jump], 0.3))[0]
    # ... one within it runs, clamped: every frame on the bus stays inside the limits
    past = hi + 0.5 * r.loop.limit_tolerance
    assert r.loop.replace(r.trajectory([q0, jump, past, jump], 0.3))[0]
    nan = np.array([q0, q0])
    nan[1, 2] = np.nan
    try:   # a NaN point is refused where it enters, or by the loop; never reaches the bus
        r.loop.replace(r.trajectory(nan, 0.1))
    except ValueError:
        pass
    time.sleep(1.5)
    vmax = np.asarray(emb.vel_max)
    for arm in piper_arms(emb):
        j = list(arm.joint_dims)
        cmds = r.sniffer.joint_commands(arm.name)
        assert len(cmds) > 50 and np.all(np.isfinite(cmds))
        tol = 1.5e-5   # one SDK unit (0.001 deg) of rounding
        assert np.all(cmds >= lo[j] - tol) and np.all(cmds <= hi[j] + tol)
        steps = np.abs(np.diff(np.vstack([q0[j], cmds]), axis=0))
        assert np.all(steps <= vmax[j] * DT + 2 * tol), steps.max(axis=0) / (vmax[j] * DT)
        g = r.sniffer.gripper_commands(arm.name, arm.stroke_m)
        assert np.all((g >= -1e-6) & (g <= 1 + 1e-6))
        assert np.all(np.abs(np.diff(np.concatenate([[q0[arm.gripper_dim]], g]))) <= vmax[arm.gripper_dim] * DT + 1e-5)
    # the emulated arms moved (the limits shaped the motion; they did not stop it)
    assert not np.allclose(r.emu.positions(), q0, atol=1e-2)


def test_feedback_silence_stops_commands_within_bounded_periods(rig):
    r = rig()
    r.start_loop()
    _running(r)
    wait_for(lambda: r.emu.arms["right"].commands.get(0x155, 0) > 20, 10, what="commands")
    r.emu.silence("left")
    before = r.emu.arms["right"].commands.get(0x155, 0)
    wait_for(lambda: r.loop.state is State.FAULT, 10, what="fault")
    after = r.emu.arms["right"].commands.get(0x155, 0)
    time.sleep(0.2)
    assert r.emu.arms["right"].commands.get(0x155, 0) == after   # stopped for good
    # feedback_timeout / dt control periods, plus the frames in flight and the SDK's stamp delay
    assert after - before <= int(TIMEOUT / DT) + 10, (before, after)
    assert "feedback lost" in r.loop.reason
    assert "left arm" in r.arm.read_state().error
    assert r.sniffer.frames("right", (P.MOTION_CTRL_1,))[-1].data[0] == P.ESTOP


def test_enable_refused_names_the_arm_within_enable_timeout(rig):
    r = rig(enable_timeout=0.5)
    r.emu.refuse_enable("right")
    r.state()
    t0 = time.monotonic()
    with pytest.raises(ArmFault, match=r"right arm \(t\d+_right\): enable refused"):
        r.arm.enable()
    assert time.monotonic() - t0 < 0.5 + 5.0   # returns; never hangs
    ok, msg = r.loop.enable()
    assert not ok and "right arm" in msg


def test_one_arm_missing_no_command_reaches_either_arm(rig, emb):
    r = rig(arms=("left",))
    r.start_loop()
    s = wait_for(lambda: (s := r.arm.read_state()) is not None and s.error and s, 10, what="state")
    assert "right arm" in s.error and "no CAN frames" in s.error
    right = [a for a in piper_arms(emb) if a.name == "right"][0]
    assert np.all(np.isnan(s.positions[list(right.joint_dims)]))
    ok, msg = r.loop.enable()
    assert not ok and "right arm" in msg
    with pytest.raises(ArmFault):
        r.arm.enable()
    with pytest.raises(ArmFault):
        r.arm.send_positions(np.nan_to_num(s.positions, nan=0.0).clip(emb.pos_lower, emb.pos_upper))
    time.sleep(0.3)
    for arm in ("left", "right"):
        assert not r.sniffer.frames(arm, P.JOINT_CTRL + (P.GRIPPER_CTRL,))


def test_zeros_without_frames_never_become_a_position(rig, emb):
    r = rig(before_connect=lambda emu: emu.no_joint_frames("left"))
    r.start_loop()
    left = [a for a in piper_arms(emb) if a.name == "left"][0]
    s = wait_for(lambda: (s := r.arm.read_state()) is not None and "no joint feedback" in s.error and s, 10,
                 what="the no-joint-feedback error")
    sdk = r.arm.channels[0].sdk
    assert sdk.GetCanFps() > 0 and sdk.GetArmJointMsgs().joint_state.joint_2 == 0   # the SDK's zeros
    assert np.all(np.isnan(s.positions[list(left.joint_dims)]))                   # ours are not a position
    assert "left arm" in s.error
    assert not r.loop.enable()[0]
    time.sleep(0.3)
    assert not r.sniffer.frames("left", P.JOINT_CTRL) and not r.sniffer.frames("right", P.JOINT_CTRL)


def test_a_gripper_without_feedback_is_not_a_closed_gripper(rig, emb):
    r = rig(before_connect=lambda emu: emu.no_gripper_frames("right"))
    right = [a for a in piper_arms(emb) if a.name == "right"][0]
    s = wait_for(lambda: (s := r.arm.read_state()) is not None and "no gripper feedback" in s.error and s, 10,
                 what="the no-gripper-feedback error")
    assert "right arm" in s.error and np.isnan(s.positions[right.gripper_dim])
    assert np.all(np.isfinite(s.positions[list(right.joint_dims)]))
    with pytest.raises(ArmFault, match="right arm"):
        r.arm.enable()


def test_estop_frame_and_nothing_moves_until_enable(rig):
    r = rig()
    r.start_loop()
    _running(r)
    q0 = r.state().positions
    far = q0.copy()
    far[[0, 7]] += 0.5
    assert r.loop.replace(r.trajectory([q0, far], 2.0))[0]
    wait_for(lambda: abs(r.emu.positions()[0] - q0[0]) > 0.05, 10, what="motion")
    r.loop.estop()
    stops = r.sniffer.frames("left", (P.MOTION_CTRL_1,))
    assert stops and stops[-1].data[0] == P.ESTOP
    assert r.sniffer.frames("right", (P.MOTION_CTRL_1,))[-1].data[0] == P.ESTOP
    time.sleep(0.05)
    held = r.emu.positions()
    n_cmd = len(r.sniffer.joint_commands("left"))
    time.sleep(0.5)
    np.testing.assert_allclose(r.emu.positions(), held, atol=1e-9)
    assert len(r.sniffer.joint_commands("left")) == n_cmd
    assert r.loop.state is State.ESTOPPED and not r.arm.read_state().enabled
    # resume: reset/resume frame, then enable; commands flow again from the measured state
    _running(r)
    assert [m.data[0] for m in r.sniffer.frames("left", (P.MOTION_CTRL_1,))][-1] == P.RESUME
    wait_for(lambda: len(r.sniffer.joint_commands("left")) > n_cmd + 20, 10, what="commands after enable")
    first = r.sniffer.joint_commands("left")[n_cmd]
    np.testing.assert_allclose(first, held[:6], atol=0.05)


def test_error_code_stops_the_arm_and_is_named(rig):
    r = rig()
    r.start_loop()
    _running(r)
    r.emu.set_error("right", err_code=1 << 10)   # joint 3 angle limit
    wait_for(lambda: r.loop.state is State.FAULT, 10, what="fault")
    assert "right arm" in r.loop.reason and "joint 3 over its angle limit" in r.loop.reason
    assert "0x0400" in r.loop.reason
    n = len(r.sniffer.joint_commands("left"))
    time.sleep(0.3)
    assert len(r.sniffer.joint_commands("left")) == n


def test_reenable_waits_for_the_drivers_to_switch_off(rig):
    r = rig(disable_delay=0.4)
    r.state()
    r.arm.enable()
    assert all(r.emu.arms["left"].motors[:6])
    r.arm.disable()
    r.arm.enable()   # the emulator drops an enable sent inside the switch-off window
    wait_for(lambda: r.arm.read_state().enabled, 5, what="enabled")
    time.sleep(0.6)   # past any switch-off: still enabled, not limp
    assert all(r.emu.arms["left"].motors[:6]) and all(r.emu.arms["right"].motors[:6])
    assert r.arm.read_state().enabled


def test_one_owner_per_can_channel_firmware_logged_collision_level_written(rig, emb, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="eva_ros.piper"):
        r = rig(arm_options={"collision_level": 3})
    assert "firmware S-V1.6-3" in caplog.text
    wait_for(lambda: all(a.collision_levels == (3,) * 6 for a in r.emu.arms.values()), 10, what="collision level")
    other = PiperArm(emb, {"can_interface": "virtual", "can_left": r.channels["left"],
                           "can_right": r.channels["right"]})
    with pytest.raises(ArmFault, match="already opened"):
        other.connect()
    assert r.state() is not None   # the first owner is untouched


def test_options_are_typed(emb):
    from eva_core.config import ConfigError

    with pytest.raises(ConfigError, match="speed_percnt"):
        PiperArm.Options.from_dict({"speed_percnt": 50})
    with pytest.raises(ConfigError, match="collision_level"):
        PiperArm.Options.from_dict({"collision_level": 9})
    with pytest.raises(ConfigError, match="can_interface"):
        PiperArm.Options.from_dict({"can_interface": "udp_multicast"})


def test_a_feedback_rate_below_min_feedback_hz_is_an_error(rig):
    r = rig(rate_hz=6.0)   # every frame still arrives within feedback_timeout, just too rarely
    s = wait_for(lambda: (s := r.arm.read_state()) is not None and "below min_feedback_hz" in s.error and s, 10,
                 what="the rate error")
    assert "left arm" in s.error and "right arm" in s.error


def test_a_missing_socketcan_interface_is_a_one_line_error_naming_the_arm(emb):
    from eva_ros.backends.piper import CanBusError

    arm = PiperArm(emb, {"can_interface": "socketcan", "can_left": "nocan_left", "can_right": "nocan_right"})
    with pytest.raises(CanBusError, match=r"^left arm \(nocan_left\): no CAN interface 'nocan_left'") as exc:
        arm.connect()
    assert isinstance(exc.value, OSError) and "\n" not in str(exc.value)
    assert arm.read_state() is None   # nothing half-open: connect again later


def test_sdk_speed_effort_and_limit_units():
    assert units.rad_s_to_sdk_speed(3.1416) == 3142 and units.sdk_speed_to_rad_s(3142) == pytest.approx(3.142)
    assert units.nm_to_sdk_effort(1.5) == 1500 and units.rad_s2_to_sdk_acc(5.0) == 5000
    assert units.rad_to_sdk_decideg(np.radians(150.0)) == 1500
    np.testing.assert_array_equal(units.rad_s_to_sdk_speed(np.array([0.001, -0.002])), [1, -2])


def test_velocities_come_from_the_motor_speed_frames(rig):
    r = rig()
    r.start_loop()
    _running(r)
    q0 = r.state().positions
    far = q0.copy()
    far[0] += 0.6
    assert r.loop.replace(r.trajectory([q0, far], 1.0))[0]
    s = wait_for(lambda: (s := r.arm.read_state()) is not None and s.velocities[0] > 0.2 and s, 10, what="motion")
    assert np.all(np.isfinite(s.velocities)) and abs(s.velocities[7]) < 1e-6


def test_a_single_piper_embodiment_runs_the_same_backend(rig):
    """The 7-D single-arm fixture: nothing in the backend or emulator assumes two arms."""
    from pathlib import Path

    single = load_embodiment(Path(__file__).parent / "fixtures" / "single_piper" / "single_piper.yaml")
    r = rig(emb=single)
    assert [c.layout.name for c in r.arm.channels] == ["left"] and r.arm.read_state() is not None
    r.start_loop()
    _running(r)
    q0 = r.state().positions
    target = q0.copy()
    target[[0, 6]] = [q0[0] + 0.2, 0.8]
    assert r.loop.replace(r.trajectory([q0, target], 0.8))[0]
    wait_for(lambda: np.allclose(r.emu.positions(), target, atol=3e-3), 20, what="the single arm at the target")


def test_close_leaves_no_sdk_threads_behind(rig):
    before = {t.ident for t in threading.enumerate()}
    r = rig()
    r.arm.enable()
    r.close()
    r.close = lambda: None   # the fixture's close: already done
    wait_for(lambda: {t.ident for t in threading.enumerate() if t.is_alive()} <= before, 10,
             what="the SDK's reader, monitor and frame-rate threads to end")
