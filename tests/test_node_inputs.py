"""The camera, planner and idm_action nodes at their boundaries (one process, private context):
a bad parameter fails start-up with one line naming the key; a bad message is a diagnostic event
naming the topic and field, and the node goes on serving good messages."""

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from eva_core.config import ConfigError  # noqa: E402
from eva_core.embodiment import load_embodiment  # noqa: E402
from eva_ros import qos  # noqa: E402
from eva_ros.conversions import chunk_to_msg, image_to_msg, joint_state_msg  # noqa: E402
from eva_ros.testing import wait_for  # noqa: E402
from test_ros_nodes import harness  # noqa: E402,F401 (the fixture, shared)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]
EMB = load_embodiment()
HOME = (EMB.pos_lower + EMB.pos_upper) / 2


@pytest.mark.parametrize("fps", [-30.0, 0.0, 5000.0])
def test_camera_rate_out_of_range_fails_start_up(harness, fps):
    """59292d2: fps -30 ran the capture loop unthrottled (~4800 frames/s); 0 divided by zero."""
    from eva_ros.nodes.camera_node import CameraNode

    with pytest.raises(ConfigError, match=r"camera: fps: "):
        harness.add(CameraNode, params={"source": "synthetic", "fps": fps,
                                        "source_options.height": 8, "source_options.width": 8})


def test_camera_source_options_are_checked_by_the_source(harness):
    from eva_ros.nodes.camera_node import CameraNode

    with pytest.raises(ConfigError, match=r"source_options: heigth: unknown key; did you mean 'height'"):
        harness.add(CameraNode, params={"source": "synthetic", "source_options.heigth": 8})


def _joint_state(q, stamp):
    return joint_state_msg(EMB.joint_names, EMB.action_to_joint_positions(q), np.zeros(EMB.dof), stamp)


# chunks that crashed idm_action on 59292d2 (ZeroDivisionError / empty arrays in its callback,
# or ~1e9 trajectory points for fps=1e-7), one per field
BAD_CHUNK_META = ["eva_chunk:id=1;frames=9;fps=0;n_exec=8", "eva_chunk:id=2;frames=9;fps=-16;n_exec=8",
                  "eva_chunk:id=3;frames=9;fps=nan;n_exec=8", "eva_chunk:id=4;frames=9;fps=16;n_exec=-2",
                  "eva_chunk:id=5;frames=9;fps=1e-7;n_exec=8", "eva_chunk:id=6;frames=1;fps=16;n_exec=1"]


def test_idm_action_rejects_bad_chunk_metadata_and_lives_on(harness):
    from eva_core.idm import IDMConfig, build_idm
    from eva_ros.nodes.idm_action_node import IDMActionNode

    node = harness.add(IDMActionNode, idm=build_idm(IDMConfig(variant="tiny", action_dim=EMB.dof)), params={"warmup": False})
    harness.subscribe("/eva/plan/trajectory", JointTrajectory, qos.PLAN)
    js = harness.probe.create_publisher(JointState, "/joint_states", qos.STATE)
    chunks = harness.probe.create_publisher(Image, "/eva/plan/frames", qos.PLAN)
    frames = np.random.default_rng(0).integers(0, 255, (9, 16, 16, 3), dtype=np.uint8)

    fields = ("fps: must be in (0, 1000], got 0.0", "fps: must be in (0, 1000], got -16.0", "fps: must be a finite",
              "n_exec: must be in", "n_exec: n_exec / fps", "frames: a chunk has 2 to 1000 frames, got 1")

    def send_bad():
        for frame_id in BAD_CHUNK_META:
            msg = chunk_to_msg(frames, time.time(), 0, 16.0, 8, time.time())
            msg.header.frame_id = frame_id
            chunks.publish(msg)
            time.sleep(0.05)   # the PLAN topic keeps only the newest few
        seen = " | ".join(s.message for s in harness.events("eva/idm_action", "bad_chunk"))
        return all(f"/eva/plan/frames: header.frame_id: {f}" in seen for f in fields)
    wait_for(send_bad, 60, period=0.5, what="a bad_chunk event naming the field of each bad chunk")
    assert harness.got("/eva/plan/trajectory") == []

    # a malformed joint state is an event too; then a good chunk still becomes a trajectory
    bad = _joint_state(HOME, time.time())
    bad.position = bad.position[:3]
    js.publish(bad)
    wait_for(lambda: js.publish(bad) or harness.events("eva/idm_action", "bad_joint_state"), 30, period=0.2,
             what="bad_joint_state event")
    assert "position: 3 values for 14 names" in harness.events("eva/idm_action", "bad_joint_state")[0].message

    js.publish(_joint_state(HOME, time.time() + 3600.0))   # would push every real state out of the history
    wait_for(lambda: any("header.stamp" in s.message for s in harness.events("eva/idm_action", "bad_joint_state")),
             30, what="bad_joint_state event for a stamp an hour ahead")

    def send_good():
        now = time.time()
        js.publish(_joint_state(HOME, now))
        chunks.publish(chunk_to_msg(frames, now, 7, 16.0, 8, now))
        return harness.got("/eva/plan/trajectory")
    traj = wait_for(send_good, 60, period=0.3, what="a trajectory after the bad chunks")[0]
    assert "id=7;" in traj.header.frame_id and len(traj.points) == int(round(0.5 * 200)) + 1
    assert node.counts["rejected_frames"] >= len(BAD_CHUNK_META)


