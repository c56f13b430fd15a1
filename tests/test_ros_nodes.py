"""Nodes in one process (private rclpy context, unique domain): the behaviours that need a
real model or backend fault injected - NaN actions, feedback loss, stale observations,
non-blocking generation, reward rejection - plus conversions and backends."""

import threading
import time

import h5py
import numpy as np
import pytest

pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float32, String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from eva_core.control import State  # noqa: E402
from eva_core.embodiment import load_embodiment  # noqa: E402
from eva_ros import qos  # noqa: E402
from eva_ros.backends import LoopbackArm, UnsafeCommandError, make_arm, make_camera  # noqa: E402
from eva_ros.backends.camera import PlaybackSource, write_demo_video  # noqa: E402
from eva_ros.conversions import (chunk_to_msg, from_time_msg, image_to_msg, msg_to_chunk, msg_to_image,  # noqa: E402
                                 msg_to_trajectory, trajectory_meta, trajectory_to_msg)
from eva_ros.testing import InProcessGraph, wait_for  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]
EMB = load_embodiment()
HOME = (EMB.pos_lower + EMB.pos_upper) / 2


class Harness(InProcessGraph):
    """Nodes under test + a probe node, one private context, one executor thread."""


@pytest.fixture
def harness():
    h = Harness()
    try:
        yield h
    finally:
        h.close()


# ---- conversions ----------------------------------------------------------------------------
def test_image_and_chunk_round_trip():
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    msg = image_to_msg(img, 12.5, "cam")
    assert msg.encoding == "rgb8" and msg.step == 64 * 3
    np.testing.assert_array_equal(msg_to_image(msg), img)
    frames = np.random.default_rng(1).integers(0, 255, (5, 16, 24, 3), dtype=np.uint8)
    cmsg = chunk_to_msg(frames, 100.25, chunk_id=7, fps=16.0, n_exec=3, t_plan=101.0)
    assert (cmsg.height, cmsg.width) == (80, 24)
    back, meta = msg_to_chunk(cmsg)
    np.testing.assert_array_equal(back, frames)
    assert meta.chunk_id == 7 and meta.n_exec == 3 and meta.fps == 16.0
    assert meta.stamp == pytest.approx(100.25) and meta.t_plan == pytest.approx(101.0)
    f32 = image_to_msg(np.zeros((4, 4, 3), np.float32), 0.0)
    assert f32.encoding == "32FC3" and msg_to_image(f32).dtype == np.float32


def test_conversion_errors_name_the_topic():
    msg = image_to_msg(np.zeros((4, 4, 3), np.uint8), 0.0)
    msg.encoding = "mono16"
    with pytest.raises(ValueError, match="/cam_x"):
        msg_to_image(msg, "/cam_x")
    bad = chunk_to_msg(np.zeros((3, 4, 4, 3), np.uint8), 0.0, 1, 16.0, 2, 0.0)
    bad.header.frame_id = "eva_chunk:id=1;frames=5;fps=16;n_exec=2"
    with pytest.raises(ValueError, match="multiple of frames=5"):
        msg_to_chunk(bad)
    traj = trajectory_to_msg(["a", "b"], np.zeros((3, 2)), 0.005, 1.0, "")
    with pytest.raises(ValueError, match="missing joints"):
        msg_to_trajectory(traj, ["a", "c"], "/eva/plan/trajectory")
    stamp, times, pos = msg_to_trajectory(traj, ["b", "a"])
    np.testing.assert_allclose(times, [0, 0.005, 0.01])


