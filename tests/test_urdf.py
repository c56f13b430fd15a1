"""The URDF parses with yourdfpy, compiles in MuJoCo, and each arm agrees with the vendor FK."""

from pathlib import Path

import numpy as np
import pytest
import yourdfpy

from eva_core.embodiment import load_embodiment

pytestmark = pytest.mark.ros

EMB = load_embodiment()


@pytest.fixture(scope="module")
def robot():
    return yourdfpy.URDF.load(str(EMB.urdf_file), load_meshes=False, build_scene_graph=True)


def test_actuated_joints_match_joint_states(robot):
    # robot_state_publisher needs /joint_states names == the URDF's non-mimic movable joints
    assert tuple(robot.actuated_joint_names) == EMB.joint_names


def test_limits_masses_and_axes(robot):
    for name, j in robot.joint_map.items():
        if j.type in ("revolute", "prismatic"):
            assert j.limit is not None and j.limit.lower < j.limit.upper, name
            assert np.linalg.norm(j.axis) == pytest.approx(1.0), name
    for i, name in enumerate(EMB.joint_names):
        if i in EMB.arm_indices:
            lim = robot.joint_map[name].limit
            assert (lim.lower, lim.upper) == (EMB.pos_lower[i], EMB.pos_upper[i])
            assert lim.velocity == pytest.approx(EMB.vel_max[i] / 0.85)
    for name, link in robot.link_map.items():
        if link.inertial is not None:
            assert link.inertial.mass > 0, name
            assert np.all(np.linalg.eigvalsh(link.inertial.inertia) > 0), name


def test_cameras_present(robot):
    for cam in ("cam_high", "cam_left_wrist", "cam_right_wrist"):
        assert f"{cam}_optical_frame" in robot.link_map
        assert EMB.cameras[cam]["link"] == f"{cam}_optical_frame"
    # wrist cameras ride on the flanges
    assert robot.joint_map["cam_left_wrist_joint"].parent == "left_flange"
    assert robot.joint_map["cam_right_wrist_joint"].parent == "right_flange"


@pytest.mark.parametrize("side", ["left", "right"])
def test_arm_chain_matches_piper_sdk_fk(robot, side):
    from piper_sdk.kinematics.piper_fk import C_PiperForwardKinematics

    fk = C_PiperForwardKinematics(dh_is_offset=1)
    rng = np.random.default_rng(0)
    off = 0 if side == "left" else 7
    for _ in range(20):
        q = rng.uniform(EMB.pos_lower[off:off + 6], EMB.pos_upper[off:off + 6])
        robot.update_cfg({EMB.joint_names[off + i]: q[i] for i in range(6)})
        sdk = fk.CalFK(list(q))
        for link_idx, link in enumerate([f"{side}_link{i}" for i in range(1, 6)] + [f"{side}_flange"]):
            T = robot.get_transform(link, f"{side}_base_link")
            np.testing.assert_allclose(T[:3, 3] * 1000.0, sdk[link_idx][:3], atol=1e-3, err_msg=link)
        # flange orientation too (SDK rpy in degrees, R = Rz Ry Rx)
        r, p, y = np.deg2rad(sdk[5][3:])
        cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
        R = np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                      [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                      [-sp, cp * sr, cp * cr]])
        np.testing.assert_allclose(robot.get_transform(f"{side}_flange", f"{side}_base_link")[:3, :3], R, atol=1e-6)


def test_arm_base_is_123mm_below_joint2(robot):
    robot.update_cfg({n: 0.0 for n in EMB.joint_names})
    T = robot.get_transform("left_link2", "left_base_link")
    np.testing.assert_allclose(T[:3, 3], [0, 0, 0.123], atol=1e-9)


def test_mujoco_compiles():
    mujoco = pytest.importorskip("mujoco")
    model = mujoco.MjModel.from_xml_path(str(EMB.urdf_file))
    names = {model.joint(i).name for i in range(model.njnt)}
    assert set(EMB.joint_names) <= names
    for i, name in enumerate(EMB.joint_names):
        if i in EMB.arm_indices:
            np.testing.assert_allclose(model.joint(name).range, [EMB.pos_lower[i], EMB.pos_upper[i]])


@pytest.mark.parametrize("args, committed", [
    ([], Path(__file__).resolve().parents[1] / "urdf" / "cobot_magic.urdf"),
    (["--arms", "left", "--name", "single_piper"],
     Path(__file__).parent / "fixtures" / "single_piper" / "single_piper.urdf"),
])
def test_committed_urdfs_are_what_the_generator_writes(tmp_path, args, committed):
    import subprocess
    import sys

    out = tmp_path / "gen.urdf"
    tool = Path(__file__).resolve().parents[1] / "tools" / "make_cobot_magic_urdf.py"
    subprocess.run([sys.executable, str(tool), *args, "--out", str(out)], check=True, capture_output=True, timeout=120)
    assert out.read_text() == committed.read_text()