class ConstantWorldModel:
    """A world model stand-in that returns the observation repeated (records what it was given)."""

    fps, num_frames, height, width = 16.0, 5, 16, 16

    def __init__(self):
        self.images = []

    def generate(self, image, instruction, history=None, seed=None):
        self.images.append(image)
        return np.repeat(image[None], self.num_frames, axis=0)


def test_planner_rejects_bad_images_converts_float_frames_and_lives_on(harness):
    from eva_ros.nodes.planner_node import PlannerNode

    wm = ConstantWorldModel()
    node = harness.add(PlannerNode, world_model=wm, params={"instruction": "wave", "policy": "on_demand",
                                                           "camera_topic": "/cam", "warmup": False})
    harness.subscribe("/eva/plan/frames", Image, qos.PLAN)
    cam = harness.probe.create_publisher(Image, "/cam", qos.IMAGE)
    instr = harness.probe.create_publisher(String, "/eva/instruction", qos.LATCHED)
    short = image_to_msg(np.zeros((4, 4, 3), np.uint8), time.time())
    short.data = short.data[:-5]
    over = image_to_msg(np.full((4, 4, 3), 3.0, np.float32), time.time())   # float outside [0, 1]
    future = image_to_msg(np.zeros((4, 4, 3), np.uint8), time.time() + 3600.0)  # fresh for an hour

    def send_bad():   # the image topic keeps only the newest frame: one at a time
        for msg in (short, over, future):
            cam.publish(msg)
            time.sleep(0.1)
        seen = " | ".join(s.message for s in harness.events("eva/planner", "bad_frame"))
        return ("/cam: 43 data bytes, expected 48" in seen and "/cam: float image values span [3, 3]" in seen
                and "/cam: header.stamp: 3.6e+03 s in the future" in seen)
    wait_for(send_bad, 30, period=0.2, what="bad_frame events naming the topic and the problem")
    instr.publish(String(data="ß中🤖 " * 500))                               # odd but valid text
    # a float frame in [0, 1] is planned from as uint8, rounded: 0.5 -> 128
    wait_for(lambda: cam.publish(image_to_msg(np.full((16, 16, 3), 0.5, np.float32), time.time()))
             or harness.got("/eva/plan/frames"), 30, period=0.2, what="a chunk from a float frame")
    assert wm.images[0].dtype == np.uint8 and int(wm.images[0][0, 0, 0]) == 128
    assert node.frames_rejected >= 3 and not hasattr(node, "sub_joints")    # no 200 Hz /joint_states


def test_synchronous_planner_waits_for_the_published_trajectory_and_rejects_bad_ones(harness):
    from eva_ros.conversions import trajectory_to_msg
    from eva_ros.nodes.planner_node import PlannerNode

    wm = ConstantWorldModel()   # 4 of 5 frames at 16 fps: 0.25 s chunks
    node = harness.add(PlannerNode, world_model=wm, params={"instruction": "wave", "policy": "sync", "n_exec": 4,
                                                           "settle_time": 0.0, "camera_topic": "/cam", "warmup": False})
    harness.subscribe("/eva/plan/frames", Image, qos.PLAN)
    cam = harness.probe.create_publisher(Image, "/cam", qos.IMAGE)
    trajs = harness.probe.create_publisher(JointTrajectory, "/eva/plan/trajectory", qos.PLAN)
    wait_for(lambda: cam.publish(image_to_msg(np.zeros((16, 16, 3), np.uint8), time.time()))
             or harness.got("/eva/plan/frames"), 30, period=0.05, what="the first chunk")
    assert "anchor=arrival" in harness.got("/eva/plan/frames")[0].header.frame_id
    empty = JointTrajectory()
    far = trajectory_to_msg(EMB.joint_names, np.zeros((2, EMB.dof)), 1.0, time.time() + 3600.0, "eva_traj:id=9")
    for msg in (empty, far):
        trajs.publish(msg)
        time.sleep(0.1)
    wait_for(lambda: len(harness.events("eva/planner", "rejected_trajectory")) >= 2, 30, what="rejected_trajectory events")
    seen = " | ".join(s.message for s in harness.events("eva/planner", "rejected_trajectory"))
    assert "/eva/plan/trajectory: trajectory has no points" in seen and "beyond the 30 s bound" in seen
    # a decoded trajectory running 3 s from now holds the next chunk off until it ends
    trajs.publish(trajectory_to_msg(EMB.joint_names, np.zeros((2, EMB.dof)), 3.0, time.time(), "eva_traj:id=0"))
    wait_for(lambda: node.core.motion_end > time.time() + 2.0, 30, what="the trajectory's end taken as the arm's")
    start, why = node.core.should_start(time.time())
    assert not start and why.startswith("synchronous: next start in")