# ---- backends -------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_loopback_arm_integrates_with_the_embodiment_limits():
    clock = FakeClock()
    arm = LoopbackArm(EMB, clock=clock)
    arm.connect()
    np.testing.assert_allclose(arm.read_state().positions, HOME)
    with pytest.raises(UnsafeCommandError, match="left_joint1"):  # the base class's last guard
        arm.send_positions(EMB.pos_upper + 1.0)
    with pytest.raises(UnsafeCommandError, match="finite"):
        arm.send_positions(np.full(14, np.nan))
    assert arm.commands_received == 0
    arm.send_positions(EMB.pos_upper)                  # at the limits: accepted
    clock.t += 0.01
    s = arm.read_state()
    np.testing.assert_allclose(s.positions - HOME, np.minimum(EMB.vel_max * 0.01, EMB.pos_upper - HOME))
    clock.t += 100.0
    np.testing.assert_allclose(arm.read_state().positions, EMB.pos_upper)  # at most vel_max, never past
    arm.estop()
    before = arm.read_state().positions
    arm.send_positions(HOME)
    clock.t += 1.0
    np.testing.assert_allclose(arm.read_state().positions, before)       # ignored while e-stopped
    assert arm.commands_ignored == 1
    arm.enable()
    arm.send_positions(HOME)
    clock.t += 100.0
    np.testing.assert_allclose(arm.read_state().positions, HOME)
    arm.simulate_feedback_loss(True)
    stamp = arm.read_state().stamp
    clock.t += 5.0
    assert arm.read_state().stamp == stamp                               # stale feedback


def test_backend_registry():
    assert isinstance(make_arm("loopback", EMB), LoopbackArm)
    assert make_arm("eva_ros.backends.arm:LoopbackArm", EMB).emb is EMB
    with pytest.raises(ValueError, match="unknown arm backend"):
        make_arm("teleporter", EMB)
    with pytest.raises(ValueError, match="unknown camera source"):
        make_camera("pinhole")
    src = make_camera("synthetic", EMB, {"height": 32, "width": 48})
    with src:
        f = src.read()
    assert f.image.shape == (32, 48, 3) and f.image.dtype == np.uint8


def test_playback_of_video_and_episode_files(tmp_path):
    video = write_demo_video(tmp_path / "v.mp4", num_frames=6, height=48, width=64)
    with PlaybackSource(EMB, {"path": str(video), "loop": False}) as src:
        frames = [src.read() for _ in range(7)]
    assert frames[-1] is None and frames[0].image.shape == (48, 64, 3)
    from eva_core.data import Episode, write_episode, write_robotwin_hdf5

    scene = make_camera("synthetic", EMB, {"height": 48, "width": 64})
    scene.connect()
    raw = np.stack([scene.render(10 * i) for i in range(4)])     # smooth frames (JPEG-friendly)
    ep = Episode(frames=raw, qpos=np.zeros((4, 14)), action=np.zeros((4, 14)), fps=30.0, camera="cam_high")
    aloha = write_episode(ep, tmp_path / "episode_0.hdf5")
    with PlaybackSource(EMB, {"path": str(aloha), "camera": "cam_high"}) as src:
        got = [src.read().image for _ in range(5)]
    np.testing.assert_array_equal(got[0], raw[0])
    np.testing.assert_array_equal(got[4], raw[0])              # loops
    with pytest.raises(Exception, match="cam_left_wrist"):
        PlaybackSource(EMB, {"path": str(aloha), "camera": "cam_left_wrist"}).connect()
    twin = write_robotwin_hdf5(ep, tmp_path / "robotwin_0.hdf5")   # JPEG frames
    with PlaybackSource(EMB, {"path": str(twin)}) as src:                     # cam_high -> head_camera
        assert np.abs(src.read().image.astype(int) - raw[0]).mean() < 5    # lossy JPEG
    with h5py.File(tmp_path / "raw.hdf5", "w") as f:               # a raw dataset of PNG bytes
        import cv2
        enc = [cv2.imencode(".png", cv2.cvtColor(x, cv2.COLOR_RGB2BGR))[1].tobytes() for x in raw]
        f.create_dataset("/frames", data=np.array(enc))
    with PlaybackSource(EMB, {"path": str(tmp_path / "raw.hdf5"), "dataset": "/frames"}) as src:
        np.testing.assert_array_equal(src.read().image, raw[0])  # decoded (lossless PNG)
    with pytest.raises(FileNotFoundError):
        PlaybackSource(EMB, {"path": str(tmp_path / "missing.mp4")}).connect()


