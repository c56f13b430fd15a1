"""Rejection sampling (best-of-N) and the reward scorer it shares with Flow-GRPO.

EVA's executability reward, computed through a frozen IDM on the decoded video (FACTS: videos
map from [-1, 1] to [0, 1] before the IDM). `RewardScorer` scores a whole batch of clips in one
IDM call (`video_reward` takes (B, T, 3, H, W)); best-of-N keeps the highest-scoring candidate.
It is the baseline EVA argues against: N times the generation cost for one chunk.
`best_of_n` is the loop; `BestOf` wraps any registry.VideoModel with it (WorldModel calls it itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable

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


def best_of_n(generate_one: Callable[[int], np.ndarray], scorer: RewardScorer, n: int,
              seed: int | None) -> tuple[np.ndarray, dict, dict]:
    """Draw `n` chunks with seeds seed, seed+1, ... (`generate_one(seed)`, None: a random base) and
    keep the best. Returns (chunk, info {"seed", "best_of": {n, scores, chosen}}, timing)."""
    base = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
    t0 = time.perf_counter()
    chunks = [generate_one(base + i) for i in range(n)]
    t1 = time.perf_counter()
    scores = scorer.score_frames(np.stack(chunks))
    best = pick_best(scores)
    timing = {"candidates": t1 - t0, "score": time.perf_counter() - t1, "total": time.perf_counter() - t0}
    info = {"seed": base + best, "best_of": {"n": n, "scores": [float(s) for s in scores], "chosen": best}}
    return chunks[best], info, timing


class BestOf:
    """Best-of-N around any VideoModel: each `generate` draws `n` chunks and keeps the one the IDM
    at `reward_idm` scores highest. `last_info` / `last_timing` as WorldModel's."""

    def __init__(self, model, n: int, *, reward_idm: str | None, embodiment=None, seed: int | None = None,
                 scorer: RewardScorer | None = None):
        if n < 1:
            raise ValueError(f"best_of must be >= 1, got {n}")
        if scorer is None and not reward_idm:
            raise ValueError("world model: best-of-N needs 'reward_idm' in its config")
        self.model, self.n, self.seed = model, int(n), seed
        self._scorer, self._reward_idm, self._embodiment = scorer, reward_idm, embodiment
        self.last_info: dict = {}
        self.last_timing: dict = {}

    fps = property(lambda self: self.model.fps)
    num_frames = property(lambda self: self.model.num_frames)
    height = property(lambda self: self.model.height)
    width = property(lambda self: self.model.width)

    @property
    def scorer(self) -> RewardScorer:
        if self._scorer is None:
            self._scorer = load_scorer(self._reward_idm, self._embodiment, fps=self.fps)
        return self._scorer

    def generate(self, image, instruction, history=None, seed=None, **kwargs) -> np.ndarray:
        scorer = self.scorer
        chunk, info, timing = best_of_n(
            lambda s: self.model.generate(image, instruction, history=history, seed=s, **kwargs),
            scorer, self.n, self.seed if seed is None else seed)
        self.last_info = {**getattr(self.model, "last_info", {}), **info}
        self.last_timing = {**getattr(self.model, "last_timing", {}), **timing}
        return chunk


def pick_best(scores: torch.Tensor) -> int:
    """Index of the highest finite score (the first on ties)."""
    s = torch.nan_to_num(torch.as_tensor(scores, dtype=torch.float64), nan=-np.inf)
    return int(torch.argmax(s))
