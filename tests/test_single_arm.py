"""A second embodiment with another number of DOF (one Piper arm, 7-D, tests/fixtures/single_piper)
runs through the reward, the synthetic data and the IDM (build, predict, one training step, the
flip) with no code change. The control loop and the twin have their own single-arm tests."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eva_core.data import make_synthetic_dataset, read_episode, render_frame, synthetic_episode
from eva_core.embodiment import load_embodiment
from eva_core.idm import IDMConfig, build_idm, load_idm
from eva_core.reward import RewardConfig, executability_reward
from training.train_idm import augment, run

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent / "fixtures" / "single_piper" / "single_piper.yaml"
EMB = load_embodiment(FIXTURE)
MID = (EMB.pos_lower + EMB.pos_upper) / 2


def test_fixture_layout():
    assert EMB.action_dim == 7 and EMB.gripper_dims == (6,) and len(EMB.arms) == 1
    np.testing.assert_array_equal(EMB.mirror_permutation, np.arange(7))


def test_reward_scores_7d_actions_with_the_fixture_limits():
    cfg = RewardConfig.from_embodiment(EMB)
    assert cfg.dof == 7
    still = np.tile(MID, (16, 1))
    assert float(executability_reward(still, config=cfg).score) == pytest.approx(10.0)
    fast = still.copy()
    fast[:, 0] += np.arange(16) / 16.0 * (EMB.vel_max[0] + 1.0)  # over the joint-1 speed limit
    assert float(executability_reward(fast, config=EMB).score) < 10.0
    with pytest.raises(ValueError, match=r"\(T, 7\)"):
        executability_reward(np.zeros((16, 14)), config=cfg)


def test_synthetic_data_is_7d_within_limits(tmp_path):
    ep = synthetic_episode(EMB, n_frames=12, size=48, seed=1)
    assert ep.action.shape == (12, 7) and ep.frames.shape == (12, 48, 48, 3)
    assert not EMB.limit_violations(ep.action[5])
    assert all(not EMB.limit_violations(a) for a in ep.action)
    for d in range(7):  # every dim changes the picture
        b = MID.copy()
        b[d] += -0.4 if EMB.is_gripper[d] else 0.4
        assert np.abs(render_frame(b, EMB).astype(int) - render_frame(MID, EMB)).sum() > 0, EMB.joint_names[d]
    paths = make_synthetic_dataset(tmp_path, episodes=1, frames=5, size=32, progress=False, embodiment=EMB)
    assert read_episode(paths[0]).action.shape == (5, 7)
    with pytest.raises(ValueError, match="7 dims"):
        render_frame(np.zeros(14), EMB)


def test_idm_builds_predicts_and_flips_in_7d():
    idm = build_idm(IDMConfig.for_embodiment(EMB, variant="tiny"))
    assert idm.predict(torch.rand(4, 3, 64, 64)).shape == (4, 7)
    a = torch.arange(14, dtype=torch.float32).reshape(2, 7)
    x = torch.rand(2, 3, 3, 8, 8)
    xf, af = augment(x, a, 0.0, 1.0, torch.Generator().manual_seed(0), EMB.mirror_permutation)
    assert torch.equal(xf, x.flip(-1)) and torch.equal(af, a)  # one arm: the image mirrors, the action stays


def test_train_idm_one_step_on_the_single_arm(tmp_path):
    out = tmp_path / "run"
    m = run(["--embodiment", str(FIXTURE), "--synthetic", "3", "--synthetic-frames", "6", "--synthetic-size", "64",
             "--variant", "tiny", "--max-steps", "1", "--flip", "1.0", "--threads", "1", "--no-progress",
             "--out", str(out)])
    assert set(m["per_joint_mae"]) == set(EMB.joint_names)
    idm = load_idm(out / "idm")
    assert idm.config.action_dim == 7 and idm.action_mean.shape == (7,)
    assert json.loads((out / "eval.json").read_text())["embodiment"] == "single_piper"


def test_a_14d_checkpoint_is_refused_for_the_7d_robot(tmp_path, capsys):
    from eva_core.idm import save_idm
    from training.train_idm import main

    ckpt = save_idm(build_idm(IDMConfig(action_dim=14, variant="tiny")), tmp_path / "idm14")
    rc = main(["--embodiment", str(FIXTURE), "--synthetic", "2", "--synthetic-frames", "4", "--init", str(ckpt),
               "--max-steps", "1", "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "the IDM outputs 14 dims, embodiment 'single_piper' has 7" in err


def test_planner_best_of_scores_with_the_nodes_embodiment():
    """The planner passes its `embodiment` to the world model: best-of-N decodes 7-D actions with
    the fixture's limits, not the default 14-D ones."""
    from eva_ros.nodes.planner_node import build_world_model

    wm = build_world_model({"kind": "tiny", "num_frames": 9, "height": 32, "width": 32, "best_of": 2,
                            "reward_idm": "random_tiny"}, embodiment=EMB)
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    wm.generate(img, "wave", seed=3)
    assert len(wm.last_info["best_of"]["scores"]) == 2
    assert wm.scorer.config.dof == 7
    frames = np.stack([wm.generate(img, "wave", seed=3, best_of=1)])
    assert wm.scorer.score_video(torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 127.5 - 1).actions.shape[-1] == 7
