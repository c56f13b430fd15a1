"""World-model kinds: `kind` name -> builder, and the `VideoModel` protocol the planner needs.

    register("my_model", build_my_model)      # build_my_model(cfg: WorldModelConfig, embodiment) -> VideoModel
    wm = build_world_model({"kind": "my_model", "num_frames": 9})

A new backend registers one entry; the planner node builds whatever `world_model.kind` names.
Best-of-N (`best_of` > 1) wraps any kind's model (best_of.BestOf) unless its registration says the
model does it itself (the Wan kinds: WorldModel.generate). Torch-free until a builder runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VideoModel(Protocol):
    """What the planner calls: image + instruction (+ history) -> (num_frames, height, width, 3) uint8 at fps."""

    @property
    def fps(self) -> float: ...

    @property
    def num_frames(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def width(self) -> int: ...

    def generate(self, image: np.ndarray, instruction: str, history: Sequence[np.ndarray] | None = None,
                 seed: int | None = None) -> np.ndarray: ...


Builder = Callable[[Any, Any], VideoModel]   # (WorldModelConfig, embodiment or None) -> VideoModel


@dataclass(frozen=True)
class Kind:
    builder: Builder
    own_best_of: bool = False   # the model reads cfg.best_of itself (no BestOf wrapper)


def _wan(cfg, embodiment=None):
    from eva_core.world_model.model import WorldModel

    return WorldModel.from_config(cfg, embodiment=embodiment)


_KINDS: dict[str, Kind] = {name: Kind(_wan, own_best_of=True) for name in ("tiny", "diffusers", "lightning")}


def register(kind: str, builder: Builder, *, own_best_of: bool = False, replace: bool = False) -> None:
    """Make `kind` buildable; an existing name is refused unless `replace`."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"world-model kind must be a non-empty str, got {kind!r}")
    if kind in _KINDS and not replace:
        raise ValueError(f"world-model kind {kind!r} is already registered")
    _KINDS[kind] = Kind(builder, own_best_of)


def unregister(kind: str) -> None:
    _KINDS.pop(kind, None)


def kinds() -> tuple[str, ...]:
    return tuple(_KINDS)


def build_world_model(cfg: Mapping[str, Any] | Any, embodiment=None) -> VideoModel:
    """The model `cfg.kind` names (a WorldModelConfig or its mapping); `embodiment` gives best-of-N's
    reward limits. Checks the result against `VideoModel`."""
    from eva_core.world_model.config import WorldModelConfig

    cfg = WorldModelConfig.from_dict(cfg)
    entry = _KINDS[cfg.kind]   # validate() checked the name
    model = entry.builder(cfg, embodiment)
    if not isinstance(model, VideoModel):
        raise TypeError(f"world-model kind {cfg.kind!r}: the builder returned {type(model).__name__}, "
                        "which lacks generate/fps/num_frames/height/width")
    if cfg.best_of > 1 and not entry.own_best_of:
        from eva_core.world_model.best_of import BestOf

        model = BestOf(model, cfg.best_of, reward_idm=cfg.reward_idm, embodiment=embodiment, seed=cfg.seed)
    return model
