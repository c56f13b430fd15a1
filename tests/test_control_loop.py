"""eva_core.control.ControlLoop without ROS: states, watchdogs, faults, stamps, replacement.

The backend is the real LoopbackArm on a simulated clock (the loop's clock too), so every test
runs in milliseconds and has no wall-clock threshold."""

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from eva_core.control import ControlLoop, EventKind, Kind, State, trajectory_msg_rejection
from eva_core.embodiment import load_embodiment
from eva_core.trajectory import Trajectory
from eva_ros.backends.arm import ArmState, LoopbackArm

pytestmark = pytest.mark.unit

DT = 0.005
FIXTURES = Path(__file__).parent / "fixtures"


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture(scope="module", params=["cobot_magic", "single_piper"])
def emb(request):
    if request.param == "single_piper":
        return load_embodiment(FIXTURES / "single_piper" / "single_piper.yaml")
    return load_embodiment(request.param)


class Rig:
    """A loop driving a LoopbackArm; `run(n)` ticks like controller_node (read, tick, send)."""

    def __init__(self, emb, arm=None, **kw):
        self.emb, self.clock = emb, Clock()
        self.arm = arm or make_arm(emb, self.clock)
        self.arm.connect()
        self.loop = ControlLoop(emb, DT, self.arm, clock=self.clock, **kw)
        self.sent = []
        self.decisions = []

    def run(self, n, state_fn=None):
        for _ in range(n):
            self.clock.t += DT
            state = self.arm.read_state() if state_fn is None else state_fn()
            d = self.loop.tick(state, self.clock.t)
            self.decisions.append(d)
            if d.kind is Kind.COMMAND:
                self.arm.send_positions(d.positions)
                self.sent.append(d.positions)
        return self.decisions[-1]

    def events(self, kind=None):
        evs = self.loop.take_events()
        self._seen = getattr(self, "_seen", []) + evs
        return [e for e in self._seen if kind is None or e.kind is kind]

    def traj(self, offset, seconds=1.0, stamp=None, chunk_id=1):
        n = int(seconds / DT)
        home = mid(self.emb)
        q = np.tile(home, (n, 1))
        q[:, 0] += offset * np.linspace(0, 1, n)
        return Trajectory(self.clock.t if stamp is None else stamp, np.arange(n) * DT, q, chunk_id=chunk_id)


def make_arm(emb, clock):
    try:
        return LoopbackArm(emb, clock=clock)
    except TypeError:   # the Options form: LoopbackArm(emb, options, clock=...)
        return LoopbackArm(emb, None, clock=clock)


def mid(emb):
    return (emb.pos_lower + emb.pos_upper) / 2


def enabled_rig(emb, **kw):
    rig = Rig(emb, **kw)
    assert rig.loop.enable() == (True, "enabled")
    assert rig.run(3).kind is Kind.COMMAND and rig.loop.state is State.RUNNING
    return rig


def test_starts_disabled_then_first_command_is_the_measured_state(emb):
    rig = Rig(emb)
    assert rig.run(5).kind is Kind.HOLD and rig.sent == [] and rig.loop.state is State.DISABLED
    assert rig.loop.enable()[0]
    assert rig.loop.state is State.ENABLING
    rig.run(1)
    np.testing.assert_allclose(rig.sent[0], rig.arm.read_state().positions, atol=1e-12)
    assert rig.loop.state is State.RUNNING


def test_trajectory_is_followed_within_limits_and_replacement_is_smooth(emb):
    rig = enabled_rig(emb)
    assert rig.loop.replace(rig.traj(0.4, 2.0), sent_at=rig.clock.t) == (True, "queued")
    d = rig.run(1)
    assert d.latency is not None and d.latency >= 0
    rig.run(100)
    assert rig.loop.replace(rig.traj(-0.6, 2.0, chunk_id=2))[0]
    rig.run(600)
    q = np.array(rig.sent)
    v = np.diff(q, axis=0) / DT
    assert np.all(np.abs(v) <= emb.vel_max * (1 + 1e-6))
    assert np.all(np.abs(np.diff(v, axis=0) / DT) <= emb.acc_max * (1 + 1e-6) + 1e-6)
    assert abs(q[-1, 0] - (mid(emb)[0] - 0.6)) < 1e-3
    r = rig.loop.report()
    assert r["trajectories_executed"] == 2 and r["limit_violations"] == 0


