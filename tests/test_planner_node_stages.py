"""The planner node publishes the world model's per-chunk costs (transformer calls counted by a
hook, encode/denoise/decode seconds) in its diagnostics and its report (eva-bringup's JSON)."""

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import Image  # noqa: E402

from eva_ros import qos  # noqa: E402
from eva_ros.conversions import image_to_msg  # noqa: E402
from eva_ros.testing import wait_for  # noqa: E402
from test_ros_nodes import harness  # noqa: E402,F401 (the fixture, shared)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


def test_the_planner_reports_transformer_calls_and_stage_seconds_per_chunk(harness):
    from eva_ros.nodes.planner_node import PlannerNode

    node = harness.add(PlannerNode, params={
        "instruction": "wave", "policy": "continuous", "camera_topic": "/cam", "warmup": False,
        "world_model.scheduler": "unipc", "world_model.num_steps": 3, "world_model.hist_guidance": 1.5,
        "world_model.lang_guidance": 2.5})
    harness.subscribe("/eva/plan/frames", Image, qos.PLAN)
    cam = harness.probe.create_publisher(Image, "/cam", qos.IMAGE)
    wait_for(lambda: cam.publish(image_to_msg(np.zeros((64, 64, 3), np.uint8), time.time()))
             or len(harness.got("/eva/plan/frames")) >= 2, 90, period=0.2, what="two chunks")
    stages = node.report()["world_model_stages"]
    assert stages["transformer_calls"]["last"] == 3 * 3 and stages["transformer_calls"]["p50"] == 9
    assert stages["transformer_calls"]["count"] >= 2
    for key in ("encode_s", "denoise_s", "decode_s", "total_s"):
        assert stages[key]["count"] >= 2 and stages[key]["p50"] > 0, key
    values = node.diagnostic_values()
    assert values["world_model.transformer_calls_last"] == 9 and values["world_model.transformer_calls_p50"] == 9
    assert values["world_model.denoise_p50_s"] > 0 and "world_model.decode_last_s" in values
    # each chunk's latency breakdown (eva_core.latency_breakdown): diagnostics carry the last chunk's
    for key in ("camera_to_plan", "frame_age", "frame_transport", "worker_wait", "generate", "executor",
                "encode", "denoise", "decode", "generate_wait"):
        assert f"latency.{key}_ms" in values, key
    assert values["latency.generate_ms"] > 0 and values["latency.camera_to_plan_ms"] >= values["latency.generate_ms"]
    assert node.report()["latency_breakdown"]["generate"]["count"] >= 2   # the planner keeps going: no equality