# ---- nodes ----------------------------------------------------------------------------------
def joint_state(positions, stamp):
    from eva_ros.conversions import joint_state_msg
    return joint_state_msg(EMB.joint_names, EMB.action_to_joint_positions(positions), np.zeros(14), stamp)


def test_idm_node_rejects_nan_actions_and_low_reward(harness):
    import torch

    from eva_core.idm import IDMConfig, build_idm
    from eva_ros.nodes.idm_action_node import IDMActionNode

    broken = build_idm(IDMConfig(action_dim=EMB.dof, variant="tiny"))
    with torch.no_grad():
        for prm in broken.parameters():
            prm.fill_(float("nan"))           # a corrupted model: every output is NaN
    node = harness.add(IDMActionNode, idm=broken)
    harness.subscribe("/eva/plan/trajectory", JointTrajectory, qos.PLAN)
    js_pub = harness.probe.create_publisher(JointState, "/joint_states", qos.STATE)
    chunk_pub = harness.probe.create_publisher(Image, "/eva/plan/frames", qos.PLAN)
    frames = np.random.default_rng(0).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)

    def send():
        js_pub.publish(joint_state(HOME, time.time()))
        chunk_pub.publish(chunk_to_msg(frames, time.time(), 5, 16.0, 8, time.time()))
        return harness.events("eva/idm_action", "nonfinite_actions")
    wait_for(send, 60, period=0.3, what="nonfinite_actions diagnostic")
    assert harness.got("/eva/plan/trajectory") == [] and node.counts["trajectories"] == 0

    # the same node with a sane model publishes; with an impossible threshold it asks for a replan
    node.decoder.idm = build_idm(IDMConfig(action_dim=EMB.dof, variant="tiny"))
    wait_for(lambda: send() and harness.got("/eva/plan/trajectory"), 60, period=0.3, what="a trajectory")
    traj = harness.got("/eva/plan/trajectory")[0]
    _, times, pos = msg_to_trajectory(traj, EMB.joint_names)
    assert times[-1] == pytest.approx(8 / 16.0) and np.all(np.isfinite(pos))
    replans = []
    harness.probe.create_service(Trigger, "/eva/replan", lambda req, resp: replans.append(1) or resp)
    node.decoder.reward_threshold = 10.5   # score is in [0, 10]
    wait_for(lambda: send() is not None and replans, 60, period=0.3, what="a replan request after a low reward")
    assert harness.events("eva/idm_action", "low_reward")


def test_idm_node_rejects_chunks_without_a_fresh_joint_state(harness):
    from eva_core.idm import IDMConfig, build_idm
    from eva_ros.nodes.idm_action_node import IDMActionNode

    node = harness.add(IDMActionNode, idm=build_idm(IDMConfig(action_dim=EMB.dof, variant="tiny")))
    harness.subscribe("/eva/plan/trajectory", JointTrajectory, qos.PLAN)
    js_pub = harness.probe.create_publisher(JointState, "/joint_states", qos.STATE)
    chunk_pub = harness.probe.create_publisher(Image, "/eva/plan/frames", qos.PLAN)
    frames = np.random.default_rng(1).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    t_state = time.time()

    def send_late_chunk():  # the controller went quiet 2 s before this observation
        js_pub.publish(joint_state(HOME, t_state))
        chunk_pub.publish(chunk_to_msg(frames, t_state + 2.0, 1, 16.0, 8, time.time()))
        return harness.events("eva/idm_action", "stale_joint_state")
    wait_for(send_late_chunk, 60, period=0.3, what="stale_joint_state diagnostic")
    assert harness.got("/eva/plan/trajectory") == [] and node.counts["trajectories"] == 0

    def send_fresh():
        now = time.time()
        js_pub.publish(joint_state(HOME, now))
        chunk_pub.publish(chunk_to_msg(frames, now, 2, 16.0, 8, now))
        return harness.got("/eva/plan/trajectory")
    wait_for(send_fresh, 60, period=0.3, what="a trajectory from a fresh state")


