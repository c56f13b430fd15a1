"""eva-record on the live ROS graph (twin cameras, /joint_states of the sim arm): the bag converts to
an episode whose frames and joints are what the twin rendered and executed; a SIGKILLed recorder
loses at most its open segment; the start/stop services cut episodes."""

import itertools
import subprocess
import time

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from eva_ros.testing import BIN, Child, NodeProcess, Probe, ros_env, unique_domain_id, wait_for, write_params

from eva_core.data.hdf5_io import read_aloha_hdf5
from eva_core.data.rosbag_episodes import ConvertOptions, convert_bag
from eva_core.embodiment import load_embodiment
from eva_ros import qos
from eva_ros.conversions import from_time_msg, msg_to_image, trajectory_to_msg

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(300)]
EMB = load_embodiment()
CAM = "/cam_high/color/image_raw"
H, W = 48, 64


class Graph:
    def __init__(self, tmp):
        self.tmp = tmp
        self.domain = unique_domain_id()
        self.env = ros_env(self.domain)
        self.params = write_params(tmp / "params.yaml", base="sim.yaml", overrides={
            "camera": {"fps": 10.0, "source_options": {"height": H, "width": W}},
            "eva_record": {"out_dir": str(tmp / "bags"), "segment_seconds": 0.5,
                           "topics": ["joint_states", "cam_high/color/image_raw", "eva/instruction"]}})
        self.bringup = Child([BIN / "eva-bringup", "--quiet", "--config", self.params, "--nodes", "camera,controller"],
                             tmp / "bringup.log", self.env)
        p = self.probe = Probe(self.domain)
        p.subscribe("/joint_states", JointState, qos.STATE, keep=20000)
        p.subscribe(CAM, Image, qos.IMAGE, keep=2000)
        self.instruction = p.publisher("/eva/instruction", String, qos.LATCHED)
        self.instruction.publish(String(data="wave the left arm"))
        self.traj = p.publisher("/eva/plan/trajectory", JointTrajectory, qos.PLAN)
        self.ids = itertools.count(1)
        wait_for(lambda: p.received("/joint_states") and p.received(CAM), 120, what="the sim graph")

    def recorder(self, name):
        proc = NodeProcess("eva-record", self.params, self.env, self.tmp, name)
        wait_for(lambda: self.probe.node.count_subscribers(CAM) >= 2 and
                 self.probe.node.count_subscribers("/joint_states") >= 2, 60, what=f"{name} subscriptions")
        return proc

    def sweep(self, seconds=2.0, amplitude=0.4):
        """Swing the left arm's first joint out and back (a trajectory the controller follows)."""
        home = EMB.joint_positions_to_action(np.array(self.probe.received("/joint_states")[-1].position))
        dt = 0.005
        t = np.arange(int(seconds / dt)) * dt
        a = np.tile(home, (len(t), 1))
        a[:, 0] += amplitude * np.sin(np.pi * t / seconds)
        wait_for(lambda: self.traj.get_subscription_count() > 0, 30, what="controller subscription")
        self.traj.publish(trajectory_to_msg(EMB.joint_names, EMB.action_to_joint_positions(a), dt, time.time(),
                                            f"eva_traj:id={next(self.ids)}"))
        time.sleep(seconds + 0.5)

    def close(self):
        self.probe.close()
        self.bringup.stop(30.0)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    g = Graph(tmp_path_factory.mktemp("graph"))
    try:
        yield g
    finally:
        g.close()


def _episodes(graph):
    root = graph.tmp / "bags"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def _probe_joints(graph):
    msgs = graph.probe.received("/joint_states")
    t = np.array([from_time_msg(m.header.stamp) for m in msgs])
    q = EMB.joint_positions_to_action(np.array([m.position for m in msgs]))
    return t, q


