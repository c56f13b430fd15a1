"""The synthetic dataset: frames are a deterministic function of the joint angles."""

import numpy as np
import pytest

from eva_core.data import make_synthetic_dataset, read_episode, render_frame, synthetic_episode
from eva_core.embodiment import load_embodiment

pytestmark = pytest.mark.unit

EMB = load_embodiment()
MID = (EMB.pos_lower + EMB.pos_upper) / 2


def test_render_is_a_function_of_the_action():
    a = MID.copy()
    assert np.array_equal(render_frame(a, EMB), render_frame(a.copy(), EMB))
    for d in range(14):  # every one of the 14 values changes the picture
        b = a.copy()
        b[d] += 0.4 if not EMB.is_gripper[d] else -0.4
        assert np.abs(render_frame(b, EMB).astype(int) - render_frame(a, EMB)).sum() > 0, EMB.joint_names[d]


def test_horizontal_flip_equals_swapping_the_arms():
    rng = np.random.default_rng(0)
    a = MID + rng.uniform(-0.4, 0.4, 14)
    a[[6, 13]] = [0.2, 0.9]
    swapped = a[EMB.mirror_permutation]
    np.testing.assert_array_equal(swapped, np.concatenate([a[7:], a[:7]]))
    diff = np.abs(render_frame(a, EMB, size=64)[:, ::-1].astype(int) - render_frame(swapped, EMB, size=64)).mean()
    other = np.abs(render_frame(a, EMB, size=64).astype(int) - render_frame(swapped, EMB, size=64)).mean()
    assert diff < 0.1 * other


def test_episodes_are_smooth_within_limits_and_reproducible(tmp_path):
    ep = synthetic_episode(EMB, n_frames=40, size=48, fps=16.0, seed=3)
    assert ep.frames.shape == (40, 48, 48, 3) and ep.action.shape == (40, 14)
    assert np.all(ep.action >= EMB.pos_lower - 1e-9) and np.all(ep.action <= EMB.pos_upper + 1e-9)
    assert np.all(np.abs(np.diff(ep.action, axis=0)) * 16.0 <= EMB.vel_max + 1e-9)
    assert np.array_equal(synthetic_episode(EMB, 40, 48, 16.0, seed=3).frames, ep.frames)
    assert np.array_equal(ep.frames[7], render_frame(ep.action[7], EMB, size=48))
    paths = make_synthetic_dataset(tmp_path, episodes=2, frames=8, size=32, progress=False, embodiment=EMB)
    back = read_episode(paths[1])
    assert len(back) == 8 and back.fps == 16.0
    assert np.array_equal(back.frames[3], render_frame(back.action[3], EMB, size=32))