def test_feedback_timeout_faults_once_estops_and_needs_enable(emb):
    rig = enabled_rig(emb, feedback_timeout=0.1)
    rig.arm.simulate_feedback_loss(True)
    decisions = [rig.run(1) for _ in range(200)]
    assert decisions[-1].kind is Kind.FAULT and "feedback lost" in rig.loop.reason
    assert len(rig.events(EventKind.WATCHDOG_FEEDBACK)) == 1
    n = len(rig.sent)
    rig.arm.simulate_feedback_loss(False)
    assert not rig.arm.read_state().enabled     # the backend itself was e-stopped
    rig.run(50)
    assert len(rig.sent) == n and rig.loop.state is State.FAULT    # latched
    assert rig.loop.enable()[0]
    rig.run(2)
    assert len(rig.sent) > n and rig.loop.state is State.RUNNING
    assert rig.loop.report()["watchdog_feedback_timeout"] == 1


def test_read_error_while_running_is_lost_feedback(emb):
    rig = enabled_rig(emb)
    rig.clock.t += DT
    d = rig.loop.tick(None, rig.clock.t, read_error="OSError('bus off')")
    assert d.kind is Kind.FAULT and "bus off" in rig.loop.reason
    assert not rig.arm.read_state().enabled


def test_trajectory_watchdog_holds_and_reports_once(emb):
    rig = enabled_rig(emb, trajectory_timeout=0.5)
    rig.run(400)
    assert rig.events(EventKind.WATCHDOG_TRAJECTORY) == []    # never had one: waiting is fine
    rig.loop.replace(rig.traj(0.1, 0.2))
    rig.run(400)
    assert len(rig.events(EventKind.WATCHDOG_TRAJECTORY)) == 1
    tail = np.array(rig.sent[-100:])
    assert np.all(tail == tail[-1]) and rig.decisions[-1].kind is Kind.COMMAND   # holding, still sent
    rig.loop.replace(rig.traj(0.0, 0.2, chunk_id=3))
    rig.run(400)
    assert len(rig.events(EventKind.WATCHDOG_TRAJECTORY)) == 2     # a new starvation: a new event


def test_estop_stops_until_enable_from_another_thread(emb):
    rig = enabled_rig(emb)
    rig.loop.replace(rig.traj(0.3, 2.0))
    rig.run(20)
    t = threading.Thread(target=rig.loop.estop)
    t.start()
    t.join()
    n = len(rig.sent)
    assert rig.run(100).kind is Kind.HOLD and len(rig.sent) == n
    assert rig.loop.state is State.ESTOPPED and not rig.arm.read_state().enabled
    assert rig.loop.replace(rig.traj(0.3, 2.0))[0] is False      # nothing queued while stopped
    assert len(rig.events(EventKind.ESTOP)) == 1
    assert rig.loop.enable()[0]
    rig.run(5)
    assert len(rig.sent) > n
    # the first command after enable starts at the arm's measured position, not the old target
    np.testing.assert_allclose(rig.sent[n], rig.arm.read_state().positions, atol=emb.vel_max.max() * DT)


def test_estop_during_a_slow_enable_wins(emb):
    rig = Rig(emb)
    loop = rig.loop

    class SlowEnable(LoopbackArm):
        def enable(self):
            loop.estop("operator")   # arrives while the backend is still enabling
            super().enable()
    rig.arm.__class__ = SlowEnable
    ok, msg = loop.enable()
    assert not ok and "operator" in msg and loop.state is State.ESTOPPED
    assert not rig.arm.read_state().enabled     # the backend's enable finished last: stopped again


@pytest.mark.parametrize("report", [dict(enabled=False), dict(error="left arm: joint 3 over limit (0x0004)")])
def test_backend_disabled_or_error_while_commanding_is_a_latched_fault(emb, report):
    rig = enabled_rig(emb)
    rig.loop.replace(rig.traj(0.3, 2.0))
    rig.run(10)
    n = len(rig.sent)

    def reported():
        s = rig.arm.read_state()
        return ArmState(s.positions, s.velocities, s.stamp, **report)
    rig.run(50, reported)
    assert len(rig.sent) == n and rig.loop.state is State.FAULT
    assert len(rig.events(EventKind.BACKEND_FAULT)) == 1
    assert ("disabled" in rig.loop.reason) if "enabled" in report else ("0x0004" in rig.loop.reason)
    rig.run(50)    # the arm is fine again: still nothing until enable
    assert len(rig.sent) == n
    assert rig.loop.enable()[0]
    rig.run(3)
    assert len(rig.sent) > n


