"""controller_node with the real Piper backend against the CAN emulator, through ROS.

The emulator, the controller node (arm_backend: piper, can_interface: virtual) and a probe node
share this process; a sniffer endpoint decodes the frames on each channel.
"""

from __future__ import annotations

import itertools
import time

import can
import numpy as np
import pytest
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from eva_core.embodiment import load_embodiment
from eva_core.piper import protocol as P
from eva_core.piper.layout import piper_arms
from eva_core.sim.piper_emulator import PiperEmulator
from eva_ros import names, qos
from eva_ros.conversions import trajectory_to_msg
from eva_ros.nodes.controller_node import ControllerNode
from eva_ros.testing import InProcessGraph, diagnostic_events, wait_for

pytestmark = pytest.mark.ros

_ids = itertools.count()


class Graph(InProcessGraph):
    def __init__(self, emb):
        n = next(_ids)
        self.emb = emb
        self.ch = {a.name: f"cn{n}_{a.name}" for a in piper_arms(emb)}
        self.sniff = {a: can.Bus(channel=c, interface="virtual") for a, c in self.ch.items()}
        self.emu = PiperEmulator(emb, self.ch).start()
        super().__init__(num_threads=3, probe_name="piper_probe")   # records /diagnostics
        # feedback timeouts for a loaded CI machine (the emulator and the SDK reader are Python threads)
        params = {"arm_backend": "piper", "auto_enable": False, "arm.can_interface": "virtual",
                  "feedback_timeout": 2.0, "arm.feedback_timeout": 2.0,
                  "arm.can_left": self.ch["left"], "arm.can_right": self.ch["right"]}
        self.node = self.add(ControllerNode, params)
        self.diags = self.msgs[names.DIAGNOSTICS]
        self.pub = self.publisher(names.PLAN_TRAJECTORY, JointTrajectory, qos.PLAN)
        self.seen = {a: [] for a in self.ch}

    def frames(self, arm, ids):
        while (m := self.sniff[arm].recv(timeout=0.0)) is not None:
            self.seen[arm].append(m)
        return [m for m in self.seen[arm] if m.arbitration_id in ids]

    def wait(self, predicate, what):
        """wait_for, and on a timeout say where the controller stands (for triage)."""
        try:
            return wait_for(predicate, 30, what=what)
        except AssertionError as exc:
            with self.lock:
                msgs = [s.message for a in self.diags for s in a.status if s.name == "eva/controller"][-5:]
            raise AssertionError(f"{exc}; loop {self.node.loop.state.value}: {self.node.loop.reason}; "
                                 f"last diagnostics {msgs}") from None

    def events(self, kind):
        with self.lock:
            return diagnostic_events(list(self.diags), "eva/controller", kind)

    def enable(self):
        req = SetBool.Request()
        req.data = True
        res = self.call(SetBool, names.ENABLE, req)
        assert res.success, res.message

    def send_trajectory(self, positions, dt):
        msg = trajectory_to_msg(self.emb.joint_names, self.emb.action_to_joint_positions(np.asarray(positions)),
                                dt, time.time() + 0.05, "")
        wait_for(lambda: self.pub.get_subscription_count() > 0 and self.node.sub_traj.get_publisher_count() > 0, 30,
                 what="the trajectory topic matched both ways")
        self.pub.publish(msg)

    def close(self):
        super().close()
        self.emu.stop()
        for b in self.sniff.values():
            b.shutdown()


@pytest.fixture
def graph():
    g = Graph(load_embodiment("cobot_magic"))
    yield g
    g.close()


def _ramp(q0, target, n=30):
    return q0 + (np.asarray(target) - q0) * np.linspace(0, 1, n)[:, None]


def test_trajectory_executes_and_estop_holds_until_enable(graph):
    g = graph
    q0 = g.emu.positions()
    assert not g.frames("left", P.JOINT_CTRL)   # auto_enable false: nothing sent before /eva/enable
    g.enable()
    target = q0.copy()
    target[[0, 8]] += [0.3, 0.2]
    g.send_trajectory(_ramp(q0, target), 0.05)
    g.wait(lambda: np.allclose(g.emu.positions(), target, atol=3e-3), "the arms at the target")

    far = target.copy()
    far[[0, 7]] -= 0.5
    g.send_trajectory(_ramp(target, far, 60), 0.05)
    g.wait(lambda: abs(g.emu.positions()[0] - target[0]) > 0.05, "motion")
    assert g.call(Trigger, names.ESTOP, Trigger.Request()).success
    for arm in g.ch:
        assert g.frames(arm, (P.MOTION_CTRL_1,))[-1].data[0] == P.ESTOP
    time.sleep(0.05)
    held = g.emu.positions()
    n_cmd = len(g.frames("left", P.JOINT_CTRL))
    g.send_trajectory(_ramp(held, far, 20), 0.05)   # a new plan while e-stopped: ignored
    time.sleep(0.6)
    np.testing.assert_allclose(g.emu.positions(), held, atol=1e-9)
    assert len(g.frames("left", P.JOINT_CTRL)) == n_cmd
    g.enable()   # resume (0x150 0x02), enable, then commands from the measured state
    assert g.frames("left", (P.MOTION_CTRL_1,))[-1].data[0] == P.RESUME
    g.send_trajectory(_ramp(held, far, 20), 0.05)
    g.wait(lambda: np.allclose(g.emu.positions(), far, atol=3e-3), "motion after /eva/enable")


def test_error_code_stops_the_arm_and_is_named_in_diagnostics(graph):
    g = graph
    g.enable()
    g.wait(lambda: len(g.frames("right", P.JOINT_CTRL)) > 30, "commands")
    g.emu.set_error("right", err_code=1 << 10)
    ev = g.wait(lambda: g.events("backend_fault"), "a backend_fault event")
    assert "right arm" in ev[-1].message and "joint 3 over its angle limit (err_code 0x0400)" in ev[-1].message
    time.sleep(0.1)
    n = len(g.frames("left", P.JOINT_CTRL))
    time.sleep(0.4)
    assert len(g.frames("left", P.JOINT_CTRL)) == n   # both arms stopped


def test_enable_refused_names_the_arm_in_the_service_reply(graph):
    g = graph
    g.emu.refuse_enable("left")
    req = SetBool.Request()
    req.data = True
    res = g.call(SetBool, names.ENABLE, req)
    assert not res.success and "left arm" in res.message and "enable refused" in res.message
    assert g.events("enable_failed")
    assert not g.frames("left", P.JOINT_CTRL) and not g.frames("right", P.JOINT_CTRL)
