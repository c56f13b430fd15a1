"""video_reward: IDM decoding chained with the reward; the value range is an explicit flag."""

import pytest
import torch

from eva_core.idm import IDMConfig, build_idm
from eva_core.embodiment import load_embodiment
from eva_core.reward import RewardConfig, executability_reward, to_unit_range, video_reward

pytestmark = pytest.mark.unit

torch.set_num_threads(1)
CFG = RewardConfig.from_embodiment(load_embodiment())


@pytest.fixture(scope="module")
def idm():
    torch.manual_seed(0)
    m = build_idm(IDMConfig(action_dim=14, variant="tiny"))
    m.set_normalization(torch.zeros(14), torch.full((14,), 0.05))
    return m


def test_video_reward_chains_idm_and_reward(idm):
    video = torch.rand(8, 3, 48, 48)
    res = video_reward(video, idm, value_range="0_1", fps=16.0, config=CFG)
    actions = idm.predict(video)
    assert res.actions.shape == (8, 14)
    assert torch.allclose(res.actions, actions)
    assert torch.allclose(res.score, executability_reward(actions, fps=16.0, config=CFG).score.to(res.score.dtype))
    assert set(res.components) == {"jerk", "acceleration", "velocity_limit", "acceleration_limit"}


def test_minus_one_one_flag_maps_before_the_idm(idm):
    video = torch.rand(6, 3, 40, 40)
    a = video_reward(video, idm, value_range="0_1", config=CFG)
    b = video_reward(video * 2 - 1, idm, value_range="-1_1", config=CFG)
    assert torch.allclose(a.actions, b.actions, atol=1e-5)
    wrong = video_reward(video * 2 - 1, idm, value_range="0_1", config=CFG)  # a wrong flag gives other actions
    assert not torch.allclose(a.actions, wrong.actions, atol=1e-3)
    with pytest.raises(ValueError, match="value_range"):
        video_reward(video, idm, value_range="auto", config=CFG)
    with pytest.raises(ValueError, match="float"):
        to_unit_range((video * 255).to(torch.uint8), "0_1")


def test_batched_videos_equal_one_by_one(idm):
    videos = torch.rand(3, 5, 3, 32, 32)
    res = video_reward(videos, idm, value_range="0_1", config=CFG)
    assert res.score.shape == (3,) and res.actions.shape == (3, 5, 14)
    for i in range(3):
        one = video_reward(videos[i], idm, value_range="0_1", config=CFG)
        assert torch.allclose(res.score[i], one.score, atol=1e-5)
    short = video_reward(torch.rand(3, 3, 32, 32), idm, config=CFG)  # T < 4 -> 0
    assert float(short.score) == 0.0