def test_recorded_bag_matches_what_the_twin_rendered_and_executed(graph):
    rec = graph.recorder("recorder")
    try:
        graph.sweep()
    finally:
        rec.stop()   # SIGINT: the open segment is closed cleanly
    assert rec.proc.returncode == 0, rec.tail()
    (episode,) = _episodes(graph)
    path, report, info = convert_bag(episode, EMB, ConvertOptions(), graph.tmp / "clean.hdf5")
    assert report.errors == [], report.errors
    ep = read_aloha_hdf5(path)
    assert len(ep) >= 15 and ep.instruction == "wave the left arm"
    # frames: exactly the images the twin's camera published, at the same stamps (the probe may
    # miss one under load: compare those it has, as for the joints below)
    msgs = graph.probe.received(CAM)
    pub_t = np.array([from_time_msg(m.header.stamp) for m in msgs])
    seen = 0
    for stamp, frame in zip(info["stamps"], ep.frames):
        i = int(np.argmin(np.abs(pub_t - stamp)))
        if abs(pub_t[i] - stamp) < 1e-5:
            np.testing.assert_array_equal(frame, msg_to_image(msgs[i]))
            seen += 1
    assert seen >= 0.9 * len(ep.frames), (seen, len(ep.frames))
    # joints: every recorded /joint_states is one the twin's arm published, byte for byte ...
    t, q = _probe_joints(graph)
    from rosbags.typesys import Stores, get_typestore

    from eva_core.data.rosbag_io import iter_bag

    store = get_typestore(Stores.ROS2_KILTED)
    recorded = [store.deserialize_cdr(m.data, m.msgtype) for m in iter_bag(episode) if m.topic == "/joint_states"]
    assert len(recorded) > 100
    matched = 0
    for m in recorded:   # the probe may miss a sample under load: compare those it has, by exact stamp
        i = int(np.argmin(np.abs(t - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9))))
        if abs(t[i] - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)) < 1e-9:
            np.testing.assert_array_equal(EMB.joint_positions_to_action(m.position), q[i])
            matched += 1
    assert matched >= 0.9 * len(recorded), (matched, len(recorded))
    # ... and the episode's qpos is them at the frame times (a lost sample would only widen a gap)
    expect = np.stack([np.interp(info["stamps"], t, q[:, d]) for d in range(EMB.dof)], axis=1)
    np.testing.assert_allclose(ep.qpos, expect, atol=1e-2)
    assert np.ptp(ep.qpos[:, 0]) > 0.2                                   # the sweep is in the episode
    # and the frames show that pose: the twin re-rendered at each recorded qpos looks the same
    from eva_core.sim import Twin

    twin = Twin(EMB)
    try:
        diffs, wrong = [], []
        for frame, qpos in zip(ep.frames, ep.qpos):
            twin.set_action(qpos)
            diffs.append(np.abs(twin.render("cam_high", H, W).astype(int) - frame).mean())
            off = qpos.copy()
            off[0] += 0.3
            twin.set_action(off)
            wrong.append(np.abs(twin.render("cam_high", H, W).astype(int) - frame).mean())
        assert np.median(diffs) < 1.0 and np.median(wrong) > 3 * max(np.median(diffs), 0.3)
    finally:
        twin.close()


def test_sigkilled_recorder_loses_at_most_the_open_segment_and_services_cut_episodes(graph):
    before = set(_episodes(graph))
    rec = graph.recorder("killed_recorder")
    try:
        graph.sweep(seconds=1.0)
        started = graph.probe.call(Trigger, "/eva_record/start_episode", Trigger.Request())
        assert started.success
        graph.sweep(seconds=2.0)
        second = wait_for(lambda: len([s for s in (set(_episodes(graph)) - before)]) == 2 and
                          sorted(set(_episodes(graph)) - before)[-1], 30, what="second episode")
        wait_for(lambda: len([s for s in second.iterdir() if (s / "metadata.yaml").exists()]) >= 2, 30,
                 what="two closed segments")
        kill_time = time.time()
        rec.kill()   # SIGKILL: no cleanup
    finally:
        rec.stop()
    first, second = sorted(set(_episodes(graph)) - before)
    assert all((s / "metadata.yaml").exists() for s in first.iterdir())   # closed by start_episode
    segs = sorted(second.iterdir())
    assert not (segs[-1] / "metadata.yaml").exists()                     # the open one
    path, report, info = convert_bag(second, EMB, ConvertOptions(), graph.tmp / "killed.hdf5")
    assert path is not None
    assert all(segs[-1].name in e for e in report.errors), report.errors
    # every camera frame published from the episode's start until 1 s before the kill (the
    # open segment spans at most segment_seconds = 0.5 s) is in the converted episode
    got = np.sort(info["stamps"])
    expected = np.array([from_time_msg(m.header.stamp) for m in graph.probe.received(CAM)])
    expected = expected[(expected >= got[0]) & (expected < kill_time - 1.0)]
    assert len(expected) > 5
    missing = [round(s - kill_time, 3) for s in expected if np.abs(got - s).min() >= 1e-5]
    assert not missing, (missing, info["dropped"], report.errors, [p.name for p in segs])