def test_idm_node_stamps_an_arrival_anchored_chunk_with_its_publish_time(harness):
    from eva_core.idm import IDMConfig, build_idm
    from eva_ros.nodes.idm_action_node import IDMActionNode

    harness.add(IDMActionNode, idm=build_idm(IDMConfig(action_dim=EMB.dof, variant="tiny")))
    harness.subscribe("/eva/plan/trajectory", JointTrajectory, qos.PLAN)
    js_pub = harness.probe.create_publisher(JointState, "/joint_states", qos.STATE)
    chunk_pub = harness.probe.create_publisher(Image, "/eva/plan/frames", qos.PLAN)
    frames = np.random.default_rng(2).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    obs = time.time() - 0.4   # planned from a frame 0.4 s old, with the arm still

    def send():
        js_pub.publish(joint_state(HOME, obs))
        chunk_pub.publish(chunk_to_msg(frames, obs, 3, 16.0, 8, time.time(), anchor="arrival"))
        return harness.got("/eva/plan/trajectory")
    wait_for(send, 60, period=0.3, what="a trajectory from an arrival-anchored chunk")
    msg = harness.got("/eva/plan/trajectory")[0]
    assert from_time_msg(msg.header.stamp) > obs + 0.3   # point 0 runs when it is published, not at obs
    assert from_time_msg(msg.header.stamp) == pytest.approx(trajectory_meta(msg).t_traj, abs=1e-5)


def test_controller_feedback_loss_stops_and_reports(harness):
    from eva_ros.nodes.controller_node import ControllerNode

    arm = LoopbackArm(EMB)
    node = harness.add(ControllerNode, backend=arm)
    wait_for(lambda: node.loop.counts["commands_sent"] > 20, 30, what="commands")
    arm.simulate_feedback_loss(True)
    wait_for(lambda: harness.events("eva/controller", "watchdog_feedback_timeout"), 30, what="feedback watchdog")
    n = node.loop.counts["commands_sent"]
    received = arm.commands_received
    time.sleep(0.5)
    assert node.loop.counts["commands_sent"] == n and arm.commands_received == received   # stopped
    assert node.loop.state is State.FAULT and "feedback lost" in node.loop.reason
    # feedback back: still stopped until explicitly enabled
    arm.simulate_feedback_loss(False)
    time.sleep(0.3)
    assert node.loop.counts["commands_sent"] == n
    assert harness.call(SetBool, "/eva/enable", SetBool.Request(data=True)).success
    wait_for(lambda: node.loop.counts["commands_sent"] > n, 30, what="commands after re-enable")
    assert node.loop.state is State.RUNNING


class FailingSendArm(LoopbackArm):
    """A real loopback arm whose bus starts failing on command (e.g. a CAN write error)."""

    fail = False

    def _send_positions(self, q):
        if self.fail:
            raise OSError("CAN write failed")
        super()._send_positions(q)


def test_controller_tick_failure_estops_the_arm(harness):
    from eva_ros.nodes.controller_node import ControllerNode

    arm = FailingSendArm(EMB)
    node = harness.add(ControllerNode, backend=arm)
    wait_for(lambda: node.loop.counts["commands_sent"] > 20, 30, what="commands")
    arm.fail = True
    wait_for(lambda: harness.events("eva/controller", "control_error"), 30, what="control_error diagnostic")
    assert node.loop.state is State.FAULT and "CAN write failed" in node.loop.reason and node.loop.counts["estops"] == 1
    assert not arm.read_state().enabled  # the backend itself was e-stopped, not just left servoing
    arm.fail = False
    n = node.loop.counts["commands_sent"]
    time.sleep(0.3)
    assert node.loop.counts["commands_sent"] == n  # nothing until an explicit enable
    assert harness.call(SetBool, "/eva/enable", SetBool.Request(data=True)).success
    wait_for(lambda: node.loop.counts["commands_sent"] > n, 30, what="commands after re-enable")


