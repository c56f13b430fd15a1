"""leader_arm_node against the CAN emulator in leader mode: leader/joint_states."""

from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState

from eva_core.embodiment import load_embodiment
from eva_core.piper.layout import piper_arms
from eva_core.sim.piper_emulator import PiperEmulator
from eva_ros import names, qos
from eva_ros.nodes.leader_arm_node import LeaderArmNode
from eva_ros.testing import InProcessGraph, diagnostic_events, wait_for

pytestmark = pytest.mark.ros


@pytest.fixture
def graph():
    emb = load_embodiment("cobot_magic")
    ch = {"left": "leader_t_left", "right": "leader_t_right"}
    emu = PiperEmulator(emb, ch)
    for arm in ch:
        emu.leader(arm)
    emu.start()
    g = InProcessGraph(num_threads=2, probe_name="leader_probe", diagnostics=False)
    node = g.add(LeaderArmNode, {"arm.can_interface": "virtual", "arm.can_left": ch["left"],
                                 "arm.can_right": ch["right"]})
    g.subscribe(names.LEADER_JOINT_STATES, JointState, qos.STATE)
    g.subscribe(names.DIAGNOSTICS, DiagnosticArray, qos.DIAGNOSTICS)
    got = {"js": g.msgs[names.LEADER_JOINT_STATES], "diag": g.msgs[names.DIAGNOSTICS]}   # live lists
    yield emb, emu, node, got
    g.close()
    emu.stop()


def test_leader_arms_publish_14d_joint_states_once_moved(graph):
    emb, emu, node, got = graph
    # silent until moved: nothing published (never zeros), and the silence is on /diagnostics
    wait_for(lambda: diagnostic_events(list(got["diag"]), "eva/leader_arm", "leader_silent"), 30, what="silence event")
    assert not got["js"]
    want = np.zeros(emb.dof)
    for k, arm in enumerate(piper_arms(emb)):
        q = np.array([0.1, 1.2, -0.8, 0.2, -0.3, 0.4]) * (1 if k == 0 else -1) + np.array([0, 0.8 * k, -0.2 * k, 0, 0, 0])
        q = np.clip(q, emb.pos_lower[list(arm.joint_dims)], emb.pos_upper[list(arm.joint_dims)])
        g = 0.25 + 0.5 * k
        emu.move_leader(arm.name, np.append(q, g))
        want[list(arm.joint_dims)], want[arm.gripper_dim] = q, g
    msg = wait_for(lambda: got["js"] and got["js"][-1], 30, what="leader/joint_states")
    assert list(msg.name) == list(emb.joint_names)
    np.testing.assert_allclose(msg.position, emb.action_to_joint_positions(want), atol=2e-5)
    # no enable, mode or motion frame was ever sent to a leader arm (the SDK's queries only)
    sent = {cid for a in emu.arms.values() for cid in a.commands}
    assert sent <= {0x472, 0x4AF}, sorted(map(hex, sent))


def test_a_misspelled_leader_option_is_a_one_line_error():
    from eva_core.config import ConfigError

    g = InProcessGraph(num_threads=2, probe_name="leader_probe", diagnostics=False)
    try:
        with pytest.raises(ConfigError, match=r"arm\.can_interfce"):
            g.add(LeaderArmNode, {"arm.can_interfce": "virtual"})
        with pytest.raises(ConfigError, match="rate_hz"):
            g.add(LeaderArmNode, {"rate_hz": -1.0})
    finally:
        g.close()