def test_stale_state_before_enable_is_reported_and_blocks_start(emb):
    rig = Rig(emb)
    stale = rig.arm.read_state()
    rig.clock.t += 1.0
    assert rig.loop.tick(stale, rig.clock.t).kind is Kind.FAULT
    assert rig.loop.tick(None, rig.clock.t).kind is Kind.FAULT      # stays latched, no new event
    assert len(rig.events(EventKind.WATCHDOG_FEEDBACK)) == 1


def test_nan_trajectory_and_rejected_final_command_are_never_sent(emb):
    rig = enabled_rig(emb)
    q = np.tile(mid(emb), (10, 1))
    q[4, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        Trajectory(rig.clock.t, np.arange(10) * DT, q)
    # a final filter whose limits went NaN (a broken embodiment) rejects: one fault, nothing sent
    rig.loop.final.upper = np.full(emb.dof, np.nan)
    rig.loop.final._pos = rig.loop.final._pos * np.nan
    n = len(rig.sent)
    rig.run(100)
    assert len(rig.sent) == n and rig.loop.state is State.FAULT
    assert len(rig.events(EventKind.REJECTED_COMMAND)) == 1


@pytest.mark.parametrize("offset", [3600.0, -3600.0, 30.0])
def test_stamps_far_from_now_are_rejected_with_a_reason(emb, offset):
    rig = enabled_rig(emb, max_stamp_offset=10.0)
    ok, reason = rig.loop.replace(rig.traj(0.3, 1.0, stamp=rig.clock.t + offset))
    assert not ok and "max_stamp_offset" in reason
    (ev,) = rig.events(EventKind.REJECTED_TRAJECTORY)
    assert "max_stamp_offset" in ev.message and ev.reason == "stamp_offset"
    rig.run(200)
    assert rig.loop.report()["trajectories_executed"] == 0
    assert np.ptp(np.array(rig.sent), axis=0).max() == 0     # the arm never moved toward point 0


def test_too_long_or_wrong_size_trajectories_are_rejected(emb):
    rig = enabled_rig(emb, max_trajectory_duration=5.0)
    assert not rig.loop.replace(rig.traj(0.1, 6.0))[0]
    wrong = Trajectory(rig.clock.t, [0.0, 0.1], np.zeros((2, emb.dof + 1)))
    assert not rig.loop.replace(wrong)[0]
    assert rig.loop.report()["trajectories_rejected"] == 2


def test_repeated_tick_failure_is_one_latched_fault_with_one_event(emb):
    rig = enabled_rig(emb)
    for _ in range(500):   # the adapter's tick raised 500 times in a row
        rig.loop.fail("control tick failed: RuntimeError('publisher destroyed')")
    assert len(rig.events(EventKind.CONTROL_ERROR)) == 1
    r = rig.loop.report()
    assert r["faults"] == 1 and r["estops"] == 1 and r["control_errors"] == 500
    assert rig.run(10).kind is Kind.FAULT and not rig.arm.read_state().enabled


def test_failed_send_is_not_counted_and_faults(emb):
    rig = enabled_rig(emb)
    n = rig.loop.report()["commands_sent"]
    rig.clock.t += DT
    d = rig.loop.tick(rig.arm.read_state(), rig.clock.t)
    assert d.kind is Kind.COMMAND
    rig.loop.fail("send failed: OSError('CAN write failed')", unsent=True)
    assert rig.loop.report()["commands_sent"] == n and rig.loop.state is State.FAULT


def test_executor_stop_is_a_fault_kind(emb):
    rig = enabled_rig(emb)
    rig.loop.fail("executor stopped", kind=EventKind.EXECUTOR_STOPPED)
    assert rig.loop.report()["executor_stopped"] == 1 and len(rig.events(EventKind.EXECUTOR_STOPPED)) == 1


def test_enable_failure_is_reported_and_stays_stopped(emb):
    class RefusingArm(LoopbackArm):
        def enable(self):
            raise RuntimeError("left arm: enable not confirmed within 2 s (power off?)")
    clock = Clock()
    rig = Rig(emb, arm=RefusingArm(emb, clock=clock))
    rig.clock = rig.loop.clock = clock
    ok, msg = rig.loop.enable()
    assert not ok and "power off" in msg and rig.loop.state is State.DISABLED
    assert rig.run(10).kind is Kind.HOLD and rig.sent == []
    assert rig.events(EventKind.ENABLE_FAILED)


def test_ticks_after_enable_ignore_states_from_before_it(emb):
    rig = enabled_rig(emb)
    rig.loop.estop()
    old = rig.arm.read_state()            # measured while e-stopped: enabled=False
    assert not old.enabled
    rig.clock.t += DT
    assert rig.loop.enable()[0]
    assert rig.loop.tick(old, rig.clock.t).kind is Kind.HOLD   # not a fault: measured before
    assert rig.run(1).kind is Kind.COMMAND


def test_config_values_are_checked():
    emb = load_embodiment()
    with pytest.raises(ValueError, match="feedback_timeout"):
        ControlLoop(emb, DT, None, feedback_timeout=float("nan"))
    with pytest.raises(ValueError, match="dt"):
        ControlLoop(emb, 0.0, None)


def test_a_missing_heartbeat_latches_executor_stopped(emb):
    rig = enabled_rig(emb, heartbeat_timeout=0.5)
    rig.run(200)                       # never beating yet: not armed
    assert rig.loop.state is State.RUNNING
    rig.loop.beat()
    rig.run(50)
    assert rig.loop.state is State.RUNNING
    rig.run(100)                       # 0.75 s after the last beat
    assert rig.loop.state is State.FAULT and "no heartbeat" in rig.loop.reason
    assert len(rig.events(EventKind.EXECUTOR_STOPPED)) == 1 and not rig.arm.read_state().enabled


def test_a_send_refused_because_an_estop_came_between_tick_and_send_is_not_a_fault(emb):
    rig = enabled_rig(emb)
    rig.clock.t += DT
    d = rig.loop.tick(rig.arm.read_state(), rig.clock.t)
    assert d.kind is Kind.COMMAND
    rig.loop.estop()                  # the service thread, before the adapter sends
    rig.loop.fail("send failed: ArmFault('Piper: command while e-stopped')", unsent=True)
    assert rig.loop.state is State.ESTOPPED and rig.events(EventKind.CONTROL_ERROR) == []


def test_a_stall_of_the_whole_process_is_not_a_dead_executor(emb):
    rig = enabled_rig(emb, heartbeat_timeout=0.5, feedback_timeout=0.1)
    rig.loop.beat()
    rig.clock.t += 5.0                 # nothing ran for 5 s (a suspend, a GIL convoy)
    assert rig.run(10).kind is Kind.COMMAND
    rig.loop.beat()                    # the executor's overdue timer fires right after
    assert rig.run(50).kind is Kind.COMMAND and rig.loop.state is State.RUNNING


def test_concurrent_estop_and_enable_never_let_a_command_through_while_stopped(emb):
    """Services race the control thread: no tick that starts after estop() returned yields a
    command until the next enable() starts (sequence numbers, no timing)."""
    import itertools

    arm = LoopbackArm(emb)
    arm.connect()
    loop = ControlLoop(emb, DT, arm)
    seq = itertools.count()
    ticks, marks, done = [], [], threading.Event()

    def control():
        while not done.is_set():
            start = next(seq)
            ticks.append((start, loop.tick(arm.read_state(), time.time()).kind))

    t = threading.Thread(target=control)
    t.start()
    try:
        for i in range(200):
            marks.append(("enable", next(seq)))
            loop.enable()
            n = len(ticks)
            while len(ticks) < n + i % 4:   # let a few ticks run (0..3), by count
                time.sleep(0)
            if i % 3 == 0:
                loop.replace(Trajectory(time.time(), [0.0, 0.5], np.stack([mid(emb), mid(emb)])))
            loop.estop()
            marks.append(("estopped", next(seq)))
    finally:
        done.set()
        t.join()
    stopped = [(s, e) for (k1, s), (k2, e) in zip(marks[1::2], marks[2::2]) if k1 == "estopped" and k2 == "enable"]
    assert len(stopped) == 199 and any(k is Kind.COMMAND for _, k in ticks)
    for s, e in stopped:
        assert not [k for start, k in ticks if s < start < e and k is Kind.COMMAND]


# ---- a plan outside the position limits is rejected whole (MoveIt), never clamped silently ----
def _beyond(emb, value, dim=0, point=None, n=200):
    """A plan from mid-range with `value` at dim `dim` from `point` on (default: the last half)."""
    q = np.tile(mid(emb), (n, 1))
    q[n // 2 if point is None else point:, dim] = value
    return q


@pytest.mark.parametrize("case", ["joint1=1e30", "joint1=10", "gripper=-5", "gripper=+5", "just beyond"])
def test_a_plan_beyond_the_limits_is_rejected_whole_with_an_event_and_the_arm_holds(emb, case):
    grip = int(np.flatnonzero(emb.is_gripper)[0])
    dim, value = {"joint1=1e30": (0, 1e30), "joint1=10": (0, 10.0), "gripper=-5": (grip, -5.0),
                  "gripper=+5": (grip, 5.0), "just beyond": (0, float(emb.pos_upper[0]) + 0.05)}[case]
    rig = enabled_rig(emb)
    start = np.array(rig.sent[-1])
    ok, reason = rig.loop.replace(Trajectory(rig.clock.t, np.arange(200) * DT, _beyond(emb, value, dim), chunk_id=4))
    assert not ok and f"point 100: {emb.joint_names[dim]} = {value:.6g}" in reason, reason
    (ev,) = rig.events(EventKind.REJECTED_TRAJECTORY)
    assert ev.reason == "out_of_limits" and ev.message.startswith("out_of_limits: ")
    limit = emb.pos_upper[dim] if value > 0 else emb.pos_lower[dim]
    assert "chunk 4" in ev.message and f"limit {limit:.6g}" in ev.message and "limit_tolerance" in ev.message
    rig.run(300)
    r = rig.loop.report()
    assert r["trajectories_out_of_limits"] == 1 and r["trajectories_rejected"] == 1
    assert r["trajectories_executed"] == 0 and r["trajectories_received"] == 0
    assert np.abs(np.array(rig.sent[-300:]) - start).max() == 0   # nothing moved


def test_a_plan_within_the_tolerance_is_clipped_and_counted(emb):
    rig = enabled_rig(emb, limit_tolerance=0.005)
    q = _beyond(emb, float(emb.pos_upper[0]) + 0.004)   # inside the tolerance: clipped to the margin
    assert rig.loop.replace(Trajectory(rig.clock.t, np.arange(200) * DT, q))[0]
    rig.run(400)
    r = rig.loop.report()
    assert r["trajectories_executed"] == 1 and r["trajectories_clamped"] == 1 and r["trajectories_out_of_limits"] == 0
    assert np.all(emb.within_limits(np.array(rig.sent), tol=0.0))


def test_limit_tolerance_must_be_finite_and_non_negative(emb):
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="limit_tolerance"):
            ControlLoop(emb, DT, None, limit_tolerance=bad)


@pytest.mark.parametrize("names, rows, reason", [
    (["+dup"], [[0.0]], "duplicate_joint"), (["+stranger"], [[0.0]], "unknown_joint"),
    (["-1"], [[0.0]], "missing_joint"),
    ([], [[float("nan")]], "nonfinite"), ([], [[float("inf")]], "nonfinite"), ([], [[0.0]], "malformed")])
def test_a_rejected_trajectory_message_names_why(emb, names, rows, reason):
    """#23 rows 2, 6: one rejected_trajectory event kind, with a reason the adapter derives from the message."""
    joint_names = list(emb.joint_names)
    for n in names:
        joint_names = joint_names + [joint_names[0]] if n == "+dup" else \
            joint_names + [n[1:]] if n.startswith("+") else joint_names[:-1]
    positions = [[0.0] * (len(joint_names) - 1) + row for row in rows]
    why = trajectory_msg_rejection(joint_names, emb.joint_names, positions)
    assert why.value == reason
    rig = enabled_rig(emb)
    rig.loop.reject("bad message", why)
    (ev,) = rig.events(EventKind.REJECTED_TRAJECTORY)
    assert ev.reason == reason and ev.message == f"{reason}: bad message; not executed"
    assert rig.loop.report()["trajectories_rejected"] == 1


def test_trajectory_rejections_of_the_loop_carry_their_reason(emb):
    rig = enabled_rig(emb, max_trajectory_duration=5.0)
    rig.loop.replace(Trajectory(rig.clock.t, np.arange(3) * DT, np.zeros((3, emb.dof + 1))))
    rig.loop.replace(Trajectory(rig.clock.t, np.arange(3) * 3.0, np.tile(mid(emb), (3, 1))))
    assert [e.reason for e in rig.events(EventKind.REJECTED_TRAJECTORY)] == ["wrong_size", "too_long"]
