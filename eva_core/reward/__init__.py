"""Executability reward (EVA's released code) and its video wrapper and plots.

    from eva_core.reward import executability_reward, RewardConfig, video_reward
    res = executability_reward(actions, fps=16.0, config=RewardConfig.from_embodiment(emb))  # (T, D) | (B, T, D)
    res.score, res.components
"""

from eva_core.reward.executability import (
    RewardConfig,
    RewardResult,
    executability_reward,
    huber,
)
from eva_core.reward.video import to_unit_range, video_reward


def __getattr__(name):
    # matplotlib costs ~0.3 s of import (holding the GIL): load the plot helper only when used
    if name == "plot_action_curves":
        from eva_core.reward.plots import plot_action_curves

        return plot_action_curves
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "RewardConfig", "RewardResult", "executability_reward", "huber",
    "plot_action_curves", "to_unit_range", "video_reward",
]
