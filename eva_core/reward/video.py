"""video_reward: decode a video with the IDM, then score the actions (EVA's reward model)."""

from __future__ import annotations

import torch

from eva_core.embodiment import Embodiment
from eva_core.reward.executability import RewardConfig, RewardResult, executability_reward

VALUE_RANGES = ("0_1", "-1_1")


def to_unit_range(video: torch.Tensor, value_range: str) -> torch.Tensor:
    """Map a float video to [0, 1]: "-1_1" (diffusion decoder output) -> (x + 1) / 2, clamped."""
    if value_range not in VALUE_RANGES:
        raise ValueError(f"value_range must be one of {VALUE_RANGES}, got {value_range!r}")
    video = torch.as_tensor(video)
    if not video.is_floating_point():
        raise ValueError(f"video must be a float tensor in [{value_range.replace('_', ', ')}], got {video.dtype}")
    if value_range == "-1_1":
        video = (video + 1.0) / 2.0
    return video.clamp(0.0, 1.0)


def video_reward(video, idm, value_range: str = "0_1", fps: float = 16.0, *,
                 config: RewardConfig | Embodiment, batch_size: int = 32) -> RewardResult:
    """(T, 3, H, W) or (B, T, 3, H, W) float video -> RewardResult with `.actions` (T|B,T, D).

    `value_range` must say how the video is scaled ("0_1" or "-1_1"); no guessing. The IDM runs
    in float32, so training rewards are reproducible (bf16 moved scores by < 0.03 in
    bench/idm_precision.py).
    """
    v = to_unit_range(video, value_range)
    if v.dim() not in (4, 5):
        raise ValueError(f"video must be (T, 3, H, W) or (B, T, 3, H, W), got {tuple(v.shape)}")
    actions = idm.predict(v, batch_size=batch_size)  # a (B, T) batch goes through as one stream
    res = executability_reward(actions, fps=fps, config=config)
    res.actions = actions
    return res
