"""The planner node builds whatever world-model kind its `world_model.kind` parameter names
(eva_core.world_model.registry), with no edit to the node."""

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from eva_core.world_model import registry  # noqa: E402
from eva_ros import qos  # noqa: E402
from eva_ros.conversions import image_to_msg, msg_to_chunk  # noqa: E402
from eva_ros.testing import wait_for  # noqa: E402
from test_ros_nodes import harness  # noqa: E402,F401 (the fixture, shared)
from test_world_model_registry import Stripes  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


def test_the_planner_node_plans_with_a_registered_kind_from_its_params(harness):
    from eva_ros.nodes.planner_node import PlannerNode

    registry.register("stripes", Stripes)
    try:
        node = harness.add(PlannerNode, params={
            "instruction": "", "policy": "on_demand", "camera_topic": "/cam", "warmup": False,
            "world_model.kind": "stripes", "world_model.num_frames": 5, "world_model.height": 32,
            "world_model.width": 48, "world_model.fps": 8.0})
        assert isinstance(node.wm, Stripes) and node.core.fps == 8.0 and node.core.num_frames == 5
        harness.subscribe("/eva/plan/frames", Image, qos.PLAN)
        cam = harness.probe.create_publisher(Image, "/cam", qos.IMAGE)
        harness.probe.create_publisher(String, "/eva/instruction", qos.LATCHED).publish(String(data="wave"))
        got = wait_for(lambda: cam.publish(image_to_msg(np.zeros((32, 48, 3), np.uint8), time.time()))
                       or harness.got("/eva/plan/frames"), 60, period=0.2, what="a chunk from the registered kind")
        frames, meta = msg_to_chunk(got[0])
        assert frames.shape == (5, 32, 48, 3) and meta.fps == 8.0
        np.testing.assert_array_equal(frames, node.wm.generate(None, "wave", seed=node.wm.seeds[0]))
    finally:
        registry.unregister("stripes")
