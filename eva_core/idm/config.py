"""IDMConfig: which network, at which resolution, with which frame window.

Variants (all: conv backbone -> spatial softmax (learnable temperature) -> MLP):
- ``resnet_plus``: EVA's released IDM (Vidar "Resnet_plus"): ResNet-50, 9-channel conv1, 512x512.
  Its state-dict keys match ``IDM_singleview.pt`` exactly (EVA's released IDM).
- ``resnet18``: the light default for a robot PC: ResNet-18 at 224x224, same head layout, late fusion.
- ``tiny``: a four-layer conv stack at 64x64 for CPU tests and the closed-loop demo.

Fusion (how the k frames of a window meet):
- ``early`` (EVA): the frames are stacked on channels into conv1 (3k channels).
- ``late``: one shared encoder (3-channel conv1 -> spatial softmax) per frame; the k keypoint
  vectors are concatenated into the MLP. A video's frames are then encoded once each, not k
  times, which is what makes batched decoding cheap on a CPU (docs/idm_and_reward.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from eva_core.config import Section, param

VARIANTS = ("resnet_plus", "resnet18", "tiny")
FUSIONS = ("early", "late")
PRECISIONS = ("float32", "bfloat16", "auto")  # auto: bfloat16 where the device has native bf16 (model.resolve_precision)

# Per-variant defaults: input size, MLP hidden widths, fusion.
_DEFAULTS = {
    "resnet_plus": dict(image_size=512, hidden=(1024, 512), fusion="early"),
    "resnet18": dict(image_size=224, hidden=(1024, 512), fusion="late"),
    "tiny": dict(image_size=64, hidden=(128, 64), fusion="early"),
}


@dataclass
class IDMConfig(Section):
    """The network (saved as a checkpoint's config.json "config"); None fields take the variant's default."""

    variant: str = param("resnet18", "backbone", choices=VARIANTS)
    image_size: int | None = param(None, "square input side; empty: the variant's default", unit="px", ge=32)
    frame_offsets: tuple[int, ...] = param((-1, 0, 1), "window around t, clamped at the ends (EVA)")
    action_dim: int | None = param(None, "the embodiment's action_dim (IDMConfig.for_embodiment); required", ge=1)
    hidden: tuple[int, ...] | None = param(None, "the two MLP widths; empty: the variant's default")
    fusion: str | None = param(None, "early | late; empty: the variant's default", choices=FUSIONS)
    dropout: float = param(0.1, "MLP dropout", ge=0, lt=1)
    tiny_channels: tuple[int, ...] = param((16, 32, 64, 64), "conv widths of variant tiny")
    backbone_weights: str | None = param(None, "optional local torchvision ResNet .pth (never downloaded)")
    extra: dict = param({}, "free-form notes (e.g. training data), kept in config.json")

    def validate(self) -> None:
        if self.action_dim is None:
            self.error("action_dim", "must be a positive int (the embodiment's action_dim), got None")
        for key, value in _DEFAULTS[self.variant].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if len(self.hidden) != 2:
            self.error("hidden", f"must have 2 widths (EVA head layout), got {self.hidden}")
        if not self.frame_offsets:
            self.error("frame_offsets", "needs at least one offset")

    @classmethod
    def for_embodiment(cls, embodiment, **kw) -> "IDMConfig":
        """A config whose output is the embodiment's action vector."""
        return cls(action_dim=embodiment.action_dim, **kw)

    @property
    def num_frames(self) -> int:
        return len(self.frame_offsets)

    def to_dict(self) -> dict:
        d = super().to_dict()
        for k in ("frame_offsets", "hidden", "tiny_channels"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping | None = None, *, source: str = "<dict>", section: str = "") -> "IDMConfig":
        """Strict: an unknown key is a ConfigError. Files written before `fusion` existed all held
        early-fusion models."""
        if isinstance(d, Mapping):
            d = {"fusion": "early", **d}
        return super().from_dict(d, source=source, section=section)
