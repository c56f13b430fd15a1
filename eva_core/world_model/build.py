"""Build the world model a config names, through the kind registry (eva_core.world_model.registry).

Kept apart from the registry so that the config (which checks `kind` against the registry) and the
registry never import each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eva_core.world_model import registry
from eva_core.world_model.config import WorldModelConfig
from eva_core.world_model.registry import VideoModel


def _wan(cfg, embodiment=None):
    from eva_core.world_model.model import WorldModel

    return WorldModel.from_config(cfg, embodiment=embodiment)


def build_world_model(cfg: Mapping[str, Any] | Any, embodiment=None) -> VideoModel:
    """The model `cfg.kind` names (a WorldModelConfig or its mapping); `embodiment` gives best-of-N's
    reward limits. Checks the result against `VideoModel`."""
    cfg = WorldModelConfig.from_dict(cfg)
    entry = registry.entry(cfg.kind)   # validate() checked the name
    model = (entry.builder or _wan)(cfg, embodiment)
    if not isinstance(model, VideoModel):
        raise TypeError(f"world-model kind {cfg.kind!r}: the builder returned {type(model).__name__}, "
                        "which lacks generate/fps/num_frames/height/width")
    if cfg.best_of > 1 and not entry.own_best_of:
        from eva_core.world_model.best_of import BestOf

        model = BestOf(model, cfg.best_of, reward_idm=cfg.reward_idm, embodiment=embodiment, seed=cfg.seed)
    return model
