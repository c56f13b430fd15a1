"""eva_ros.conversions: metadata and values are parsed into typed, ranged values where messages
enter; each bad field is a ValueError naming the topic and the field (no DDS needed)."""

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import JointState  # noqa: E402

from eva_core.embodiment import load_embodiment  # noqa: E402
from eva_ros.conversions import (TrajectoryMeta, chunk_to_msg, image_to_msg, joint_values_to_action,  # noqa: E402
                                 msg_to_chunk, msg_to_image, msg_to_trajectory, trajectory_meta,
                                 trajectory_to_msg)

pytestmark = pytest.mark.unit

EMB = load_embodiment()
TOPIC = "/eva/plan/frames"


def chunk(frame_id: str, t: int = 3):
    msg = chunk_to_msg(np.zeros((t, 4, 4, 3), np.uint8), 10.0, 1, 16.0, 1, 10.5)
    msg.header.frame_id = frame_id
    return msg


# fails on 59292d2: fps 0 / negative / NaN, negative n_exec and 1-frame chunks were accepted here and
# crashed idm_action later (ZeroDivisionError, empty arrays), a tiny fps built ~1e9 points
@pytest.mark.parametrize("frame_id, field", [
    ("eva_chunk:id=1;frames=3;fps=0;n_exec=2", "fps"),
    ("eva_chunk:id=1;frames=3;fps=-16;n_exec=2", "fps"),
    ("eva_chunk:id=1;frames=3;fps=nan;n_exec=2", "fps"),
    ("eva_chunk:id=1;frames=3;fps=inf;n_exec=2", "fps"),
    ("eva_chunk:id=1;frames=3;fps=1e-7;n_exec=2", "n_exec"),       # 2e7 s of trajectory
    ("eva_chunk:id=1;frames=3;fps=16;n_exec=-1", "n_exec"),
    ("eva_chunk:id=1;frames=3;fps=16;n_exec=0", "n_exec"),
    ("eva_chunk:id=1;frames=3;fps=16;n_exec=3", "n_exec"),          # action 3 needs a 4th frame
    ("eva_chunk:id=1;frames=1;fps=16;n_exec=1", "frames"),
    ("eva_chunk:id=1;frames=0;fps=16;n_exec=1", "frames"),
    ("eva_chunk:id=x;frames=3;fps=16;n_exec=2", "id"),
    ("eva_chunk:id=1;frames=3;fps=16", "n_exec"),
    ("eva_chunk:id=1;frames=3;fps=16;n_exec=2;t_plan=soon", "t_plan"),
])
def test_bad_chunk_metadata_names_topic_and_field(frame_id, field):
    with pytest.raises(ValueError, match=f"^{TOPIC}: header.frame_id: {field}: "):
        msg_to_chunk(chunk(frame_id))


def test_chunk_shape_and_prefix_errors():
    with pytest.raises(ValueError, match="does not start with 'eva_chunk:'"):
        msg_to_chunk(chunk("something else"))
    with pytest.raises(ValueError, match="height 12 is not a multiple of frames=5"):
        msg_to_chunk(chunk("eva_chunk:id=1;frames=5;fps=16;n_exec=2"))
    empty = chunk("eva_chunk:id=1;frames=2;fps=16;n_exec=1")
    empty.height, empty.data = 0, b""
    with pytest.raises(ValueError, match="empty image"):
        msg_to_chunk(empty)
    with pytest.raises(ValueError, match="^fps: "):                # a planner cannot publish bad metadata
        chunk_to_msg(np.zeros((3, 4, 4, 3), np.uint8), 0.0, 1, 0.0, 2, 0.0)
    frames, meta = msg_to_chunk(chunk("eva_chunk:id=4;frames=2;fps=30;n_exec=1;future=ok", t=2))
    assert frames.shape == (2, 4, 4, 3) and meta.chunk_id == 4 and meta.fps == 30.0 and meta.t_plan is None


def test_image_checks():
    msg = image_to_msg(np.zeros((4, 4, 3), np.float32), 0.0)
    msg.is_bigendian = 1
    with pytest.raises(ValueError, match="/cam: is_bigendian"):
        msg_to_image(msg, "/cam")
    msg = image_to_msg(np.zeros((4, 4, 3), np.uint8), 0.0)
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match="/cam: 47 data bytes, expected 48"):
        msg_to_image(msg, "/cam")


def test_trajectory_metadata_is_typed():
    traj = trajectory_to_msg(EMB.joint_names, np.zeros((2, EMB.dof)), 0.005, 1.0,
                             TrajectoryMeta(7, 12.5, 8.25).to_frame_id())
    assert trajectory_meta(traj) == TrajectoryMeta(7, 12.5, 8.25)
    traj.header.frame_id = "from another planner"
    assert trajectory_meta(traj) == TrajectoryMeta()
    for frame_id, field in (("eva_traj:id=seven", "id"), ("eva_traj:id=1;t_traj=abc", "t_traj"),
                            ("eva_traj:t_traj=nan", "t_traj"), ("eva_traj:score=inf", "score")):
        traj.header.frame_id = frame_id
        with pytest.raises(ValueError, match=f"^/eva/plan/trajectory: header.frame_id: {field}: "):
            trajectory_meta(traj)


