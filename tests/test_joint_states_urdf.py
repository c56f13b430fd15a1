"""/joint_states against the URDF robot_state_publisher reads (issue #24): the controller publishes
exactly the URDF's movable, non-mimic joints by name (mimic fingers are robot_state_publisher's
job), revolute joints in radians and the prismatic grippers as one finger's travel in metres,
inside the URDF limits. Checked through ROS with the Piper backend on the CAN emulator (the
hardware path: 0.001 deg and um on the bus) and with the loopback arm."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import JointState  # noqa: E402

from eva_core.embodiment import load_embodiment  # noqa: E402
from eva_core.piper.layout import piper_arms  # noqa: E402
from eva_core.sim.piper_emulator import PiperEmulator  # noqa: E402
from eva_ros import names, qos  # noqa: E402
from eva_ros.backends import LoopbackArm  # noqa: E402
from eva_ros.nodes.controller_node import ControllerNode  # noqa: E402
from eva_ros.testing import InProcessGraph, wait_for  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

EMB = load_embodiment()
_ids = itertools.count()


def urdf_movable_joints(path) -> dict[str, ET.Element]:
    """name -> <joint> of the revolute/prismatic/continuous joints that are not mimics."""
    robot = ET.parse(path).getroot()
    return {j.get("name"): j for j in robot.iter("joint")
            if j.get("type") in ("revolute", "prismatic", "continuous") and j.find("mimic") is None}


def pose() -> np.ndarray:
    """An action away from zero and from the middle: joints at 30 % of their range (rad), grippers
    open (1.0, i.e. the full stroke: one finger at stroke / 2 m)."""
    q = EMB.pos_lower + 0.3 * (EMB.pos_upper - EMB.pos_lower)
    q[list(EMB.gripper_indices)] = 1.0
    return q


@pytest.fixture(params=["piper", "loopback"])
def joint_state(request):
    """The first /joint_states message the controller publishes with the arm held at `pose()`."""
    q = pose()
    graph = InProcessGraph(num_threads=3, probe_name="js_probe", diagnostics=False)
    emu = None
    try:
        graph.subscribe(names.JOINT_STATES, JointState, qos.STATE)
        params = {"auto_enable": False}
        if request.param == "piper":
            n = next(_ids)
            channels = {a.name: f"js{n}_{a.name}" for a in piper_arms(EMB)}
            emu = PiperEmulator(EMB, channels, initial=q).start()
            params.update({"arm_backend": "piper", "arm.can_interface": "virtual", "feedback_timeout": 0.5,
                           "arm.feedback_timeout": 0.5, "arm.can_left": channels["left"],
                           "arm.can_right": channels["right"]})
            graph.add(ControllerNode, params)
        else:
            graph.add(ControllerNode, params, backend=LoopbackArm(EMB, {"initial_positions": q.tolist()}))
        wait_for(lambda: graph.got(names.JOINT_STATES), 60, what="/joint_states")
        yield request.param, q, graph.got(names.JOINT_STATES)[-1]
    finally:
        graph.close()
        if emu is not None:
            emu.stop()


def test_joint_states_names_and_units_match_the_urdf(joint_state):
    backend, q, msg = joint_state
    urdf = urdf_movable_joints(EMB.urdf_file)
    assert list(msg.name) == list(EMB.joint_names)
    assert set(msg.name) == set(urdf), f"{backend}: /joint_states {sorted(msg.name)} vs URDF {sorted(urdf)}"
    assert len(msg.position) == len(msg.name)
    for i, name in enumerate(msg.name):
        joint = urdf[name]
        lim = joint.find("limit")
        lower, upper = float(lim.get("lower")), float(lim.get("upper"))
        value = msg.position[i]
        assert lower - 1e-6 <= value <= upper + 1e-6, f"{backend}: {name} = {value} outside URDF [{lower}, {upper}]"
        if joint.get("type") == "revolute":       # radians: the commanded pose itself
            assert abs(value - q[i]) < 1e-4, f"{backend}: {name} = {value} rad, expected {q[i]}"
        else:                                      # prismatic gripper: one finger's travel in metres
            assert joint.get("type") == "prismatic" and EMB.is_gripper[i]
            stroke = EMB.gripper_stroke_max_m[i]
            assert abs(value - q[i] * stroke / 2) < 1e-4, f"{backend}: {name} = {value} m, expected {stroke / 2}"
