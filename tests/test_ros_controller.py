"""controller_node in one process (private context, unique domain): its parameters are declared
(type, description, range, read-only) and a misspelled one is refused by name; bad input is
rejected with a diagnostic naming topic and field and the node lives on; a trajectory stamped an
hour ahead is rejected; a dead executor thread halts the arm through the control thread's
heartbeat check."""

import time
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("rclpy")

from rcl_interfaces.msg import ParameterType  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from eva_core.config import ConfigError, Section, param  # noqa: E402
from eva_core.control import State  # noqa: E402
from eva_ros import qos  # noqa: E402
from eva_ros.backends import LoopbackArm  # noqa: E402
from eva_ros.conversions import trajectory_to_msg  # noqa: E402
from eva_ros.diagnostics import Event  # noqa: E402
from eva_ros.params import declare_config  # noqa: E402
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


def test_parameters_are_declared_with_type_description_range_and_read_only(harness):
    """ros2 param describe / set on the controller, through its parameter services."""
    controller(harness)
    (d,) = harness.call(DescribeParameters, "/controller/describe_parameters",
                        DescribeParameters.Request(names=["control_rate_hz"])).descriptors
    assert d.type == ParameterType.PARAMETER_DOUBLE and "control loop rate" in d.description and "Hz" in d.description
    (r,) = d.floating_point_range           # gt 0, le 10000: inclusive in ROS, strict in the typed check
    assert (r.from_value, r.to_value) == (0.0, 10000.0) and d.read_only and d.additional_constraints
    (nested,) = harness.call(DescribeParameters, "/controller/describe_parameters",
                             DescribeParameters.Request(names=["safety.velocity_scale"])).descriptors
    assert nested.type == ParameterType.PARAMETER_DOUBLE and nested.floating_point_range[0].to_value == 1.0
    req = SetParameters.Request(parameters=[Parameter("control_rate_hz", value=50.0).to_parameter_msg()])
    (res,) = harness.call(SetParameters, "/controller/set_parameters", req).results
    assert not res.successful and "read-only" in res.reason


def test_a_misspelled_parameter_is_refused_by_name(harness):
    from eva_ros.nodes.controller_node import ControllerNode

    with pytest.raises(ConfigError, match=r"controller: control_rate_hx: unknown key; did you mean 'control_rate_hz'"):
        harness.add(ControllerNode, params={"control_rate_hx": 100.0}, backend=LoopbackArm(EMB))
    with pytest.raises(ConfigError, match=r"controller.arm: initial_position: unknown key; did you mean"):
        harness.add(ControllerNode, params={"arm.initial_position": [0.0]}, backend=LoopbackArm(EMB))


@dataclass
class _Options(Section):
    gain: float = param(1.0, "a gain read on every use", dynamic=True, ge=0)
    count: int = param(3, "read at start-up", gt=0, lt=10)
    names: list[str] = param([], "no items: still typed")
    extra: dict = param({}, "backend options")


def test_declare_config_types_ranges_and_dynamic_fields(harness):
    node = harness.probe
    declare_config(node, _Options.from_dict({"extra": {"a": {"b": 2}}}), prefix="opt.")
    count = node.describe_parameter("opt.count")
    assert count.type == ParameterType.PARAMETER_INTEGER and count.read_only
    assert (count.integer_range[0].from_value, count.integer_range[0].to_value) == (1, 9)   # gt 0, lt 10
    assert node.describe_parameter("opt.names").type == ParameterType.PARAMETER_STRING_ARRAY
    assert node.get_parameter("opt.extra.a.b").value == 2
    assert not node.describe_parameter("opt.gain").read_only
    assert node.set_parameters([Parameter("opt.gain", value=2.0)])[0].successful
    assert not node.set_parameters([Parameter("opt.gain", value=-1.0)])[0].successful   # below its range
    assert not node.set_parameters([Parameter("opt.count", value=4)])[0].successful


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


@pytest.mark.parametrize("every", [1, 4])
def test_joint_states_are_published_every_nth_tick(harness, every):
    """#22: `joint_states_every` thins /joint_states (fewer callbacks in the IDM node) while the
    arm is still commanded at every tick."""
    from sensor_msgs.msg import JointState

    node, _ = controller(harness, joint_states_every=every)
    got = []
    harness.probe.create_subscription(JointState, "/joint_states", lambda m: got.append(m), qos.STATE)
    wait_for(lambda: len(got) > 5, 30, what="joint_states")
    n0, c0 = len(got), node.loop.counts["commands_sent"]
    wait_for(lambda: node.loop.counts["commands_sent"] > c0 + 200, 60, what="200 more ticks")
    n1, c1 = len(got), node.loop.counts["commands_sent"]
    ticks, states = c1 - c0, n1 - n0
    # messages still in flight (or dropped, best effort) make the count a little low, never high
    assert ticks / every * 0.5 < states <= ticks / every + 5, (every, states, ticks)
