"""Rejection sampling (best-of-N) and the reward scorer it shares with Flow-GRPO.

EVA's executability reward, computed through a frozen IDM on the decoded video (FACTS: videos
map from [-1, 1] to [0, 1] before the IDM). `RewardScorer` scores a whole batch of clips in one
IDM call (`video_reward` takes (B, T, 3, H, W)); best-of-N keeps the highest-scoring candidate.
It is the baseline EVA argues against: N times the generation cost for one chunk.
"""

from __future__ import annotations

import numpy as np
import torch

from eva_core.reward import RewardConfig, video_reward

RANDOM_TINY = "random_tiny"  # an untrained tiny IDM (tests only)


class RewardScorer:
    def __init__(self, idm, reward_config: RewardConfig | None = None, fps: float = 16.0, batch_size: int = 64):
        self.idm, self.config, self.fps, self.batch_size = idm.eval(), reward_config, float(fps), batch_size

    def score_video(self, video: torch.Tensor):
        """(B, T, 3, H, W) float in [-1, 1] -> RewardResult (score (B,), actions (B, T, D))."""
        return video_reward(video.float().cpu(), self.idm, value_range="-1_1", fps=self.fps, config=self.config,
                            batch_size=self.batch_size)

    def score_frames(self, frames) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 -> (B,) scores."""
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(frames))).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
        return self.score_video(x).score


def load_scorer(idm_path: str, embodiment=None, fps: float = 16.0) -> RewardScorer:
    """IDM from a checkpoint directory / EVA .pt (or RANDOM_TINY) + the embodiment's reward limits."""
    from eva_core.idm import IDMConfig, build_idm, load_idm

    if idm_path == RANDOM_TINY:
        torch.manual_seed(0)
        idm = build_idm(IDMConfig(variant="tiny", action_dim=_dof(embodiment)))
    else:
        idm = load_idm(idm_path)
    if embodiment is None or isinstance(embodiment, str):
        from eva_core.embodiment import DEFAULT_EMBODIMENT, load_embodiment

        embodiment = load_embodiment(embodiment or DEFAULT_EMBODIMENT)
    return RewardScorer(idm, RewardConfig.from_embodiment(embodiment), fps=fps)


def _dof(embodiment) -> int:
    from eva_core.embodiment import DEFAULT_EMBODIMENT, load_embodiment

    if embodiment is None or isinstance(embodiment, str):
        embodiment = load_embodiment(embodiment or DEFAULT_EMBODIMENT)
    return int(embodiment.dof)


def pick_best(scores: torch.Tensor) -> int:
    """Index of the highest finite score (the first on ties)."""
    s = torch.nan_to_num(torch.as_tensor(scores, dtype=torch.float64), nan=-np.inf)
    return int(torch.argmax(s))