def test_camera_reports_bad_frames_from_its_source_and_keeps_capturing(harness):
    from eva_ros.backends.camera import CameraFrame, SyntheticSource
    from eva_ros.nodes.camera_node import CameraNode

    class Flaky(SyntheticSource):
        """Every other frame is something a driver might hand over: uint16, one channel, NaN."""

        def read(self):
            frame = super().read()
            bad = [frame.image.astype(np.uint16) * 257, frame.image[..., 0], np.full((8, 8, 3), np.nan, np.float32)]
            return CameraFrame(bad[frame.index // 2 % 3], frame.stamp, frame.index) if frame.index % 2 else frame

    harness.subscribe("/cam_high/color/image_raw", Image, qos.IMAGE)
    node = harness.add(CameraNode, source=Flaky(None, {"height": 8, "width": 8}),
                       params={"fps": 100.0, "source": "synthetic"})
    wait_for(lambda: node.published >= 10 and len(harness.events("eva/camera/cam_high", "read_error")) >= 2
             and harness.events("eva/camera/cam_high", "nonfinite_frame"), 30, what="good frames and bad-frame events")
    messages = " | ".join(s.message for s in harness.events("eva/camera/cam_high", "read_error"))
    assert "image dtype uint16 not supported" in messages and "images must be (H, W, 3)" in messages
    assert all(m.encoding == "rgb8" and m.height == 8 for m in harness.got("/cam_high/color/image_raw"))
    assert node._thread.is_alive() and node.rejected >= 3


def test_a_camera_with_no_device_is_one_line_and_exit_2():
    """source realsense with nothing connected: a start-up error like the controller's CAN bus
    error (one line naming the camera and the cause, exit 2), not a traceback."""
    import subprocess

    from eva_ros.testing import BIN, ros_env, unique_domain_id

    rs = pytest.importorskip("pyrealsense2")
    if len(rs.context().query_devices()):
        pytest.skip("a RealSense camera is connected")
    out = subprocess.run([str(BIN / "eva-camera-node"), "--ros-args", "-p", "source:=realsense",
                          "-p", "connect_timeout:=20.0"], env=ros_env(unique_domain_id()),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("eva-camera-node: ")]
    assert len(lines) == 1 and "'cam_high'" in lines[0] and "no RealSense camera connected" in lines[0], out.stderr


def test_planner_drops_frames_of_another_resolution_or_too_large_before_planning(harness):
    """#23 row 3: 4096x4096, 1x1, 1x20000 and 48 MB frames on the camera topic were planned from."""
    from eva_ros.nodes.planner_node import PlannerNode

    wm = ConstantWorldModel()
    node = harness.add(PlannerNode, world_model=wm, params={
        "instruction": "wave", "policy": "on_demand", "camera_topic": "/cam", "warmup": False,
        "frame_width": 32, "frame_height": 24, "max_frame_bytes": 8 << 20})
    harness.subscribe("/eva/plan/frames", Image, qos.PLAN)
    cam = harness.probe.create_publisher(Image, "/cam", qos.IMAGE)
    big = image_to_msg(np.zeros((4096, 4096, 3), np.uint8), time.time())   # 48 MB
    bad = [image_to_msg(np.zeros(s, np.uint8), time.time()) for s in ((1, 1, 3), (1, 20000, 3), (24, 33, 3))]

    def send_bad():   # one at a time (the image topic keeps only the newest); events: one per second
        for msg in (big, *bad):
            cam.publish(msg)
            time.sleep(0.3)
        seen = " | ".join(s.message for s in harness.events("eva/planner", "bad_observation"))
        return ("/cam: 4096x4096 frame of 50331648 bytes exceeds max_frame_bytes 8388608" in seen
                and "/cam: 20000x1 frame, the camera's frames are 32x24" in seen)
    wait_for(send_bad, 60, period=0.2, what="bad_observation events naming the topic and the sizes")
    assert not harness.got("/eva/plan/frames") and not wm.images          # nothing planned from them
    instr = harness.probe.create_publisher(String, "/eva/instruction", qos.LATCHED)
    cam.publish(image_to_msg(np.zeros((24, 32, 3), np.uint8), time.time()))
    time.sleep(0.2)
    instr.publish(String(data="wave again"))                               # on_demand: plan now
    wait_for(lambda: cam.publish(image_to_msg(np.zeros((24, 32, 3), np.uint8), time.time()))
             or harness.got("/eva/plan/frames"), 30, period=0.2, what="a chunk from a frame of the camera's size")
    assert all(img.shape == (24, 32, 3) for img in wm.images) and node.gate.rejected >= 4