class GatedWorldModel:
    """The real tiny world model behind a gate the test opens (to hold a generation in flight)."""

    def __init__(self):
        from eva_core.world_model import WorldModel, WorldModelConfig

        self.wm = WorldModel.from_config(WorldModelConfig.tiny_default())
        self.fps, self.num_frames = self.wm.fps, self.wm.num_frames
        self.gate = threading.Event()
        self.inside = threading.Event()
        self.calls = 0
        self.instructions = []
        self.histories = []

    def generate(self, image, instruction, history=None, seed=None):
        self.calls += 1
        self.instructions.append(instruction)
        self.histories.append(history)
        self.inside.set()
        self.gate.wait(60)
        return self.wm.generate(image, instruction, history=history, seed=seed)


def test_planner_rejects_stale_frames_and_never_blocks_the_executor(harness):
    from eva_ros.nodes.planner_node import PlannerNode

    wm = GatedWorldModel()
    harness.add(PlannerNode, world_model=wm, params={"instruction": "stack the cups", "max_obs_age": 0.5,
                                                      "policy": "on_demand", "camera_topic": "/cam", "warmup": False})
    harness.subscribe("/eva/plan/frames", Image, qos.PLAN)
    cam = harness.probe.create_publisher(Image, "/cam", qos.IMAGE)
    img = np.zeros((48, 64, 3), np.uint8)
    # a stale frame (captured 5 s ago) is rejected: no generation
    wait_for(lambda: cam.publish(image_to_msg(img, time.time() - 5.0)) or
             (harness.call(Trigger, "/eva/replan", Trigger.Request()) and
              harness.events("eva/planner", "stale_observation")), 30, period=0.3, what="stale rejection")
    assert wm.calls == 0
    # a fresh frame + replan: the generation starts and hangs at the gate ...
    wait_for(lambda: cam.publish(image_to_msg(img, time.time())) or
             (harness.call(Trigger, "/eva/replan", Trigger.Request()) and wm.inside.is_set()),
             30, period=0.3, what="generation to start")
    # ... while the executor still answers services (generation runs in the worker thread)
    assert harness.call(Trigger, "/eva/replan", Trigger.Request()).success
    assert harness.got("/eva/plan/frames") == []
    wm.gate.set()
    msg = wait_for(lambda: harness.got("/eva/plan/frames"), 30, what="the chunk")[0]
    frames, meta = msg_to_chunk(msg)
    assert frames.shape == (9, 64, 64, 3) and meta.n_exec == 8 and meta.chunk_id == 0


def test_camera_node_publishes_playback_frames(harness, tmp_path):
    from eva_ros.nodes.camera_node import CameraNode

    video = write_demo_video(tmp_path / "scene.mp4", num_frames=4, height=48, width=64)
    harness.subscribe("/cam_high/color/image_raw", Image, qos.IMAGE)
    harness.add(CameraNode, params={"source": "playback", "fps": 30.0, "source_options.path": str(video)})
    msg = wait_for(lambda: harness.got("/cam_high/color/image_raw"), 30, what="an image")[0]
    assert msg.encoding == "rgb8" and (msg.height, msg.width) == (48, 64)
    assert msg.header.frame_id == EMB.cameras["cam_high"]["link"]


def test_score_is_published(harness):
    from eva_ros.nodes.idm_action_node import IDMActionNode

    harness.add(IDMActionNode)
    harness.subscribe("/eva/plan/score", Float32, qos.DIAGNOSTICS)
    pub = harness.probe.create_publisher(Image, "/eva/plan/frames", qos.PLAN)
    frames = np.random.default_rng(3).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    wait_for(lambda: pub.publish(chunk_to_msg(frames, time.time(), 1, 16.0, 4, time.time())) or
             harness.got("/eva/plan/score"), 60, period=0.3, what="a score")
    assert 0.0 <= harness.got("/eva/plan/score")[0].data <= 10.0


