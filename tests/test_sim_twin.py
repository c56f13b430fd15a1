"""MuJoCo twin: built from the URDF + embodiment cameras, posed by actions, rendered offscreen,
and the sim arm that drives its servos."""

import numpy as np
import pytest

from eva_core.embodiment import load_embodiment
from eva_core.sim import Twin

pytestmark = pytest.mark.unit

EMB = load_embodiment()


@pytest.fixture(scope="module")
def twin():
    t = Twin(EMB)
    yield t
    t.close()


def test_cameras_come_from_the_embodiment(twin):
    assert sorted(twin.cameras) == sorted(EMB.cameras)


def test_pose_round_trip_and_mimic_finger(twin):
    a = (EMB.pos_lower + EMB.pos_upper) / 2
    a[0], a[6], a[13] = 0.4, 0.8, 0.25
    twin.set_action(a)
    np.testing.assert_allclose(twin.action(), a, atol=1e-12)
    import mujoco

    fid = mujoco.mj_name2id(twin.model, mujoco.mjtObj.mjOBJ_JOINT, "left_gripper_finger2")
    twin.render("cam_high", 8, 8)  # poses the render data
    assert twin.data.qpos[twin.model.jnt_qposadr[fid]] == pytest.approx(-0.8 * 0.035)


def test_out_of_range_is_clipped_and_nan_rejected(twin):
    twin.set_action(EMB.pos_upper + 1.0)
    np.testing.assert_allclose(twin.action(), EMB.pos_upper, atol=1e-12)
    with pytest.raises(ValueError, match="finite"):
        twin.set_action(np.full(14, np.nan))


def test_rendered_view_follows_the_arm(twin):
    a = (EMB.pos_lower + EMB.pos_upper) / 2
    twin.set_action(a)
    img0 = twin.render("cam_high", 60, 80)
    assert img0.shape == (60, 80, 3) and img0.dtype == np.uint8 and img0.std() > 5
    a2 = a.copy()
    a2[0] += 1.0  # swing the left arm
    twin.set_action(a2)
    img1 = twin.render("cam_high", 60, 80)
    assert np.abs(img1.astype(int) - img0.astype(int)).mean() > 0.5
    twin.set_action(a)
    np.testing.assert_array_equal(twin.render("cam_high", 60, 80), img0)  # deterministic
    with pytest.raises(ValueError, match="unknown camera"):
        twin.render("cam_nope")


def test_sim_arm_poses_the_shared_twin():
    from eva_core.sim import get_twin, reset_twins
    from eva_ros.backends import make_arm, make_camera

    t = [0.0]
    arm = make_arm("sim", EMB, {"twin": "test_shared", "physics": True}, clock=lambda: t[0])
    cam = make_camera("sim", EMB, {"camera": "cam_high", "height": 48, "width": 64, "twin": "test_shared"})
    try:
        arm.connect()
        cam.connect()
        before = cam.read().image
        target = arm.read_state().positions.copy()
        target[7] += 0.5
        arm.send_positions(target)
        for _ in range(150):  # 1.5 s of control ticks: the reference gets there within vel_max,
            t[0] += 0.01      # the physics servo settles behind it
            arm.read_state()
        np.testing.assert_allclose(arm.read_state().positions, target, atol=2e-3)
        np.testing.assert_allclose(get_twin("test_shared").action(), target, atol=2e-3)
        assert np.abs(cam.read().image.astype(int) - before.astype(int)).mean() > 0.1
    finally:
        cam.close()
        arm.close()
        reset_twins()