def test_trajectory_positions_must_be_finite_and_complete():
    q = np.zeros((5, EMB.dof))
    q[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"/eva/plan/trajectory: points\[3\].positions: NaN/inf"):
        msg_to_trajectory(trajectory_to_msg(EMB.joint_names, q, 0.005, 1.0, ""), EMB.joint_names)
    traj = trajectory_to_msg(EMB.joint_names, np.zeros((5, EMB.dof)), 0.005, 1.0, "")
    traj.points[2].positions = [0.0] * 13
    with pytest.raises(ValueError, match=r"points\[2\].positions: 13 values for 14 joint_names"):
        msg_to_trajectory(traj, EMB.joint_names)
    traj = trajectory_to_msg(EMB.joint_names, np.zeros((5, EMB.dof)), 0.005, 1.0, "")
    traj.points[4].time_from_start = traj.points[3].time_from_start
    with pytest.raises(ValueError, match=r"time_from_start must increase strictly"):
        msg_to_trajectory(traj, EMB.joint_names)


def test_joint_values_are_checked_for_length_and_finiteness():
    # fails on 59292d2: fewer positions than names was an IndexError (not caught by the callbacks)
    msg = JointState(name=list(EMB.joint_names), position=[0.0] * 3)
    with pytest.raises(ValueError, match="^/joint_states: position: 3 values for 14 names"):
        joint_values_to_action(EMB, msg.name, msg.position, "/joint_states")
    q = EMB.action_to_joint_positions((EMB.pos_lower + EMB.pos_upper) / 2)
    q[5] = np.inf
    with pytest.raises(ValueError, match="^/joint_states: position: NaN/inf"):
        joint_values_to_action(EMB, EMB.joint_names, q, "/joint_states")
    with pytest.raises(ValueError, match="missing joints"):
        joint_values_to_action(EMB, EMB.joint_names[:-1], q[:-1], "/joint_states")


def test_any_frame_id_and_stamp_give_a_ranged_chunk_or_a_named_error():
    """Property: whatever the metadata text, msg_to_chunk returns metadata inside the ranges or
    raises ValueError naming the topic (never another exception, never an unbounded chunk)."""
    from hypothesis import given, settings, strategies as st

    from eva_core.chunk_decoding import FPS_MAX, MAX_CHUNK_DURATION

    numbers = st.sampled_from(["0", "-1", "1", "2", "3", "nan", "inf", "1e-9", "1e9", "16", "0.5", "x", "", " 2"])
    keys = st.sampled_from(["id", "frames", "fps", "n_exec", "t_plan", "other"])
    fields = st.lists(st.tuples(keys, numbers | st.text(max_size=8)), max_size=7)

    @settings(max_examples=200, deadline=None)
    @given(fields, st.integers(0, 2**31 - 1))
    def check(items, sec):
        msg = image_to_msg(np.zeros((12, 4, 3), np.uint8), 0.0)
        msg.header.stamp.sec = sec
        msg.header.frame_id = "eva_chunk:" + ";".join(f"{k}={v}" for k, v in items)
        try:
            frames, meta = msg_to_chunk(msg)
        except ValueError as exc:
            assert str(exc).startswith(TOPIC + ": ")
            return
        assert 2 <= meta.frames == frames.shape[0] and 0 < meta.fps <= FPS_MAX
        assert 1 <= meta.n_exec < meta.frames and meta.n_exec / meta.fps <= MAX_CHUNK_DURATION
    check()


@pytest.mark.parametrize("case", ["unknown", "twice"])
def test_unknown_or_duplicated_joints_are_rejected_naming_the_joint(case):
    names = list(EMB.joint_names)
    q = list(EMB.action_to_joint_positions((EMB.pos_lower + EMB.pos_upper) / 2))
    if case == "unknown":   # 15 joints: one the embodiment does not have
        names, q, match = names + ["elbow_of_a_stranger"], q + [0.0], r"unknown joints \['elbow_of_a_stranger'\]"
    else:                   # a joint listed twice (with another value)
        names, q, match = names + [names[0]], q + [1.0], r"joints listed twice: \['left_joint1'\]"
    traj = trajectory_to_msg(names, np.array([q, q]), 0.005, 10.0, "")
    with pytest.raises(ValueError, match=rf"^/eva/plan/trajectory: {match}"):
        msg_to_trajectory(traj, EMB.joint_names)
    with pytest.raises(ValueError, match=rf"^/joint_states: {match}"):
        joint_values_to_action(EMB, names, q, "/joint_states")