class PosedScene(make_camera("synthetic").__class__):
    """A synthetic camera that draws the pose it is given (as a rendered twin camera would)."""

    def set_joint_positions(self, action):
        self.pose = np.asarray(action, dtype=float)

    def render(self, i):
        img = super().render(i)
        if getattr(self, "pose", None) is not None:
            img[0, 0, 0] = int(np.clip(self.pose[0] * 40 + 128, 0, 255))   # joint 1 -> a pixel
        return img


def test_camera_node_poses_a_rendered_source_from_joint_states(harness):
    from eva_ros.conversions import joint_state_msg
    from eva_ros.nodes.camera_node import CameraNode

    harness.subscribe("/cam_high/color/image_raw", Image, qos.IMAGE)
    harness.add(CameraNode, source=PosedScene(EMB, {"height": 32, "width": 48}), params={"fps": 30.0})
    pub = harness.probe.create_publisher(JointState, "/joint_states", qos.STATE)
    pose = HOME.copy()
    pose[0] = 1.0

    def posed():
        pub.publish(joint_state_msg(EMB.joint_names, EMB.action_to_joint_positions(pose), np.zeros(14), time.time()))
        return any(msg_to_image(m)[0, 0, 0] == 168 for m in harness.got("/cam_high/color/image_raw"))
    wait_for(posed, 30, period=0.1, what="a frame rendered at the published pose")


def test_planner_takes_the_latched_instruction_and_replans_on_a_new_one(harness):
    from eva_ros.nodes.planner_node import PlannerNode

    instr = harness.probe.create_publisher(String, "/eva/instruction", qos.LATCHED)
    instr.publish(String(data="open the drawer"))          # before the planner exists: latched
    wm = GatedWorldModel()
    wm.gate.set()
    harness.add(PlannerNode, world_model=wm, params={"instruction": "", "policy": "on_demand",
                                                      "camera_topic": "/cam", "warmup": False,
                                                      "history_frames": 2})
    cam = harness.probe.create_publisher(Image, "/cam", qos.IMAGE)
    img = np.zeros((48, 64, 3), np.uint8)
    wait_for(lambda: cam.publish(image_to_msg(img, time.time())) or wm.calls >= 1, 30, period=0.1,
             what="a chunk for the latched instruction")
    assert wm.instructions == ["open the drawer"]
    instr.publish(String(data="open the drawer"))          # the same text again: no replan
    for _ in range(10):
        cam.publish(image_to_msg(img, time.time()))
        time.sleep(0.1)
    assert wm.calls == 1
    instr.publish(String(data="close the drawer"))
    wait_for(lambda: cam.publish(image_to_msg(img, time.time())) or wm.calls >= 2, 30, period=0.1,
             what="a replan for the new instruction")
    assert wm.instructions[-1] == "close the drawer"
    # by now frames before the observation exist: they are passed as the world model's history
    assert len(wm.histories[-1]) == 2 and wm.histories[-1][0].shape == (48, 64, 3)


def test_idm_node_precision_parameter_is_checked_by_name(harness):
    from eva_core.idm import IDMConfig, build_idm
    from eva_ros.nodes.idm_action_node import IDMActionNode

    with pytest.raises(ValueError, match=r"idm: precision"):
        IDMActionNode(context=harness.context, parameter_overrides=[Parameter("idm.precision", value="fp8")])
    node = harness.add(IDMActionNode, params={"idm.precision": "bfloat16"},
                       idm=build_idm(IDMConfig(action_dim=EMB.dof, variant="tiny", fusion="late")))
    frames = np.random.default_rng(4).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    low = node.decoder.predict(frames)
    node.decoder.precision = "float32"
    ref = node.decoder.predict(frames)
    assert low.shape == (6, 14) and 0 < np.abs(low - ref).max() < 0.05
