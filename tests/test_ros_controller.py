"""controller_node in one process (private context, unique domain): bad input is rejected with a
diagnostic naming topic and field and the node lives on; a trajectory stamped an hour ahead is
rejected; a dead executor thread halts the arm through the control thread's heartbeat check."""

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from trajectory_msgs.msg import JointTrajectory  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from eva_core.control import EventKind, State  # noqa: E402
from eva_ros import qos  # noqa: E402
from eva_ros.backends import LoopbackArm  # noqa: E402
from eva_ros.conversions import trajectory_to_msg  # noqa: E402
from eva_ros.diagnostics import Event  # noqa: E402
from eva_ros.testing import wait_for  # noqa: E402
from test_ros_nodes import EMB, HOME, harness  # noqa: E402,F401 - the shared in-process harness

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


def controller(harness, **params):
    from eva_ros.nodes.controller_node import ControllerNode

    arm = LoopbackArm(EMB)
    node = harness.add(ControllerNode, params=params, backend=arm)
    wait_for(lambda: node.loop.counts["commands_sent"] > 5, 30, what="commands")
    return node, arm


def sweep(t0, frame_id, offset=0.2, n=200):
    a = np.tile(HOME, (n, 1))
    a[:, 0] += offset * np.linspace(0, 1, n)
    return trajectory_to_msg(EMB.joint_names, EMB.action_to_joint_positions(a), 0.005, t0, frame_id)


def test_every_loop_event_kind_is_a_diagnostics_event():
    assert {k.value for k in EventKind} <= {e.value for e in Event}


@pytest.mark.parametrize("frame_id, field", [("eva_traj:id=1;t_traj=abc", "t_traj"), ("eva_traj:id=x", "id"),
                                             ("eva_traj:id=1;t_traj=nan", "t_traj")])
def test_bad_trajectory_metadata_is_rejected_and_the_node_lives_on(harness, frame_id, field):
    node, arm = controller(harness)
    pub = harness.probe.create_publisher(JointTrajectory, "/eva/plan/trajectory", qos.PLAN)
    wait_for(lambda: pub.get_subscription_count() > 0, 30, what="subscription")
    pub.publish(sweep(time.time(), frame_id))
    (ev,) = wait_for(lambda: harness.events("eva/controller", "rejected_trajectory"), 30, what="rejection event")
    assert "/eva/plan/trajectory" in ev.message and field in ev.message
    assert harness.thread.is_alive()                      # the executor thread survived
    pub.publish(sweep(time.time(), "eva_traj:id=2"))      # and still executes good input
    wait_for(lambda: node.loop.report()["trajectories_executed"] == 1, 30, what="the good trajectory")
    assert harness.call(Trigger, "/eva/estop", Trigger.Request()).success


def test_a_trajectory_stamped_an_hour_ahead_is_rejected(harness):
    node, arm = controller(harness)
    before = arm.read_state().positions
    pub = harness.probe.create_publisher(JointTrajectory, "/eva/plan/trajectory", qos.PLAN)
    wait_for(lambda: pub.get_subscription_count() > 0, 30, what="subscription")
    pub.publish(sweep(time.time() + 3600.0, "eva_traj:id=3", offset=0.5))
    (ev,) = wait_for(lambda: harness.events("eva/controller", "rejected_trajectory"), 30, what="rejection event")
    assert "max_stamp_offset" in ev.message
    n = node.loop.counts["commands_sent"]
    wait_for(lambda: node.loop.counts["commands_sent"] > n + 50, 30, what="more ticks")
    np.testing.assert_allclose(arm.read_state().positions, before, atol=1e-9)   # it never moved


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")   # the injected bug
def test_a_dead_executor_thread_estops_the_arm_from_the_control_thread(harness):
    node, arm = controller(harness, heartbeat_timeout=0.5)

    def boom():
        raise RuntimeError("injected callback bug")
    harness.probe.create_timer(0.2, boom)     # any callback bug in the process ends rclpy's spin
    wait_for(lambda: not harness.thread.is_alive(), 30, what="the executor thread to die")
    wait_for(lambda: node.loop.state is State.FAULT, 30, what="the controller to notice")
    assert "executor stopped" in node.loop.reason and node.loop.counts["executor_stopped"] == 1
    assert not arm.read_state().enabled       # the backend itself is e-stopped
    n = arm.commands_received
    time.sleep(0.2)
    assert arm.commands_received == n
