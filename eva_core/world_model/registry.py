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
    builder: Builder | None   # None: the built-in Wan WorldModel
    own_best_of: bool = False   # the model reads cfg.best_of itself (no BestOf wrapper)


# the Wan kinds: builder None = eva_core.world_model.model.WorldModel (resolved in build.py, so
# that this table imports nothing of the world model and the config can check names against it)
_KINDS: dict[str, Kind] = {name: Kind(None, own_best_of=True) for name in ("tiny", "diffusers", "lightning")}


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


def entry(kind: str) -> Kind:
    """The registered `kind` (KeyError naming the known kinds)."""
    if kind not in _KINDS:
        raise KeyError(f"world-model kind {kind!r} is not registered; known: {', '.join(_KINDS)}")
    return _KINDS[kind]
